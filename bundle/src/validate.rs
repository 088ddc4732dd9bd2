//! The manifest's numbers, checked: each within its [`limits`](crate::limits), their sums and
//! products without overflow, and the token layout and CLIP settings consistent with the dims
//! the graphs declare. [`crate::Manifest::validate`] runs these after its structural checks, so
//! the runtime never sizes anything from a number it has not checked.

use crate::dtype::Dim;
use crate::io;
use crate::limits::{self, check, checked_product, checked_sum};
use crate::manifest::{ClipInfo, GraphRole, GraphSpec, Manifest, ModelFamily, TokenLayout};
use crate::{BundleError, Result};

/// Every fixed dim and every `dim_ranges` maximum.
const DIM: limits::Limit = limits::Limit {
    min: 0,
    max: 1 << 24,
};

fn invalid(message: String) -> BundleError {
    BundleError::Invalid(message)
}

/// All checks of this module.
pub(crate) fn numbers(m: &Manifest) -> Result<()> {
    for (role, g) in &m.graphs {
        graph_dims(*role, g)?;
    }
    if let Some(t) = &m.token_layout {
        token_layout(t)?;
        if matches!(
            m.family,
            ModelFamily::DallePytorch | ModelFamily::RandomDemo
        ) {
            unified_vocabulary(t)?;
            if let Some(g) = m.graphs.get(&GraphRole::Decoder) {
                layout_vs_decoder(t, g)?;
            }
            if let Some(g) = m.graphs.get(&GraphRole::DvaeDecoder) {
                layout_vs_dvae(t, g, io::dvae::IMAGE_TOKENS, true)?;
            }
            if let Some(g) = m.graphs.get(&GraphRole::DvaeEncoder) {
                layout_vs_dvae(t, g, io::dvae::IMAGE_TOKENS, false)?;
            }
        }
    }
    if let Some(c) = &m.clip {
        clip(c)?;
        if let Some(g) = m.graphs.get(&GraphRole::ClipText) {
            clip_vs_text(c, g)?;
        }
        if let Some(g) = m.graphs.get(&GraphRole::ClipImage) {
            clip_vs_image(c, g)?;
        }
    }
    Ok(())
}

/// Fixed dims and range maxima are bounded, and no tensor's largest element count overflows.
fn graph_dims(role: GraphRole, g: &GraphSpec) -> Result<()> {
    for (name, r) in &g.dim_ranges {
        check(&format!("graph {role}: dim_ranges.{name}.max"), r.max, DIM)?;
    }
    if let Some(r) = g.dim_ranges.get(io::dims::BATCH) {
        check(
            &format!("graph {role}: dim_ranges.batch.max"),
            r.max,
            limits::BATCH,
        )?;
    }
    for t in g.inputs.iter().chain(&g.outputs) {
        let mut factors: Vec<(&str, usize)> = Vec::with_capacity(t.dims.len());
        for (axis, d) in t.dims.iter().enumerate() {
            match d {
                Dim::Fixed(n) => {
                    let n = check(&format!("graph {role}: `{}` dim {axis}", t.name), *n, DIM)?;
                    factors.push(("", n));
                }
                // Derived symbols (`height/8`) have no range of their own.
                Dim::Symbolic(s) => {
                    if let Some(r) = g.dim_ranges.get(s) {
                        factors.push((s.as_str(), r.max as usize));
                    }
                }
            }
        }
        factors.push(("bytes per element", t.dtype.size()));
        checked_product(&format!("graph {role}: largest `{}`", t.name), &factors)?;
    }
    Ok(())
}

