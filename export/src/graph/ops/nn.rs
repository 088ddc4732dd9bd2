//! Neural-network ops: `Conv`, `ConvTranspose`, `MaxPool`, `Resize` (nearest upsampling),
//! `Softmax`, `LayerNormalization`, `InstanceNormalization`.

use crate::graph::op::{Attr, InferCtx, Op, OutputFact, same_dtype};
use crate::graph::value::normalize_axis;
use dalle_bundle::{DType, Dim, dtype::format_dims};

fn float(d: DType) -> bool {
    d.is_float()
}

/// Output size of a sliding window along one spatial axis. Symbolic inputs stay symbolic only
/// when the window preserves the size ("same" conv) or halves/doubles it exactly.
fn window_out(
    input: &Dim,
    kernel: i64,
    stride: i64,
    pad_total: i64,
    dilation: i64,
    namer: &mut crate::graph::value::DimNamer,
) -> Result<Dim, String> {
    let effective = dilation * (kernel - 1) + 1;
    match input {
        Dim::Fixed(n) => {
            let span = *n as i64 + pad_total - effective;
            if span < 0 {
                return Err(format!(
                    "window of {effective} (with padding {pad_total}) does not fit input size {n}"
                ));
            }
            Ok(Dim::Fixed((span / stride + 1) as u64))
        }
        Dim::Symbolic(_) if stride == 1 && pad_total == effective - 1 => Ok(input.clone()),
        Dim::Symbolic(_) => Ok(namer.fresh()),
    }
}

/// Input and weight of a convolution must both have rank `spatial + 2` (N, C, spatial dims).
fn check_kernel_rank(x: &[Dim], w: &[Dim], spatial: usize) -> Result<(), String> {
    if x.len() != spatial + 2 || w.len() != spatial + 2 {
        return Err(format!(
            "input {} and weight {} must have rank {} for a {spatial}-D kernel",
            format_dims(x),
            format_dims(w),
            spatial + 2
        ));
    }
    Ok(())
}

/// 2-D (or N-D) convolution, NCHW. <https://onnx.ai/onnx/operators/onnx__Conv.html>
#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    pub kernel_shape: Vec<i64>,
    pub strides: Vec<i64>,
    /// `[begin_0, begin_1, ..., end_0, end_1, ...]`.
    pub pads: Vec<i64>,
    pub dilations: Vec<i64>,
    pub group: i64,
}

impl Conv {
    /// Stride-1 convolution with "same" padding `(k-1)/2` on every side (odd square kernel),
    /// as in OpenAI's dVAE `Conv2d`.
    pub fn same(kernel: i64) -> Conv {
        let p = (kernel - 1) / 2;
        Conv {
            kernel_shape: vec![kernel, kernel],
            strides: vec![1, 1],
            pads: vec![p, p, p, p],
            dilations: vec![1, 1],
            group: 1,
        }
    }
}

impl Op for Conv {
    fn op_type(&self) -> &'static str {
        "Conv"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("dilations", Attr::Ints(self.dilations.clone())),
            ("group", Attr::Int(self.group)),
            ("kernel_shape", Attr::Ints(self.kernel_shape.clone())),
            ("pads", Attr::Ints(self.pads.clone())),
            ("strides", Attr::Ints(self.strides.clone())),
        ]
    }
    fn input_arity(&self) -> (usize, usize) {
        (2, 3)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let dtype = same_dtype(ctx, &[0, 1], float, "a float type")?;
        let x = ctx.shape(0)?.clone();
        let w = ctx.shape(1)?.clone();
        let spatial = self.kernel_shape.len();
        check_kernel_rank(&x, &w, spatial)?;
        if self.strides.len() != spatial
            || self.dilations.len() != spatial
            || self.pads.len() != 2 * spatial
            || self.group < 1
        {
            return Err("strides/dilations/pads/group do not match the kernel rank".into());
        }
        for (i, k) in self.kernel_shape.iter().enumerate() {
            if w[i + 2] != Dim::Fixed(*k as u64) {
                return Err(format!(
                    "weight {} does not match kernel_shape {:?}",
                    format_dims(&w),
                    self.kernel_shape
                ));
            }
        }
        if let (Dim::Fixed(c), Dim::Fixed(wc)) = (&x[1], &w[1])
            && *c != wc * self.group as u64
        {
            return Err(format!(
                "input has {c} channels but weight {} expects {} (group {})",
                format_dims(&w),
                wc * self.group as u64,
                self.group
            ));
        }
        if let Some(b) = ctx.optional(2)
            && (b.info.dtype != dtype || b.info.shape != vec![w[0].clone()])
        {
            return Err(format!(
                "bias {} must be {dtype}[{}]",
                b.info.describe(),
                w[0]
            ));
        }
        let mut shape = vec![x[0].clone(), w[0].clone()];
        for i in 0..spatial {
            shape.push(window_out(
                &x[i + 2],
                self.kernel_shape[i],
                self.strides[i],
                self.pads[i] + self.pads[i + spatial],
                self.dilations[i],
                ctx.namer,
            )?);
        }
        Ok(vec![(dtype, shape)])
    }
}

