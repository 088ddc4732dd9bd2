//! `decoder.onnx`: the DALLE-pytorch transformer as one KV-cache step graph.
//!
//! ```text
//! input_ids [B,S] ─ embed: text_emb / image_emb by id range (+ learned positions unless rotary)
//!   (stable: x·0.1 + x·0.9, as the reference's detach trick computes it)
//!   ─ layers 0..depth (see layers.rs; each with its own past/present key/value, and shift-token
//!     state per branch when shift_tokens, see shift.rs)
//!   ─ reversible: mean of the two streams ─ stable: x / max(x)
//!   ─ to_logits, one of two outputs (`LogitsOutput`):
//!     full:       LayerNorm → Linear ─ Where(logits mask, −f32::MAX) → logits [B,S,V]
//!     last-image: last position only → LayerNorm → Linear on the image rows → image_logits [B,I]
//! ```
//!
//! `last-image` is what generation needs (it only ever samples the next image token): it skips
//! the text rows of the output projection (85% of it for a CLIP-BPE vocabulary) and every
//! position but the last, so a prefill no longer materializes `[B, S, V]` logits. Its rows are
//! exactly the full graph's last-position image logits (the logits mask never masks image ids
//! at image-predicting positions, so no mask is needed).
//!
//! Positions of the new tokens come from the past length (`positions.rs`), so one graph serves
//! the prefill (zero-length past) and every decode step, with no `If`/`Loop`.
//!
//! The key/value caches take one of two forms (`KvCacheLayout`):
//! - `concat` (default, standard ONNX only): `past_key_values.*` `[B, H, P, dh]` grow by
//!   concatenation; the past length is their length, one for the whole batch. Every step copies
//!   the whole cache into a new `present`. Shift tokens keep their whole history
//!   (`past_shift.*` `[B, P, dim]`).
//! - `in-place`: `past_key_values.*` `[B, H, capacity, dh]` with `capacity` = the model's
//!   sequence length, written in place by `com.microsoft.GroupQueryAttention` when the caller
//!   binds the same buffer as past and present; the past length is the extra input
//!   `cache_length` `[B]`, **one per row**, so a server can batch rows of different requests
//!   sitting at different positions (every row gets the same number S of new tokens). Positions,
//!   rotary tables, sparse masks (GQA's `attention_bias` `[B, 1, S, max(cache_length) + S]`) and
//!   the logits mask are per row. Shift tokens keep a fixed rolling window per branch
//!   (`past_shift.*` `[B, fmap, dim]`, manifest attribute `shift_window`), replaced every call.
//!   GQA's CPU kernel takes S > 1 new tokens after a non-empty past only at batch 1 (prefill
//!   with every length 0).

use super::config::DalleConfig;
use super::layers::{
    self, AttentionWeights, BranchWeights, FeedForwardWeights, GqaLengths, KvCache, Norm,
};
use super::names::{self, Branch};
use super::positions::{self, Positions};
use super::rotary::{self, RotaryTables};
use super::shift;
use crate::dims;
use crate::error::{ExportError, Result};
use crate::graph::ops::{
    Add, Concat, Div, Gather, GreaterOrEqual, Mul, ReduceMax, Reshape, Slice, Squeeze, Sub,
    Unsqueeze, Where,
};
use crate::graph::{GraphBuilder, Value};
use crate::tensor::TensorData;
use crate::weights::Weights;
use dalle_bundle::DType;
use dalle_bundle::io::decoder::{self as io, KvKind};
use dalle_bundle::io::dims as d;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Takes tensors and turns them into initializers; tensors of shared modules appear under
/// several names with equal contents: the first becomes the initializer, the others are checked
/// equal and dropped.
struct Loader<'a> {
    w: &'a mut Weights,
}

impl Loader<'_> {
    fn take(&mut self, g: &mut GraphBuilder, name: &str, shape: &[usize]) -> Result<Value> {
        let t = self.w.take_f32(name, shape)?;
        g.initializer(name, t)
    }

    fn digest(&mut self, name: &str, shape: &[usize]) -> Result<Vec<u8>> {
        let t = self.w.take_f32(name, shape)?;
        Ok(Sha256::digest(t.bytes()?).to_vec())
    }
}

/// Initializers of modules that several layers may share (`shared_attn_ids`/`shared_ff_ids`),
/// with the digests of the first copy for checking the others.
#[derive(Default)]
struct SharedModules {
    by_id: HashMap<i64, (Vec<Value>, Vec<Vec<u8>>)>,
}