fn token_layout(t: &TokenLayout) -> Result<()> {
    check(
        "token_layout.text_length",
        t.text_length,
        limits::TEXT_LENGTH,
    )?;
    check(
        "token_layout.text_vocab_size",
        t.text_vocab_size,
        limits::VOCAB,
    )?;
    check("token_layout.image_grid", t.image_grid, limits::IMAGE_GRID)?;
    check(
        "token_layout.image_vocab_size",
        t.image_vocab_size,
        limits::VOCAB,
    )?;
    // Ids of a vocabulary made of text ids, per-position pads and image codes.
    let id = limits::Limit {
        min: 0,
        max: 2 * limits::VOCAB.max + limits::TEXT_LENGTH.max,
    };
    let size = limits::Limit { min: 1, ..id };
    check("token_layout.total_vocab_size", t.total_vocab_size, size)?;
    check("token_layout.image_token_offset", t.image_token_offset, id)?;
    check("token_layout.pad_id_base", t.pad_id_base, id)?;
    check("token_layout.bos_id", t.bos_id, id)?;
    let sequence = checked_sum(
        "token_layout sequence",
        &[
            ("text_length", t.text_length),
            ("image_grid²", t.image_grid * t.image_grid),
        ],
    )?;
    check(
        "token_layout: text_length + image_grid²",
        sequence,
        limits::SEQUENCE,
    )?;
    Ok(())
}

/// DALLE-pytorch's unified vocabulary: BOS and the text ids, then one pad per text position,
/// then the image codes, which end the vocabulary.
fn unified_vocabulary(t: &TokenLayout) -> Result<()> {
    let pads_end = checked_sum(
        "token_layout pads",
        &[
            ("pad_id_base", t.pad_id_base),
            ("text_length", t.text_length),
        ],
    )?;
    let image_end = checked_sum(
        "token_layout image ids",
        &[
            ("image_token_offset", t.image_token_offset),
            ("image_vocab_size", t.image_vocab_size),
        ],
    )?;
    if t.bos_id >= t.image_token_offset
        || t.text_vocab_size > t.pad_id_base
        || pads_end > t.image_token_offset
        || image_end != t.total_vocab_size
    {
        return Err(invalid(format!(
            "token_layout is not a unified vocabulary: need bos_id {} < image_token_offset {}, \
             text_vocab_size {} <= pad_id_base {}, pad_id_base + text_length {} <= \
             image_token_offset, and image_token_offset + image_vocab_size {} = \
             total_vocab_size {}",
            t.bos_id,
            t.image_token_offset,
            t.text_vocab_size,
            t.pad_id_base,
            pads_end,
            image_end,
            t.total_vocab_size
        )));
    }
    Ok(())
}

/// `dims[axis]` of `name`, as a fixed number, or `None` when symbolic or absent.
fn fixed_dim(g: &GraphSpec, name: &str, axis: usize) -> Option<u64> {
    let t = g.input(name).or_else(|| g.output(name))?;
    match t.dims.get(axis)? {
        Dim::Fixed(n) => Some(*n),
        Dim::Symbolic(_) => None,
    }
}

fn mismatch(what: &str, layout: String, graph: String) -> BundleError {
    invalid(format!(
        "{what}: the manifest says {layout}, but the graph declares {graph}"
    ))
}

/// The decoder's recorded sequence length (the exporter's `max_sequence_length`, from the
/// same hyperparameters as the layout) equals the layout's, its sequence range and cache
/// capacity hold it, and its logits are as wide as the layout's vocabularies.
fn layout_vs_decoder(t: &TokenLayout, g: &GraphSpec) -> Result<()> {
    // Positions: BOS + text_length + image_grid² − 1 (the last image token is never fed).
    let sequence = t.text_length + t.image_grid * t.image_grid;
    let layout = || {
        format!(
            "text_length {} + image_grid {}² = {sequence} positions",
            t.text_length, t.image_grid
        )
    };
    let attribute = |name: &str| g.attributes.get(name).and_then(serde_json::Value::as_u64);
    if let Some(n) = attribute(crate::attributes::decoder::MAX_SEQUENCE_LENGTH)
        && n != sequence
    {
        return Err(mismatch(
            "token_layout vs decoder",
            layout(),
            format!("max_sequence_length {n}"),
        ));
    }
    if let Some(n) = attribute(crate::attributes::decoder::KV_CAPACITY)
        && n < sequence
    {
        return Err(mismatch(
            "token_layout vs decoder",
            layout(),
            format!("a key/value cache of kv_capacity {n}"),
        ));
    }
    if let Some(r) = g.dim_ranges.get(io::dims::SEQUENCE)
        && r.max < sequence
    {
        return Err(mismatch(
            "token_layout vs decoder",
            layout(),
            format!("dim_ranges.sequence.max {}", r.max),
        ));
    }
    let last = |name: &str| {
        let t = g.output(name)?;
        match t.dims.last()? {
            Dim::Fixed(n) => Some(*n),
            Dim::Symbolic(_) => None,
        }
    };
    for (output, want, what) in [
        (
            io::decoder::IMAGE_LOGITS,
            t.image_vocab_size,
            "image_vocab_size",
        ),
        (io::decoder::LOGITS, t.total_vocab_size, "total_vocab_size"),
    ] {
        if let Some(n) = last(output)
            && n != want
        {
            return Err(mismatch(
                "token_layout vs decoder",
                format!("{what} {want}"),
                format!("`{output}` of width {n}"),
            ));
        }
    }
    Ok(())
}

