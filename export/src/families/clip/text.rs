//! `clip_text.onnx`: token ids → L2-normalized text embedding (`CLIPTextTransformer` +
//! `text_projection`, transformers 5.24.0 `models/clip/modeling_clip.py`).
//!
//! ```text
//! input_ids i64[batch, context]
//!   → Gather(token_embedding) + position_embedding           [batch, context, hidden]
//!   → encoder layers with the causal mask (encoder.rs)
//!   → final_layer_norm
//!   → pool at the EOS position: ArgMax(float(ids)) (eos_token_id == 2, legacy)
//!                               or ArgMax(float(ids == eos_token_id)) (first EOS)
//!     as a one-hot [batch, 1, context] · hidden states       [batch, hidden]
//!   → text_projection (no bias) → x / ‖x‖₂ → text_embeds f32[batch, projection_dim]
//! ```

use super::config::{ClipConfig, Pooling};
use super::encoder::{dense, l2_normalize, layer_norm, layers, param};
use super::names::{self, Tower};
use crate::dims;
use crate::error::{ExportError, Result};
use crate::graph::GraphBuilder;
use crate::graph::ops::{Add, ArgMax, Cast, Equal, Gather, MatMul, Reshape, Unsqueeze};
use crate::tensor::TensorData;
use crate::weights::Weights;
use dalle_bundle::DType;
use dalle_bundle::io::{clip, dims as d};

/// Ids below this are exact in float32 (the pooling's ArgMax key).
const F32_EXACT_IDS: usize = 1 << 24;

/// Builds the text graph, taking the text tower's weights and `text_projection` from `w`.
pub fn build(cfg: &ClipConfig, w: &mut Weights) -> Result<GraphBuilder> {
    let t = &cfg.text;
    let (hidden, ctx) = (t.tower.hidden, t.context_length);
    if t.pooling == Pooling::ArgMaxId && t.vocab_size > F32_EXACT_IDS {
        return Err(ExportError::Unsupported(format!(
            "text vocab_size {} exceeds 2^24: argmax pooling over token ids needs ids exact in \
             float32",
            t.vocab_size
        )));
    }
    let mut g = GraphBuilder::new("clip_text");
    let ids = g.input(clip::INPUT_IDS, DType::I64, dims![d::BATCH, ctx])?;
    let x = g.scoped("embeddings", |g| {
        let table = param(g, w, names::TOKEN_EMBEDDING, &[t.vocab_size, hidden])?;
        let pos = param(
            g,
            w,
            &names::position_embedding(Tower::Text),
            &[ctx, hidden],
        )?;
        let x = g.node1(Gather { axis: 0 }, &[table, ids])?;
        g.node1(Add, &[x, pos])
    })?;
    let causal: Vec<u8> = (0..ctx)
        .flat_map(|i| (0..ctx).map(move |j| u8::from(j <= i)))
        .collect();
    let mask = g.constant(TensorData::from_bytes(DType::Bool, vec![ctx, ctx], causal)?)?;
    let x = layers(&mut g, w, Tower::Text, &t.tower, x, Some(mask))?;
    let x = layer_norm(
        &mut g,
        w,
        names::TEXT_FINAL_NORM,
        hidden,
        t.tower.layer_norm_eps,
        x,
    )?;
    let pooled = g.scoped("pool", |g| {
        let key = match t.pooling {
            Pooling::ArgMaxId => ids,
            Pooling::FirstEos(eos) => {
                let eos = g.scalar_i64(eos)?;
                g.node1(Equal, &[ids, eos])?
            }
        };
        // ArgMax over float32, the one key type every provider has an ArgMax kernel for (ONNX
        // Runtime's CUDA ArgMax takes no integers): ids are exact in f32 below 2²⁴ (checked
        // above), bools cast to 0/1; the first maximum wins on ties, as in torch.
        let key = g.node1(Cast { to: DType::F32 }, &[key])?;
        let idx = g.node1(
            ArgMax {
                axis: 1,
                keepdims: true,
            },
            &[key],
        )?;
        let positions: Vec<i64> = (0..ctx as i64).collect();
        let positions = g.constant(TensorData::from_i64(vec![1, ctx], &positions)?)?;
        let onehot = g.node1(Equal, &[positions, idx])?;
        let onehot = g.node1(Cast { to: DType::F32 }, &[onehot])?;
        let axes = g.const_i64(&[1])?;
        let onehot = g.node1(Unsqueeze, &[onehot, axes])?;
        let pooled = g.node1(MatMul, &[onehot, x])?;
        let flat = g.const_i64(&[0, hidden as i64])?;
        g.node1(Reshape, &[pooled, flat])
    })?;
    let out = g.scoped("projection", |g| {
        let y = dense(
            g,
            w,
            names::TEXT_PROJECTION.trim_end_matches(".weight"),
            (hidden, cfg.projection_dim),
            false,
            pooled,
        )?;
        l2_normalize(g, y)
    })?;
    g.output_as(clip::TEXT_EMBEDS, out, dims![d::BATCH, cfg.projection_dim])?;
    Ok(g)
}