impl SharedModules {
    /// The initializers for module `id`: created from `specs` the first time; on later layers
    /// the tensors are taken, checked equal to the first copy, and the first copy is returned.
    fn get(
        &mut self,
        g: &mut GraphBuilder,
        l: &mut Loader,
        what: &str,
        id: i64,
        specs: &[(String, Vec<usize>)],
    ) -> Result<Vec<Value>> {
        if let Some((values, digests)) = self.by_id.get(&id) {
            for ((name, shape), want) in specs.iter().zip(digests) {
                if &l.digest(name, shape)? != want {
                    return Err(ExportError::Weights(format!(
                        "`{name}` belongs to shared {what} {id} but differs from the first layer's copy"
                    )));
                }
            }
            return Ok(values.clone());
        }
        let mut digests = Vec::with_capacity(specs.len());
        let mut values = Vec::with_capacity(specs.len());
        for (name, shape) in specs {
            let t = l.w.take_f32(name, shape)?;
            digests.push(Sha256::digest(t.bytes()?).to_vec());
            values.push(g.initializer(name, t)?);
        }
        self.by_id.insert(id, (values.clone(), digests));
        Ok(values)
    }
}

fn attention_weights(
    g: &mut GraphBuilder,
    l: &mut Loader,
    cfg: &DalleConfig,
    prefix: &str,
    shared: &mut SharedModules,
    id: i64,
) -> Result<AttentionWeights> {
    let (dim, inner) = (cfg.dim, cfg.inner_dim());
    let specs = [
        (
            names::find_one(
                l.w,
                prefix,
                Branch::Attention,
                cfg.shift_tokens,
                names::TO_QKV,
            )?,
            vec![3 * inner, dim],
        ),
        (
            names::find_one(
                l.w,
                prefix,
                Branch::Attention,
                cfg.shift_tokens,
                names::TO_OUT_WEIGHT,
            )?,
            vec![dim, inner],
        ),
        (
            names::find_one(
                l.w,
                prefix,
                Branch::Attention,
                cfg.shift_tokens,
                names::TO_OUT_BIAS,
            )?,
            vec![dim],
        ),
    ];
    match shared.get(g, l, "attention", id, &specs)?.as_slice() {
        [to_qkv, to_out_w, to_out_b] => Ok(AttentionWeights {
            to_qkv: *to_qkv,
            to_out_w: *to_out_w,
            to_out_b: *to_out_b,
        }),
        _ => Err(ExportError::node("attention", "expected three tensors")),
    }
}

fn ff_weights(
    g: &mut GraphBuilder,
    l: &mut Loader,
    cfg: &DalleConfig,
    prefix: &str,
    shared: &mut SharedModules,
    id: i64,
) -> Result<FeedForwardWeights> {
    let dim = cfg.dim;
    let specs = [
        (
            names::find_one(
                l.w,
                prefix,
                Branch::FeedForward,
                cfg.shift_tokens,
                names::FF_IN_WEIGHT,
            )?,
            vec![dim * 8, dim],
        ),
        (
            names::find_one(
                l.w,
                prefix,
                Branch::FeedForward,
                cfg.shift_tokens,
                names::FF_IN_BIAS,
            )?,
            vec![dim * 8],
        ),
        (
            names::find_one(
                l.w,
                prefix,
                Branch::FeedForward,
                cfg.shift_tokens,
                names::FF_OUT_WEIGHT,
            )?,
            vec![dim, dim * 4],
        ),
        (
            names::find_one(
                l.w,
                prefix,
                Branch::FeedForward,
                cfg.shift_tokens,
                names::FF_OUT_BIAS,
            )?,
            vec![dim],
        ),
    ];
    match shared.get(g, l, "feed-forward", id, &specs)?.as_slice() {
        [w1, b1, w2, b2] => Ok(FeedForwardWeights {
            w1: *w1,
            b1: *b1,
            w2: *w2,
            b2: *b2,
        }),
        _ => Err(ExportError::node("feed_forward", "expected four tensors")),
    }
}