/// Transposed (fractionally strided) 2-D (or N-D) convolution, NCHW, with explicit pads and
/// no `output_shape`. Weight layout `[C_in, C_out / group, k...]`, as PyTorch's
/// `ConvTranspose2d`. Output size per spatial axis:
/// `stride·(n − 1) + output_padding + dilation·(k − 1) + 1 − pad_begin − pad_end`.
/// <https://onnx.ai/onnx/operators/onnx__ConvTranspose.html>
#[derive(Clone, Debug, PartialEq)]
pub struct ConvTranspose {
    pub kernel_shape: Vec<i64>,
    pub strides: Vec<i64>,
    /// `[begin_0, begin_1, ..., end_0, end_1, ...]`.
    pub pads: Vec<i64>,
    /// Extra size added to one side of each output axis (PyTorch `output_padding`).
    pub output_padding: Vec<i64>,
    pub dilations: Vec<i64>,
    pub group: i64,
}

impl ConvTranspose {
    /// Exact 2× upsampling: kernel `k`, stride 2, padding `(k − 2)/2` on every side (even `k`),
    /// as DALLE-pytorch's `ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)`.
    pub fn upsample2(kernel: i64) -> ConvTranspose {
        let p = (kernel - 2) / 2;
        ConvTranspose {
            kernel_shape: vec![kernel, kernel],
            strides: vec![2, 2],
            pads: vec![p, p, p, p],
            output_padding: vec![0, 0],
            dilations: vec![1, 1],
            group: 1,
        }
    }
}

/// Output size of a transposed convolution along one axis. A symbolic input `n` stays named
/// when the output is exactly `stride·n` (`{n}*{stride}`, or `n` itself for stride 1).
fn transposed_out(
    input: &Dim,
    (kernel, stride, pad_total, output_padding, dilation): (i64, i64, i64, i64, i64),
    namer: &mut crate::graph::value::DimNamer,
) -> Result<Dim, String> {
    let effective = dilation * (kernel - 1) + 1;
    // out = stride·n + extra
    let extra = output_padding + effective - pad_total - stride;
    match input {
        Dim::Fixed(n) => {
            let out = stride * (*n as i64 - 1) + output_padding + effective - pad_total;
            if out < 1 {
                return Err(format!(
                    "output size {out} < 1 for input size {n} (padding {pad_total})"
                ));
            }
            Ok(Dim::Fixed(out as u64))
        }
        Dim::Symbolic(_) if extra == 0 && stride == 1 => Ok(input.clone()),
        Dim::Symbolic(name) if extra == 0 => Ok(Dim::Symbolic(format!("{name}*{stride}"))),
        Dim::Symbolic(_) => Ok(namer.fresh()),
    }
}

