//! `clip_image.onnx`: normalized pixels → L2-normalized image embedding
//! (`CLIPVisionTransformer` + `visual_projection`, transformers 5.24.0
//! `models/clip/modeling_clip.py`).
//!
//! ```text
//! pixel_values f32[batch, 3, size, size]   (already resized, cropped and normalized)
//!   → Conv(patch_embedding, kernel = stride = patch, no bias)  [batch, hidden, g, g]
//!   → Reshape [batch, hidden, g²] → Transpose                 [batch, g², hidden]
//!   → Concat(class_embedding expanded to [batch, 1, hidden], patches) + position_embedding
//!   → pre_layrnorm → encoder layers (no mask; encoder.rs)
//!   → position 0 (class token) → post_layernorm
//!   → visual_projection (no bias) → x / ‖x‖₂ → image_embeds f32[batch, projection_dim]
//! ```

use super::config::ClipConfig;
use super::encoder::{dense, l2_normalize, layer_norm, layers, param};
use super::names::{self, Tower};
use crate::dims;
use crate::error::Result;
use crate::graph::GraphBuilder;
use crate::graph::ops::{Add, Concat, Conv, Expand, Gather, Reshape, Shape, Transpose};
use crate::weights::Weights;
use dalle_bundle::DType;
use dalle_bundle::io::{clip, dims as d};

/// Builds the image graph, taking the vision tower's weights and `visual_projection` from `w`.
pub fn build(cfg: &ClipConfig, w: &mut Weights) -> Result<GraphBuilder> {
    let v = &cfg.vision;
    let (hidden, p, size) = (v.tower.hidden, v.patch_size, v.image_size);
    let mut g = GraphBuilder::new("clip_image");
    let pixels = g.input(
        clip::PIXEL_VALUES,
        DType::F32,
        dims![d::BATCH, v.channels, size, size],
    )?;
    let x = g.scoped("embeddings", |g| {
        let kernel = param(g, w, names::PATCH_EMBEDDING, &[hidden, v.channels, p, p])?;
        let x = g.node1(
            Conv {
                kernel_shape: vec![p as i64, p as i64],
                strides: vec![p as i64, p as i64],
                pads: vec![0, 0, 0, 0],
                dilations: vec![1, 1],
                group: 1,
            },
            &[pixels, kernel],
        )?;
        let n = (v.grid() * v.grid()) as i64;
        let flat = g.const_i64(&[0, hidden as i64, n])?;
        let x = g.node1(Reshape, &[x, flat])?;
        let x = g.node1(
            Transpose {
                perm: vec![0, 2, 1],
            },
            &[x],
        )?;
        let cls = w
            .take_f32(names::CLASS_EMBEDDING, &[hidden])?
            .reshape(vec![1, 1, hidden])?;
        let cls = g.initializer(names::CLASS_EMBEDDING, cls)?;
        let batch = g.node1(
            Shape {
                start: Some(0),
                end: Some(1),
            },
            &[pixels],
        )?;
        let rest = g.const_i64(&[1, hidden as i64])?;
        let shape = g.node1(Concat { axis: 0 }, &[batch, rest])?;
        let cls = g.node1(Expand, &[cls, shape])?;
        let x = g.node1(Concat { axis: 1 }, &[cls, x])?;
        let pos = param(
            g,
            w,
            &names::position_embedding(Tower::Vision),
            &[v.positions(), hidden],
        )?;
        g.node1(Add, &[x, pos])
    })?;
    let eps = v.tower.layer_norm_eps;
    let x = layer_norm(&mut g, w, names::VISION_PRE_NORM, hidden, eps, x)?;
    let x = layers(&mut g, w, Tower::Vision, &v.tower, x, None)?;
    let out = g.scoped("pool", |g| {
        let zero = g.scalar_i64(0)?;
        let x = g.node1(Gather { axis: 1 }, &[x, zero])?;
        let x = layer_norm(g, w, names::VISION_POST_NORM, hidden, eps, x)?;
        let y = dense(
            g,
            w,
            names::VISUAL_PROJECTION.trim_end_matches(".weight"),
            (hidden, cfg.projection_dim),
            false,
            x,
        )?;
        l2_normalize(g, y)
    })?;
    g.output_as(clip::IMAGE_EMBEDS, out, dims![d::BATCH, cfg.projection_dim])?;
    Ok(g)
}