fn branch_weights(
    g: &mut GraphBuilder,
    l: &mut Loader,
    cfg: &DalleConfig,
    prefix: &str,
) -> Result<BranchWeights> {
    let dim = cfg.dim;
    let scale = l.take(g, &names::scale(prefix), &[1, 1, dim])?;
    let norm = Norm {
        weight: l.take(g, &names::norm(prefix, "weight"), &[dim])?,
        bias: l.take(g, &names::norm(prefix, "bias"), &[dim])?,
    };
    let norm_out = if cfg.sandwich_norm {
        Some(Norm {
            weight: l.take(g, &names::norm_out(prefix, "weight"), &[dim])?,
            bias: l.take(g, &names::norm_out(prefix, "bias"), &[dim])?,
        })
    } else {
        None
    };
    Ok(BranchWeights {
        scale,
        norm,
        norm_out,
    })
}

/// Graph inputs of one layer's state.
struct LayerState {
    past_k: Value,
    past_v: Value,
    shift: Option<(Value, Value)>,
}

/// Which logits the decoder graph outputs (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogitsOutput {
    /// `logits` `[batch, sequence, total_vocab]`, masked like the reference: for parity checks
    /// and for callers that need text logits or every position.
    Full,
    /// `image_logits` `[batch, image_vocab]` of the last position: for generation.
    #[default]
    LastImage,
}

pub use crate::kv_cache::KvCacheLayout;

/// Export options of the decoder graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecoderOptions {
    pub logits: LogitsOutput,
    pub kv_cache: KvCacheLayout,
}

/// Builds the decoder graph, taking the transformer's tensors from `w` (VAE tensors must have
/// been split off already).
pub fn build(cfg: &DalleConfig, w: &mut Weights, opts: DecoderOptions) -> Result<GraphBuilder> {
    let mut g = GraphBuilder::new("decoder");
    let (dim, h, dh) = (cfg.dim, cfg.heads, cfg.dim_head);
    let ids = g.input(io::INPUT_IDS, DType::I64, dims![d::BATCH, d::SEQUENCE])?;
    let in_place = opts.kv_cache == KvCacheLayout::InPlace;
    if in_place && !dh.is_multiple_of(8) {
        return Err(ExportError::Unsupported(format!(
            "--kv-cache in-place needs dim_head to be a multiple of 8 (ONNX Runtime's \
             GroupQueryAttention kernel); this checkpoint has dim_head {dh}: use --kv-cache concat"
        )));
    }
    let (kv_in, kv_out) = if in_place {
        let fixed = dims![d::BATCH, h, cfg.seq_len(), dh];
        (fixed.clone(), fixed)
    } else {
        (
            dims![d::BATCH, h, d::PAST_SEQUENCE, dh],
            dims![d::BATCH, h, d::TOTAL_SEQUENCE, dh],
        )
    };
    let mut states = Vec::with_capacity(cfg.depth);
    for i in 0..cfg.depth {
        let past_k = g.input(&io::past_name(i, KvKind::Key), DType::F32, kv_in.clone())?;
        let past_v = g.input(&io::past_name(i, KvKind::Value), DType::F32, kv_in.clone())?;
        states.push(LayerState {
            past_k,
            past_v,
            shift: None,
        });
    }
    let (shift_in, shift_out) = if in_place {
        let window = dims![d::BATCH, shift::window(cfg), dim];
        (window.clone(), window)
    } else {
        (
            dims![d::BATCH, d::PAST_SEQUENCE, dim],
            dims![d::BATCH, d::TOTAL_SEQUENCE, dim],
        )
    };
    if cfg.shift_tokens {
        for (i, s) in states.iter_mut().enumerate() {
            let hist = shift_in.clone();
            let a = g.input(
                &io::past_shift_name(i, io::Branch::Attention),
                DType::F32,
                hist.clone(),
            )?;
            let f = g.input(
                &io::past_shift_name(i, io::Branch::FeedForward),
                DType::F32,
                hist,
            )?;
            s.shift = Some((a, f));
        }
    }
    let first_past = states
        .first()
        .map(|s| s.past_k)
        .ok_or_else(|| ExportError::Unsupported("depth 0".into()))?;
    let p = if in_place {
        let cache_length = g.input(io::CACHE_LENGTH, DType::I64, dims![d::BATCH])?;
        positions::positions_per_row(&mut g, ids, cache_length)?
    } else {
        let past_len = positions::past_length_of(&mut g, first_past, 2)?;
        positions::positions(&mut g, ids, past_len)?
    };
    let lengths = if in_place {
        Some(gqa_lengths(&mut g, &p)?)
    } else {
        None
    };
    let mut l = Loader { w };
    let rotary = if cfg.rotary_emb {
        let pos_emb =
            l.w.take_f32(names::ROTARY_POS_EMB, &rotary_shape(l.w, cfg)?)?;
        let tables = rotary::tables(&mut g, &pos_emb, dh, p.pos)?;
        Some(if in_place {
            rotary::for_sequence_major(&mut g, tables)?
        } else {
            tables
        })
    } else {
        None
    };

    let x = embed(&mut g, &mut l, cfg, ids, &p)?;
    let out = run_layers(
        &mut g,
        &mut l,
        cfg,
        x,
        &p,
        rotary.as_ref(),
        &states,
        lengths,
    )?;
    match opts.logits {
        LogitsOutput::Full => {
            let logits = to_logits(&mut g, &mut l, cfg, out.x, &p)?;
            g.output_as(
                io::LOGITS,
                logits,
                dims![d::BATCH, d::SEQUENCE, cfg.total_tokens()],
            )?;
        }
        LogitsOutput::LastImage => {
            let logits = to_image_logits_last(&mut g, &mut l, cfg, out.x)?;
            g.output_as(
                io::IMAGE_LOGITS,
                logits,
                dims![d::BATCH, cfg.num_image_tokens],
            )?;
        }
    }
    for (i, (k, v)) in out.kv.iter().enumerate() {
        g.output_as(&io::present_name(i, KvKind::Key), *k, kv_out.clone())?;
        g.output_as(&io::present_name(i, KvKind::Value), *v, kv_out.clone())?;
    }
    for (i, (a, f)) in out.shift.iter().enumerate() {
        let hist = shift_out.clone();
        g.output_as(
            &io::present_shift_name(i, io::Branch::Attention),
            *a,
            hist.clone(),
        )?;
        g.output_as(
            &io::present_shift_name(i, io::Branch::FeedForward),
            *f,
            hist,
        )?;
    }
    Ok(g)
}