impl Op for ConvTranspose {
    fn op_type(&self) -> &'static str {
        "ConvTranspose"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("dilations", Attr::Ints(self.dilations.clone())),
            ("group", Attr::Int(self.group)),
            ("kernel_shape", Attr::Ints(self.kernel_shape.clone())),
            ("output_padding", Attr::Ints(self.output_padding.clone())),
            ("pads", Attr::Ints(self.pads.clone())),
            ("strides", Attr::Ints(self.strides.clone())),
        ]
    }
    fn input_arity(&self) -> (usize, usize) {
        (2, 3)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let dtype = same_dtype(ctx, &[0, 1], float, "a float type")?;
        let x = ctx.shape(0)?.clone();
        let w = ctx.shape(1)?.clone();
        let spatial = self.kernel_shape.len();
        check_kernel_rank(&x, &w, spatial)?;
        if self.strides.len() != spatial
            || self.dilations.len() != spatial
            || self.output_padding.len() != spatial
            || self.pads.len() != 2 * spatial
            || self.group < 1
        {
            return Err(
                "strides/dilations/output_padding/pads/group do not match the kernel rank".into(),
            );
        }
        if self.strides.iter().chain(&self.dilations).any(|v| *v < 1)
            || self.pads.iter().any(|p| *p < 0)
        {
            return Err("strides and dilations must be >= 1 and pads >= 0".into());
        }
        for i in 0..spatial {
            let op = self.output_padding[i];
            if op < 0 || (op >= self.strides[i] && op >= self.dilations[i]) {
                return Err(format!(
                    "output_padding {op} must be smaller than the stride or the dilation"
                ));
            }
        }
        for (i, k) in self.kernel_shape.iter().enumerate() {
            if w[i + 2] != Dim::Fixed(*k as u64) {
                return Err(format!(
                    "weight {} does not match kernel_shape {:?}",
                    format_dims(&w),
                    self.kernel_shape
                ));
            }
        }
        if x[1] != w[0] && matches!((&x[1], &w[0]), (Dim::Fixed(_), Dim::Fixed(_))) {
            return Err(format!(
                "input has {} channels but weight {} (layout [C_in, C_out/group, k...]) expects {}",
                x[1],
                format_dims(&w),
                w[0]
            ));
        }
        let out_channels = match &w[1] {
            Dim::Fixed(c) => Dim::Fixed(c * self.group as u64),
            Dim::Symbolic(_) if self.group == 1 => w[1].clone(),
            Dim::Symbolic(_) => ctx.namer.fresh(),
        };
        if let Some(b) = ctx.optional(2)
            && (b.info.dtype != dtype || b.info.shape != vec![out_channels.clone()])
        {
            return Err(format!(
                "bias {} must be {dtype}[{out_channels}]",
                b.info.describe()
            ));
        }
        let mut shape = vec![x[0].clone(), out_channels];
        for i in 0..spatial {
            shape.push(transposed_out(
                &x[i + 2],
                (
                    self.kernel_shape[i],
                    self.strides[i],
                    self.pads[i] + self.pads[i + spatial],
                    self.output_padding[i],
                    self.dilations[i],
                ),
                ctx.namer,
            )?);
        }
        Ok(vec![(dtype, shape)])
    }
}

/// Max pooling, NCHW, no padding. <https://onnx.ai/onnx/operators/onnx__MaxPool.html>
#[derive(Clone, Debug, PartialEq)]
pub struct MaxPool {
    pub kernel_shape: Vec<i64>,
    pub strides: Vec<i64>,
}

impl Op for MaxPool {
    fn op_type(&self) -> &'static str {
        "MaxPool"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("kernel_shape", Attr::Ints(self.kernel_shape.clone())),
            ("strides", Attr::Ints(self.strides.clone())),
        ]
    }
    fn input_arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let dtype = same_dtype(ctx, &[0], float, "a float type")?;
        let x = ctx.shape(0)?.clone();
        let spatial = self.kernel_shape.len();
        if x.len() != spatial + 2 || self.strides.len() != spatial {
            return Err(format!(
                "input {} does not match a {spatial}-D pool",
                format_dims(&x)
            ));
        }
        let mut shape = vec![x[0].clone(), x[1].clone()];
        for i in 0..spatial {
            let (k, s) = (self.kernel_shape[i], self.strides[i]);
            let d = match &x[i + 2] {
                Dim::Symbolic(name) if k == s => Dim::Symbolic(format!("{name}/{k}")),
                other => window_out(other, k, s, 0, 1, ctx.namer)?,
            };
            shape.push(d);
        }
        Ok(vec![(dtype, shape)])
    }
}

/// Nearest-neighbour upsampling by integer factors, given as a constant `scales` input
/// (`Resize` with `roi` omitted). <https://onnx.ai/onnx/operators/onnx__Resize.html>
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ResizeNearest;