/// The dVAE takes (or gives) `image_grid × image_grid` tokens of `image_vocab_size` codes.
fn layout_vs_dvae(t: &TokenLayout, g: &GraphSpec, tokens: &str, input: bool) -> Result<()> {
    let role = if input {
        "dvae_decoder"
    } else {
        "dvae_encoder"
    };
    let spec = if input {
        g.input(tokens)
    } else {
        g.output(tokens)
    };
    if let Some(spec) = spec {
        for axis in [1, 2] {
            let ok = match spec.dims.get(axis) {
                Some(Dim::Fixed(n)) => *n == t.image_grid,
                Some(Dim::Symbolic(s)) => g
                    .dim_ranges
                    .get(s)
                    .is_none_or(|r| r.min <= t.image_grid && t.image_grid <= r.max),
                None => false,
            };
            if !ok {
                return Err(mismatch(
                    &format!("token_layout vs {role}"),
                    format!("image_grid {}", t.image_grid),
                    format!("`{tokens}` {}", crate::dtype::format_dims(&spec.dims)),
                ));
            }
        }
    }
    if let Some(v) = g
        .attributes
        .get(crate::attributes::dvae::VOCAB_SIZE)
        .and_then(serde_json::Value::as_u64)
        && v != t.image_vocab_size
    {
        return Err(mismatch(
            &format!("token_layout vs {role}"),
            format!("image_vocab_size {}", t.image_vocab_size),
            format!("vocab_size {v}"),
        ));
    }
    Ok(())
}

fn clip(c: &ClipInfo) -> Result<()> {
    let ctx = check("clip.context_length", c.context_length, limits::TEXT_LENGTH)?;
    if ctx < 2 {
        return Err(invalid(format!(
            "clip.context_length {ctx} leaves no room for the start and end tokens"
        )));
    }
    check("clip.image_size", c.image_size, limits::IMAGE_SIDE)?;
    check("clip.projection_dim", c.projection_dim, limits::WIDTH)?;
    for (name, id) in [
        ("bos_id", c.bos_id),
        ("eos_id", c.eos_id),
        ("pad_id", c.pad_id),
    ] {
        check(
            &format!("clip.{name}"),
            id,
            limits::Limit {
                min: 0,
                max: limits::VOCAB.max,
            },
        )?;
    }
    // Scores are exp(logit_scale) · cos in float32 (`dalle::clip`).
    let scale = c.logit_scale.exp() as f32;
    if !c.logit_scale.is_finite() || !scale.is_finite() {
        return Err(invalid(format!(
            "clip.logit_scale {} gives exp(logit_scale) = {} in float32, where scores are \
             computed (Hugging Face CLIP clamps it to ln 100 ≈ 4.605 in training)",
            c.logit_scale, scale
        )));
    }
    if c.image_mean.iter().any(|m| !m.is_finite()) {
        return Err(invalid(format!(
            "clip.image_mean must be finite, got {:?}",
            c.image_mean
        )));
    }
    if c.image_std
        .iter()
        .any(|s| !s.is_finite() || *s <= 0.0 || !(1.0 / *s as f32).is_finite())
    {
        return Err(invalid(format!(
            "clip.image_std must be positive (and its inverse finite in float32), got {:?}",
            c.image_std
        )));
    }
    Ok(())
}