fn rotary_shape(w: &Weights, cfg: &DalleConfig) -> Result<Vec<usize>> {
    let shape = w.shape_of(names::ROTARY_POS_EMB).ok_or_else(|| {
        ExportError::Weights(format!(
            "{}: rotary_emb is set but `{}` is missing",
            w.source(),
            names::ROTARY_POS_EMB
        ))
    })?;
    let want_rows = cfg.text_len() + cfg.image_seq_len();
    match shape {
        [1, rows, rot] if *rows == want_rows => Ok(vec![1, *rows, *rot]),
        other => Err(ExportError::Weights(format!(
            "{}: `{}` has shape {other:?}, expected [1, {want_rows}, rot]",
            w.source(),
            names::ROTARY_POS_EMB
        ))),
    }
}

/// `GroupQueryAttention`'s lengths from per-row positions ([`crate::kv_cache::gqa_lengths`]).
fn gqa_lengths(g: &mut GraphBuilder, p: &Positions) -> Result<GqaLengths> {
    let row_total = p.row_total.ok_or_else(|| {
        ExportError::node("kv_lengths", "the in-place cache needs per-row positions")
    })?;
    crate::kv_cache::gqa_lengths(g, row_total, p.total)
}

/// The additive form of a per-row bool attention mask `[B, S, T]` for `GroupQueryAttention`:
/// `[B, 1, S, T]`, 0 where allowed and −f32::MAX where masked.
fn attention_bias(g: &mut GraphBuilder, mask: Value) -> Result<Value> {
    g.scoped("attention_bias", |g| {
        let zero = g.scalar_float(0.0, DType::F32)?;
        let neg = g.scalar_float(-f32::MAX, DType::F32)?;
        let bias = g.node1(Where, &[mask, zero, neg])?;
        let heads = g.const_i64(&[1])?;
        g.node1(Unsqueeze, &[bias, heads])
    })
}