impl Op for ResizeNearest {
    fn op_type(&self) -> &'static str {
        "Resize"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![
            (
                "coordinate_transformation_mode",
                Attr::String("asymmetric".into()),
            ),
            ("mode", Attr::String("nearest".into())),
            ("nearest_mode", Attr::String("floor".into())),
        ]
    }
    fn input_arity(&self) -> (usize, usize) {
        (3, 3)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        if ctx.optional(1).is_some() {
            return Err("ResizeNearest takes no roi input (pass None)".into());
        }
        let x = ctx.input(0)?;
        let scales = ctx
            .input(2)?
            .constant
            .ok_or("scales must be a constant")?
            .to_f32_vec()
            .map_err(|e| e.to_string())?;
        if scales.len() != x.info.rank() {
            return Err(format!(
                "{} scales for input {}",
                scales.len(),
                x.info.describe()
            ));
        }
        let mut shape = Vec::new();
        for (d, s) in x.info.shape.iter().zip(&scales) {
            if s.fract() != 0.0 || *s < 1.0 {
                return Err(format!("scale {s} is not a positive integer"));
            }
            let s = *s as u64;
            shape.push(match d {
                _ if s == 1 => d.clone(),
                Dim::Fixed(n) => Dim::Fixed(n * s),
                Dim::Symbolic(name) => Dim::Symbolic(format!("{name}*{s}")),
            });
        }
        Ok(vec![(x.info.dtype, shape)])
    }
}

/// Softmax along one axis. <https://onnx.ai/onnx/operators/onnx__Softmax.html>
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Softmax {
    pub axis: i64,
}

impl Op for Softmax {
    fn op_type(&self) -> &'static str {
        "Softmax"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![("axis", Attr::Int(self.axis))]
    }
    fn input_arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let dtype = same_dtype(ctx, &[0], float, "a float type")?;
        let shape = ctx.shape(0)?.clone();
        normalize_axis(self.axis, shape.len())?;
        Ok(vec![(dtype, shape)])
    }
}

/// Layer normalization over the dims from `axis` on, with scale and optional bias (opset 17).
/// <https://onnx.ai/onnx/operators/onnx__LayerNormalization.html>
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormalization {
    pub axis: i64,
    pub epsilon: f32,
}

impl Op for LayerNormalization {
    fn op_type(&self) -> &'static str {
        "LayerNormalization"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("axis", Attr::Int(self.axis)),
            ("epsilon", Attr::Float(self.epsilon)),
        ]
    }
    fn input_arity(&self) -> (usize, usize) {
        (2, 3)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let inputs: Vec<usize> = if ctx.optional(2).is_some() {
            vec![0, 1, 2]
        } else {
            vec![0, 1]
        };
        let dtype = same_dtype(ctx, &inputs, float, "a float type")?;
        let x = ctx.shape(0)?.clone();
        let axis = normalize_axis(self.axis, x.len())?;
        let normalized = &x[axis..];
        for &i in &inputs[1..] {
            let p = ctx.input(i)?;
            if p.info.shape.as_slice() != normalized {
                return Err(format!(
                    "{} must have the normalized shape {}",
                    p.info.describe(),
                    format_dims(normalized)
                ));
            }
        }
        Ok(vec![(dtype, x)])
    }
}

/// Instance normalization: each (batch, channel) slice of `[N, C, ...]` normalized over the
/// remaining axes, then `· scale[C] + bias[C]` (opset 6). Group normalization is built on it
/// (`crate::layers::group_norm`): CUDA and TensorRT both have kernels for it.
/// <https://onnx.ai/onnx/operators/onnx__InstanceNormalization.html>
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InstanceNormalization {
    pub epsilon: f32,
}

impl Op for InstanceNormalization {
    fn op_type(&self) -> &'static str {
        "InstanceNormalization"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![("epsilon", Attr::Float(self.epsilon))]
    }
    fn input_arity(&self) -> (usize, usize) {
        (3, 3)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let dtype = same_dtype(ctx, &[0, 1, 2], float, "a float type")?;
        let x = ctx.shape(0)?.clone();
        if x.len() < 3 {
            return Err(format!(
                "input {} must have rank >= 3 ([N, C, ...])",
                format_dims(&x)
            ));
        }
        for i in [1, 2] {
            let p = ctx.input(i)?;
            if p.info.shape.len() != 1
                || matches!((&p.info.shape[0], &x[1]), (Dim::Fixed(a), Dim::Fixed(b)) if a != b)
            {
                return Err(format!(
                    "{} must be 1-D of the channel count {}",
                    p.info.describe(),
                    x[1]
                ));
            }
        }
        Ok(vec![(dtype, x)])
    }
}