fn clip_vs_text(c: &ClipInfo, g: &GraphSpec) -> Result<()> {
    if let Some(n) = fixed_dim(g, io::clip::INPUT_IDS, 1)
        && n != c.context_length
    {
        return Err(mismatch(
            "clip vs clip_text",
            format!("context_length {}", c.context_length),
            format!("`input_ids` of length {n}"),
        ));
    }
    projection(c, g, io::clip::TEXT_EMBEDS, "clip_text")
}

fn clip_vs_image(c: &ClipInfo, g: &GraphSpec) -> Result<()> {
    for axis in [2, 3] {
        if let Some(n) = fixed_dim(g, io::clip::PIXEL_VALUES, axis)
            && n != c.image_size
        {
            return Err(mismatch(
                "clip vs clip_image",
                format!("image_size {}", c.image_size),
                format!("`pixel_values` of side {n}"),
            ));
        }
    }
    projection(c, g, io::clip::IMAGE_EMBEDS, "clip_image")
}

fn projection(c: &ClipInfo, g: &GraphSpec, output: &str, role: &str) -> Result<()> {
    if let Some(n) = fixed_dim(g, output, 1)
        && n != c.projection_dim
    {
        return Err(mismatch(
            &format!("clip vs {role}"),
            format!("projection_dim {}", c.projection_dim),
            format!("`{output}` of width {n}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::dtype::{DType, Dim};
    use crate::manifest::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    /// A DALLE-pytorch-shaped manifest: 16 text positions, a 2×2 grid of 4 codes, a decoder
    /// with `image_logits` and a CLIP.
    fn dalle() -> Manifest {
        let mut m = Manifest::new(
            ModelFamily::DallePytorch,
            Provenance {
                exporter: "test".into(),
                sources: vec![],
                notes: vec![],
            },
        );
        m.token_layout = Some(TokenLayout {
            text_length: 16,
            text_vocab_size: 10,
            bos_id: 0,
            pad_id_base: 10,
            image_grid: 2,
            image_vocab_size: 4,
            image_token_offset: 26,
            total_vocab_size: 30,
        });
        let mut ranges = BTreeMap::new();
        ranges.insert("batch".to_string(), DimRange::new(1, 1, 8));
        ranges.insert("sequence".to_string(), DimRange::new(1, 1, 20));
        let mut attributes = BTreeMap::new();
        attributes.insert("max_sequence_length".to_string(), serde_json::json!(20));
        m.graphs.insert(
            GraphRole::Decoder,
            GraphSpec {
                file: "decoder.onnx".into(),
                external_data: None,
                inputs: vec![TensorSpec::new(
                    "input_ids",
                    DType::I64,
                    vec![Dim::sym("batch"), Dim::sym("sequence")],
                )],
                outputs: vec![TensorSpec::new(
                    "image_logits",
                    DType::F32,
                    vec![Dim::sym("batch"), 4.into()],
                )],
                dim_ranges: ranges.clone(),
                attributes,
            },
        );
        m.clip = Some(ClipInfo {
            tokenizer: "clip_tokenizer.json".into(),
            context_length: 8,
            bos_id: 1,
            eos_id: 2,
            pad_id: 2,
            logit_scale: 4.6,
            image_size: 32,
            image_mean: [0.5; 3],
            image_std: [0.25; 3],
            projection_dim: 16,
        });
        m.graphs.insert(
            GraphRole::ClipText,
            GraphSpec {
                file: "clip_text.onnx".into(),
                external_data: None,
                inputs: vec![TensorSpec::new(
                    "input_ids",
                    DType::I64,
                    vec![Dim::sym("batch"), 8.into()],
                )],
                outputs: vec![TensorSpec::new(
                    "text_embeds",
                    DType::F32,
                    vec![Dim::sym("batch"), 16.into()],
                )],
                dim_ranges: ranges,
                attributes: BTreeMap::new(),
            },
        );
        m
    }

    fn err(m: &Manifest) -> String {
        let e = m.validate().unwrap_err().to_string();
        // The same error on the way in from JSON.
        let again = Manifest::from_json(&m.to_json(), Path::new("manifest.json"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, again);
        e
    }

    fn layout(m: &mut Manifest) -> &mut TokenLayout {
        m.token_layout.as_mut().unwrap()
    }

    fn clip(m: &mut Manifest) -> &mut ClipInfo {
        m.clip.as_mut().unwrap()
    }

    #[test]
    fn a_consistent_manifest_passes() {
        dalle().validate().unwrap();
    }

    #[test]
    fn text_length_must_match_the_decoders_sequence() {
        // The 16-token graph with a manifest claiming 8 text positions.
        let mut m = dalle();
        layout(&mut m).text_length = 8;
        let e = err(&m);
        assert!(
            e.contains("text_length 8 + image_grid 2² = 12 positions")
                && e.contains("max_sequence_length 20"),
            "{e}"
        );
        // More text than the graph's sequence range holds.
        let mut m = dalle();
        layout(&mut m).text_length = 24;
        layout(&mut m).image_token_offset = 34;
        layout(&mut m).total_vocab_size = 38;
        if let Some(g) = m.graphs.get_mut(&GraphRole::Decoder) {
            g.attributes.clear();
            g.outputs.clear();
        }
        let e = err(&m);
        assert!(
            e.contains("28 positions") && e.contains("dim_ranges.sequence.max 20"),
            "{e}"
        );
    }

    #[test]
    fn huge_or_wrapped_numbers_name_the_value_and_the_limit() {
        let mut m = dalle();
        layout(&mut m).text_length = 1 << 40;
        let e = err(&m);
        assert!(
            e.contains("`token_layout.text_length` = 1099511627776 is outside the supported range 1..=65536"),
            "{e}"
        );
        let mut m = dalle();
        layout(&mut m).image_grid = 1 << 32;
        assert!(err(&m).contains("`token_layout.image_grid` = 4294967296 is outside"));
        let mut m = dalle();
        layout(&mut m).image_grid = 0;
        assert!(
            err(&m)
                .contains("`token_layout.image_grid` = 0 is outside the supported range 1..=256")
        );
        let mut m = dalle();
        clip(&mut m).context_length = 1 << 40;
        assert!(err(&m).contains("`clip.context_length` = 1099511627776 is outside"));
        let mut m = dalle();
        if let Some(g) = m.graphs.get_mut(&GraphRole::Decoder) {
            g.dim_ranges
                .insert("batch".into(), DimRange::new(1, 1, 1 << 40));
        }
        assert!(err(&m).contains("dim_ranges.batch.max` = 1099511627776 is outside"));
    }

    #[test]
    fn the_unified_vocabulary_must_add_up() {
        let mut m = dalle();
        layout(&mut m).total_vocab_size = 31;
        let e = err(&m);
        assert!(
            e.contains("image_token_offset + image_vocab_size 30 = total_vocab_size 31"),
            "{e}"
        );
        let mut m = dalle();
        layout(&mut m).image_token_offset = 20;
        layout(&mut m).total_vocab_size = 24;
        assert!(err(&m).contains("not a unified vocabulary"));
    }

    #[test]
    fn logits_width_must_match_the_image_vocabulary() {
        let mut m = dalle();
        layout(&mut m).image_vocab_size = 5;
        layout(&mut m).total_vocab_size = 31;
        let e = err(&m);
        assert!(
            e.contains("image_vocab_size 5") && e.contains("`image_logits` of width 4"),
            "{e}"
        );
    }

    #[test]
    fn clip_settings_are_checked_in_float32_and_against_the_graph() {
        let mut m = dalle();
        clip(&mut m).logit_scale = 1000.0;
        let e = err(&m);
        assert!(
            e.contains("clip.logit_scale 1000") && e.contains("float32"),
            "{e}"
        );
        // Finite in f64 (e^100 ≈ 2.7e43) but not in f32.
        let mut m = dalle();
        clip(&mut m).logit_scale = 100.0;
        assert!(err(&m).contains("clip.logit_scale 100"));
        let mut m = dalle();
        clip(&mut m).context_length = 77;
        let e = err(&m);
        assert!(
            e.contains("context_length 77") && e.contains("`input_ids` of length 8"),
            "{e}"
        );
        let mut m = dalle();
        clip(&mut m).projection_dim = 512;
        assert!(err(&m).contains("`text_embeds` of width 16"));
        let mut m = dalle();
        clip(&mut m).image_std = [0.5, 0.0, 0.5];
        assert!(err(&m).contains("clip.image_std must be positive"));
    }
}