/// Token embeddings (and learned positions when rotary is off).
fn embed(
    g: &mut GraphBuilder,
    l: &mut Loader,
    cfg: &DalleConfig,
    ids: Value,
    p: &Positions,
) -> Result<Value> {
    let dim = cfg.dim;
    let ntext = cfg.num_text_tokens_internal();
    let x = g.scoped("embed", |g| -> Result<Value> {
        if cfg.share_input_output_emb {
            // The embeddings are row ranges of to_logits.1.weight: one lookup by unified id.
            // The state dict repeats them under text_emb.linear / image_emb.linear.
            for n in names::SHARED_TEXT_EMB
                .iter()
                .chain(&names::SHARED_IMAGE_EMB)
            {
                let shape = l.w.shape_of(n).map(<[usize]>::to_vec).unwrap_or_default();
                l.w.take(n, &shape)?;
            }
            let table_name = format!("{}.weight", names::LOGITS_LINEAR);
            let table = l.take(g, &table_name, &[cfg.total_tokens(), dim])?;
            return g.node1(Gather { axis: 0 }, &[table, ids]);
        }
        let text_table = l.take(g, names::TEXT_EMB, &[ntext, dim])?;
        let image_table = l.take(g, names::IMAGE_EMB, &[cfg.num_image_tokens, dim])?;
        let offset = g.scalar_i64(ntext as i64)?;
        let zero = g.scalar_i64(0)?;
        let is_image = g.node1(GreaterOrEqual, &[ids, offset])?;
        let text_ids = g.node1(Where, &[is_image, zero, ids])?;
        let shifted = g.node1(Sub, &[ids, offset])?;
        let image_ids = g.node1(Where, &[is_image, shifted, zero])?;
        let te = g.node1(Gather { axis: 0 }, &[text_table, text_ids])?;
        let ie = g.node1(Gather { axis: 0 }, &[image_table, image_ids])?;
        let last = g.const_i64(&[-1])?;
        let is_image = g.node1(Unsqueeze, &[is_image, last])?;
        g.node1(Where, &[is_image, ie, te])
    })?;
    let x = if cfg.rotary_emb {
        x
    } else {
        g.scoped("positions_embed", |g| {
            let text_pos = l.take(g, names::TEXT_POS_EMB, &[cfg.text_len(), dim])?;
            let rows = l.take(g, names::IMAGE_POS_EMB_ROWS, &[1, cfg.fmap, 1, dim])?;
            let cols = l.take(g, names::IMAGE_POS_EMB_COLS, &[1, 1, cfg.fmap, dim])?;
            // AxialPositionalEmbedding (summed): row r, column c → rows[r] + cols[c].
            let grid = g.node1(Add, &[rows, cols])?;
            let flat = g.const_i64(&[cfg.image_seq_len() as i64, dim as i64])?;
            let image_pos = g.node1(Reshape, &[grid, flat])?;
            let table = g.node1(Concat { axis: 0 }, &[text_pos, image_pos])?;
            let pos = g.node1(Gather { axis: 0 }, &[table, p.pos])?;
            g.node1(Add, &[x, pos])
        })?
    };
    if !cfg.stable {
        return Ok(x);
    }
    g.scoped("stable_mix", |g| {
        let a = g.scalar_float(0.1, DType::F32)?;
        let b = g.scalar_float(0.9, DType::F32)?;
        let xa = g.node1(Mul, &[x, a])?;
        let xb = g.node1(Mul, &[x, b])?;
        g.node1(Add, &[xa, xb])
    })
}

struct LayerOutputs {
    x: Value,
    kv: Vec<(Value, Value)>,
    shift: Vec<(Value, Value)>,
}

#[allow(clippy::too_many_arguments)]
fn run_layers(
    g: &mut GraphBuilder,
    l: &mut Loader,
    cfg: &DalleConfig,
    x: Value,
    p: &Positions,
    rotary: Option<&RotaryTables>,
    states: &[LayerState],
    lengths: Option<GqaLengths>,
) -> Result<LayerOutputs> {
    // The in-place cache keeps a rolling window per branch, the concatenated one the history.
    let shift = if lengths.is_some() {
        shift::shift_tokens_window
    } else {
        shift::shift_tokens
    };
    let mut shared_attn = SharedModules::default();
    let mut shared_ff = SharedModules::default();
    let mut masks: HashMap<super::config::AttnType, Value> = HashMap::new();
    let mut keys = None;
    let (mut x1, mut x2) = (x, x);
    let mut out = LayerOutputs {
        x,
        kv: Vec::new(),
        shift: Vec::new(),
    };
    for (i, state) in states.iter().enumerate() {
        let ty = cfg
            .attn_types
            .get(i)
            .copied()
            .unwrap_or(super::config::AttnType::Full);
        // Concatenated cache: every type's bool mask. In place: GroupQueryAttention is causal
        // itself, so only the sparse types need a mask, as an additive bias.
        let mask = match masks.get(&ty) {
            _ if lengths.is_some() && ty == super::config::AttnType::Full => None,
            Some(m) => Some(*m),
            None => {
                let k = match keys.take() {
                    Some(k) => k,
                    None => positions::keys(g, p)?,
                };
                let m = positions::attention_mask(g, cfg, &k, ty)?;
                keys = Some(k);
                let m = match lengths {
                    Some(_) => attention_bias(g, m)?,
                    None => m,
                };
                masks.insert(ty, m);
                Some(m)
            }
        };
        let cache = match lengths {
            Some(lengths) => KvCache::InPlace {
                past_k: state.past_k,
                past_v: state.past_v,
                lengths,
                bias: mask,
            },
            None => KvCache::Concat {
                past_k: state.past_k,
                past_v: state.past_v,
                mask: mask
                    .ok_or_else(|| ExportError::node("layers", "no attention mask was built"))?,
            },
        };
        let attn_prefix = names::branch_prefix(i, Branch::Attention, cfg.reversible);
        let ff_prefix = names::branch_prefix(i, Branch::FeedForward, cfg.reversible);
        let attn_id = cfg.shared_attn_ids.get(i).copied().unwrap_or(i as i64);
        let ff_id = cfg.shared_ff_ids.get(i).copied().unwrap_or(i as i64);
        let (attn_b, attn_w, ff_b, ff_w) = g.scoped(&format!("layers.{i}"), |g| {
            Ok((
                branch_weights(g, l, cfg, &attn_prefix)?,
                attention_weights(g, l, cfg, &attn_prefix, &mut shared_attn, attn_id)?,
                branch_weights(g, l, cfg, &ff_prefix)?,
                ff_weights(g, l, cfg, &ff_prefix, &mut shared_ff, ff_id)?,
            ))
        })?;
        let mut kv = None;
        let mut hist = (None, None);
        let attn_in = if cfg.reversible { x2 } else { x1 };
        let a = g.scoped(&format!("layers.{i}/attn"), |g| {
            layers::branch(g, attn_b, attn_in, |g, h| {
                let h = match state.shift {
                    Some((past, _)) => {
                        let (h, present) = shift(g, cfg, p, h, past)?;
                        hist.0 = Some(present);
                        h
                    }
                    None => h,
                };
                let (o, k, v) = layers::attention(g, cfg, attn_w, h, cache, rotary)?;
                kv = Some((k, v));
                Ok(o)
            })
        })?;
        let y1 = g.scoped(&format!("layers.{i}/attn_residual"), |g| {
            g.node1(Add, &[x1, a])
        })?;
        let ff_in = y1;
        let f = g.scoped(&format!("layers.{i}/ff"), |g| {
            layers::branch(g, ff_b, ff_in, |g, h| {
                let h = match state.shift {
                    Some((_, past)) => {
                        let (h, present) = shift(g, cfg, p, h, past)?;
                        hist.1 = Some(present);
                        h
                    }
                    None => h,
                };
                layers::feed_forward(g, cfg, ff_w, h)
            })
        })?;
        let base = if cfg.reversible { x2 } else { y1 };
        let y2 = g.scoped(&format!("layers.{i}/ff_residual"), |g| {
            g.node1(Add, &[base, f])
        })?;
        if cfg.reversible {
            (x1, x2) = (y1, y2);
        } else {
            (x1, x2) = (y2, y2);
        }
        let (k, v) =
            kv.ok_or_else(|| ExportError::node("layers", "attention produced no cache"))?;
        out.kv.push((k, v));
        if let (Some(a), Some(f)) = hist {
            out.shift.push((a, f));
        }
    }
    out.x = if cfg.reversible {
        g.scoped("reversible_mean", |g| {
            let sum = g.node1(Add, &[x1, x2])?;
            let two = g.scalar_float(2.0, DType::F32)?;
            g.node1(Div, &[sum, two])
        })?
    } else {
        x1
    };
    Ok(out)
}

fn to_logits(
    g: &mut GraphBuilder,
    l: &mut Loader,
    cfg: &DalleConfig,
    x: Value,
    p: &Positions,
) -> Result<Value> {
    let dim = cfg.dim;
    let x = divide_max(g, cfg, x)?;
    let mask = positions::logits_mask(g, cfg, p)?;
    g.scoped("to_logits", |g| {
        let h = logits_norm(g, l, cfg, x)?;
        let w_name = format!("{}.weight", names::LOGITS_LINEAR);
        let w = if cfg.share_input_output_emb {
            // Already an initializer: the shared embedding table.
            g.value_named(&w_name)?
        } else {
            l.take(g, &w_name, &[cfg.total_tokens(), dim])?
        };
        let b = l.take(
            g,
            &format!("{}.bias", names::LOGITS_LINEAR),
            &[cfg.total_tokens()],
        )?;
        let logits = layers::linear(g, h, w, Some(b))?;
        let neg = g.scalar_float(-f32::MAX, DType::F32)?;
        g.node1(Where, &[mask, neg, logits])
    })
}

/// `to_logits.0`: the LayerNorm before the output projection.
fn logits_norm(g: &mut GraphBuilder, l: &mut Loader, cfg: &DalleConfig, x: Value) -> Result<Value> {
    let dim = cfg.dim;
    let norm = Norm {
        weight: l.take(g, &format!("{}.weight", names::LOGITS_NORM), &[dim])?,
        bias: l.take(g, &format!("{}.bias", names::LOGITS_NORM), &[dim])?,
    };
    layers::layer_norm(g, x, norm)
}

/// `stable`: `x / max(x)` over the model dimension, as the reference's `DivideMax`.
fn divide_max(g: &mut GraphBuilder, cfg: &DalleConfig, x: Value) -> Result<Value> {
    if !cfg.stable {
        return Ok(x);
    }
    g.scoped("divide_max", |g| {
        let axes = g.const_i64(&[-1])?;
        let m = g.node1(ReduceMax { keepdims: true }, &[x, axes])?;
        g.node1(Div, &[x, m])
    })
}

/// Rows `[start, start + count)` (along axis 0) of a row-major tensor.
fn rows_of(t: &TensorData, start: usize, count: usize) -> Result<TensorData> {
    let shape = t.shape();
    let row_bytes = shape.iter().skip(1).product::<usize>() * t.dtype().size();
    let range = start * row_bytes..(start + count) * row_bytes;
    let all = t.bytes()?;
    let (Some(bytes), Some((_, rest))) = (all.get(range), shape.split_first()) else {
        return Err(ExportError::Weights(format!(
            "rows {start}..{} of a {shape:?} tensor",
            start + count
        )));
    };
    let out_shape = std::iter::once(count).chain(rest.iter().copied()).collect();
    TensorData::from_bytes(t.dtype(), out_shape, bytes.to_vec())
}

/// The last position's logits over the image codes: `[B, image_vocab]`. The output projection's
/// image rows become their own initializers (`….image_rows`), so the text rows are not in the
/// graph at all; with `share_input_output_emb` the shared table is sliced in the graph instead.
fn to_image_logits_last(
    g: &mut GraphBuilder,
    l: &mut Loader,
    cfg: &DalleConfig,
    x: Value,
) -> Result<Value> {
    let (dim, total) = (cfg.dim, cfg.total_tokens());
    let (offset, image) = (cfg.num_text_tokens_internal(), cfg.num_image_tokens);
    let x = g.scoped("last_position", |g| {
        let starts = g.const_i64(&[-1])?;
        let ends = g.const_i64(&[i64::MAX])?;
        let axes = g.const_i64(&[1])?;
        let last = g.node1(Slice, &[x, starts, ends, axes])?;
        g.node1(Squeeze, &[last, axes])
    })?;
    let x = divide_max(g, cfg, x)?;
    g.scoped("to_logits", |g| {
        let h = logits_norm(g, l, cfg, x)?;
        let w_name = format!("{}.weight", names::LOGITS_LINEAR);
        let w = if cfg.share_input_output_emb {
            let table = g.value_named(&w_name)?;
            let starts = g.const_i64(&[offset as i64])?;
            let ends = g.const_i64(&[total as i64])?;
            let axes = g.const_i64(&[0])?;
            g.node1(Slice, &[table, starts, ends, axes])?
        } else {
            let full = l.w.take_f32(&w_name, &[total, dim])?;
            g.initializer(
                &format!("{w_name}.image_rows"),
                rows_of(&full, offset, image)?,
            )?
        };
        let b_name = format!("{}.bias", names::LOGITS_LINEAR);
        let bias = l.w.take_f32(&b_name, &[total])?;
        let b = g.initializer(
            &format!("{b_name}.image_rows"),
            rows_of(&bias, offset, image)?,
        )?;
        layers::linear(g, h, w, Some(b))
    })
}
