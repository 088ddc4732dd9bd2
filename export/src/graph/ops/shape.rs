//! Shape and indexing ops: `Reshape`, `Transpose`, `Concat`, `Slice`, `Gather`, `Unsqueeze`,
//! `Squeeze`, `Shape`, `Expand`, `Split`, `Range`, `Trilu`, `ConstantOfShape`.
//!
//! Ops whose result depends on an integer input (Reshape's shape, Slice's bounds, ...) infer
//! exact shapes when that input is a constant, and fall back to unnamed dims otherwise.

use crate::graph::op::{Attr, InferCtx, Op, OutputFact, same_dtype};
use crate::graph::value::{fixed_numel, normalize_axis};
use crate::tensor::TensorData;
use dalle_bundle::{DType, Dim, dtype::format_dims};

fn int_input(ctx: &InferCtx<'_>, i: usize, what: &str) -> Result<(), String> {
    let v = ctx.input(i)?;
    if !matches!(v.info.dtype, DType::I64 | DType::I32) {
        return Err(format!("{what} {} must be int64", v.info.describe()));
    }
    Ok(())
}

/// Reshape; the target shape is input 1 (`0` copies the input dim, `-1` is inferred).
/// <https://onnx.ai/onnx/operators/onnx__Reshape.html>
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reshape;

impl Op for Reshape {
    fn op_type(&self) -> &'static str {
        "Reshape"
    }
    fn input_arity(&self) -> (usize, usize) {
        (2, 2)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        int_input(ctx, 1, "shape")?;
        let x = ctx.input(0)?.info;
        let target_fact = ctx.input(1)?;
        let Some(target) = target_fact.const_i64() else {
            let rank = target_fact
                .info
                .shape
                .first()
                .and_then(Dim::fixed)
                .ok_or("a non-constant shape input must be 1-D of fixed length".to_string())?;
            let shape = (0..rank).map(|_| ctx.namer.fresh()).collect();
            return Ok(vec![(x.dtype, shape)]);
        };
        // Resolve 0 (copy) first, then at most one -1 by symbolic cancellation.
        let mut out: Vec<Option<Dim>> = Vec::with_capacity(target.len());
        for (i, &t) in target.iter().enumerate() {
            out.push(match t {
                0 => Some(x.shape.get(i).cloned().ok_or(format!(
                    "shape entry {i} is 0 but the input has rank {}",
                    x.rank()
                ))?),
                -1 => None,
                n if n > 0 => Some(Dim::Fixed(n as u64)),
                n => return Err(format!("invalid shape entry {n}")),
            });
        }
        if out.iter().filter(|d| d.is_none()).count() > 1 {
            return Err("at most one shape entry may be -1".into());
        }
        let known: Vec<Dim> = out.iter().flatten().cloned().collect();
        let inferred = infer_minus_one(&x.shape, &known);
        let has_minus_one = out.iter().any(Option::is_none);
        let shape: Vec<Dim> = out
            .into_iter()
            .map(|d| {
                d.or_else(|| inferred.clone())
                    .unwrap_or_else(|| ctx.namer.fresh())
            })
            .collect();
        if !has_minus_one
            && let (Some(a), Some(b)) = (fixed_numel(&x.shape), fixed_numel(&shape))
            && a != b
        {
            return Err(format!(
                "cannot reshape {} ({a} elements) to {} ({b} elements)",
                format_dims(&x.shape),
                format_dims(&shape)
            ));
        }
        Ok(vec![(x.dtype, shape)])
    }
}

/// The dim a `-1` stands for: input dims divided by the known output dims, cancelling equal
/// symbols. `None` when it cannot be expressed as one dim.
fn infer_minus_one(input: &[Dim], known: &[Dim]) -> Option<Dim> {
    let mut syms: Vec<&String> = Vec::new();
    let mut num: u64 = 1;
    for d in input {
        match d {
            Dim::Fixed(n) => num = num.checked_mul(*n)?,
            Dim::Symbolic(s) => syms.push(s),
        }
    }
    let mut den: u64 = 1;
    for d in known {
        match d {
            Dim::Fixed(n) => den = den.checked_mul(*n)?,
            Dim::Symbolic(s) => {
                let pos = syms.iter().position(|x| *x == s)?;
                syms.remove(pos);
            }
        }
    }
    if den == 0 || !num.is_multiple_of(den) {
        return None;
    }
    let q = num / den;
    match (syms.as_slice(), q) {
        ([], q) => Some(Dim::Fixed(q)),
        ([s], 1) => Some(Dim::Symbolic((*s).clone())),
        _ => None,
    }
}

/// Permutes dims. <https://onnx.ai/onnx/operators/onnx__Transpose.html>
#[derive(Clone, Debug, PartialEq)]
pub struct Transpose {
    pub perm: Vec<i64>,
}

impl Op for Transpose {
    fn op_type(&self) -> &'static str {
        "Transpose"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![("perm", Attr::Ints(self.perm.clone()))]
    }
    fn input_arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let x = ctx.input(0)?.info;
        let mut sorted = self.perm.clone();
        sorted.sort_unstable();
        if sorted != (0..x.rank() as i64).collect::<Vec<_>>() {
            return Err(format!(
                "perm {:?} is not a permutation of the dims of {}",
                self.perm,
                x.describe()
            ));
        }
        let shape = self
            .perm
            .iter()
            .map(|&p| x.shape[p as usize].clone())
            .collect();
        Ok(vec![(x.dtype, shape)])
    }
}

/// Concatenates along `axis`. <https://onnx.ai/onnx/operators/onnx__Concat.html>
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Concat {
    pub axis: i64,
}

impl Op for Concat {
    fn op_type(&self) -> &'static str {
        "Concat"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![("axis", Attr::Int(self.axis))]
    }
    fn input_arity(&self) -> (usize, usize) {
        (1, usize::MAX)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let n = ctx.inputs.len();
        let all: Vec<usize> = (0..n).collect();
        let dtype = same_dtype(ctx, &all, |_| true, "any type")?;
        let first = ctx.shape(0)?.clone();
        let axis = normalize_axis(self.axis, first.len())?;
        let mut shape = first.clone();
        let mut fixed_sum: u64 = 0;
        let mut syms: Vec<String> = Vec::new();
        for i in 0..n {
            let s = ctx.shape(i)?;
            if s.len() != first.len() {
                return Err(format!(
                    "operand {i} has rank {}, operand 0 has rank {}",
                    s.len(),
                    first.len()
                ));
            }
            for (j, (a, b)) in s.iter().zip(&first).enumerate() {
                if j != axis && a != b && a.fixed().is_some() && b.fixed().is_some() {
                    return Err(format!(
                        "operand {i} {} differs from operand 0 {} outside axis {axis}",
                        format_dims(s),
                        format_dims(&first)
                    ));
                }
            }
            match &s[axis] {
                Dim::Fixed(k) => fixed_sum += k,
                Dim::Symbolic(x) => syms.push(x.clone()),
            }
        }
        shape[axis] = match (syms.len(), fixed_sum) {
            (0, k) => Dim::Fixed(k),
            (1, 0) => Dim::Symbolic(syms.remove(0)),
            _ => {
                let mut parts = syms;
                if fixed_sum > 0 {
                    parts.push(fixed_sum.to_string());
                }
                Dim::Symbolic(parts.join("+"))
            }
        };
        Ok(vec![(dtype, shape)])
    }
}

/// Slice with constant `starts`, `ends`, `axes` and optional `steps` inputs.
/// <https://onnx.ai/onnx/operators/onnx__Slice.html>
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Slice;

impl Op for Slice {
    fn op_type(&self) -> &'static str {
        "Slice"
    }
    fn input_arity(&self) -> (usize, usize) {
        (3, 5)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let x = ctx.input(0)?.info;
        let mut shape = x.shape.clone();
        let starts = ctx.input(1)?.const_i64();
        let ends = ctx.input(2)?.const_i64();
        let axes = match ctx.optional(3) {
            Some(a) => a.const_i64(),
            None => starts.as_ref().map(|s| (0..s.len() as i64).collect()),
        };
        let steps = match ctx.optional(4) {
            Some(s) => s.const_i64(),
            None => starts.as_ref().map(|s| vec![1; s.len()]),
        };
        let (Some(starts), Some(ends), Some(axes), Some(steps)) = (starts, ends, axes, steps)
        else {
            // Dynamic bounds: the sliced axes are unknown; without constant axes, all are.
            let axes = ctx.optional(3).and_then(|a| a.const_i64());
            for (i, d) in shape.iter_mut().enumerate() {
                let sliced = match &axes {
                    Some(ax) => ax
                        .iter()
                        .any(|&a| normalize_axis(a, x.rank()).ok() == Some(i)),
                    None => true,
                };
                if sliced {
                    *d = ctx.namer.fresh();
                }
            }
            return Ok(vec![(x.dtype, shape)]);
        };
        if starts.len() != ends.len() || starts.len() != axes.len() || steps.len() != axes.len() {
            return Err("starts/ends/axes/steps have different lengths".into());
        }
        for k in 0..axes.len() {
            let axis = normalize_axis(axes[k], x.rank())?;
            let step = steps[k];
            if step == 0 {
                return Err("slice step 0".into());
            }
            shape[axis] = match &x.shape[axis] {
                Dim::Fixed(n) => Dim::Fixed(slice_len(*n as i64, starts[k], ends[k], step)),
                Dim::Symbolic(_) if starts[k] == 0 && ends[k] == i64::MAX && step == 1 => {
                    x.shape[axis].clone()
                }
                Dim::Symbolic(_) => ctx.namer.fresh(),
            };
        }
        Ok(vec![(x.dtype, shape)])
    }
}

fn slice_len(n: i64, start: i64, end: i64, step: i64) -> u64 {
    let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
    let norm = |v: i64| if v < 0 { v + n } else { v };
    let (s, e) = if step > 0 {
        (clamp(norm(start), 0, n), clamp(norm(end), 0, n))
    } else {
        (clamp(norm(start), -1, n - 1), clamp(norm(end), -1, n - 1))
    };
    let len = if step > 0 {
        (e - s + step - 1) / step
    } else {
        (s - e + (-step) - 1) / (-step)
    };
    len.max(0) as u64
}

/// Gathers slices along `axis` at integer indices. <https://onnx.ai/onnx/operators/onnx__Gather.html>
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gather {
    pub axis: i64,
}

impl Op for Gather {
    fn op_type(&self) -> &'static str {
        "Gather"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![("axis", Attr::Int(self.axis))]
    }
    fn input_arity(&self) -> (usize, usize) {
        (2, 2)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        int_input(ctx, 1, "indices")?;
        let data = ctx.input(0)?.info;
        let indices = ctx.shape(1)?;
        let axis = normalize_axis(self.axis, data.rank())?;
        let mut shape = data.shape[..axis].to_vec();
        shape.extend(indices.iter().cloned());
        shape.extend(data.shape[axis + 1..].iter().cloned());
        Ok(vec![(data.dtype, shape)])
    }
}

fn const_axes(ctx: &InferCtx<'_>, i: usize, rank: usize) -> Result<Vec<usize>, String> {
    let axes = ctx
        .input(i)?
        .const_i64()
        .ok_or("axes must be a constant int64 tensor")?;
    let mut out = axes
        .iter()
        .map(|&a| normalize_axis(a, rank))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_unstable();
    out.dedup();
    if out.len() != axes.len() {
        return Err(format!("repeated axis in {axes:?}"));
    }
    Ok(out)
}

/// Inserts size-1 dims at constant `axes` (input 1). <https://onnx.ai/onnx/operators/onnx__Unsqueeze.html>
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Unsqueeze;

impl Op for Unsqueeze {
    fn op_type(&self) -> &'static str {
        "Unsqueeze"
    }
    fn input_arity(&self) -> (usize, usize) {
        (2, 2)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let x = ctx.input(0)?.info;
        let n_axes = ctx.input(1)?.const_i64().map(|a| a.len()).unwrap_or(0);
        let out_rank = x.rank() + n_axes;
        let axes = const_axes(ctx, 1, out_rank)?;
        let mut rest = x.shape.iter();
        let shape = (0..out_rank)
            .map(|i| {
                if axes.contains(&i) {
                    Dim::Fixed(1)
                } else {
                    rest.next().cloned().unwrap_or(Dim::Fixed(1))
                }
            })
            .collect();
        Ok(vec![(x.dtype, shape)])
    }
}

/// Removes size-1 dims at constant `axes` (input 1). <https://onnx.ai/onnx/operators/onnx__Squeeze.html>
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Squeeze;

impl Op for Squeeze {
    fn op_type(&self) -> &'static str {
        "Squeeze"
    }
    fn input_arity(&self) -> (usize, usize) {
        (2, 2)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let x = ctx.input(0)?.info;
        let axes = const_axes(ctx, 1, x.rank())?;
        for &a in &axes {
            if let Dim::Fixed(n) = x.shape[a]
                && n != 1
            {
                return Err(format!("cannot squeeze axis {a} of {}", x.describe()));
            }
        }
        let shape = x
            .shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, d)| d.clone())
            .collect();
        Ok(vec![(x.dtype, shape)])
    }
}

/// The input's shape as a 1-D int64 tensor, optionally a `[start, end)` range of it.
/// <https://onnx.ai/onnx/operators/onnx__Shape.html>
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Shape {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

impl Op for Shape {
    fn op_type(&self) -> &'static str {
        "Shape"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        let mut a = Vec::new();
        if let Some(s) = self.start {
            a.push(("start", Attr::Int(s)));
        }
        if let Some(e) = self.end {
            a.push(("end", Attr::Int(e)));
        }
        a
    }
    fn input_arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let r = ctx.input(0)?.info.rank() as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r);
        let s = clamp(self.start.unwrap_or(0));
        let e = clamp(self.end.unwrap_or(r));
        Ok(vec![(DType::I64, vec![Dim::Fixed((e - s).max(0) as u64)])])
    }
}

/// Broadcasts the input to a shape given by input 1. <https://onnx.ai/onnx/operators/onnx__Expand.html>
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Expand;

impl Op for Expand {
    fn op_type(&self) -> &'static str {
        "Expand"
    }
    fn input_arity(&self) -> (usize, usize) {
        (2, 2)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        int_input(ctx, 1, "shape")?;
        let x = ctx.input(0)?.info;
        let target = ctx.input(1)?;
        let target_shape: Vec<Dim> = match target.const_i64() {
            Some(t) => t.iter().map(|&n| Dim::Fixed(n.max(0) as u64)).collect(),
            None => {
                let rank =
                    target.info.shape.first().and_then(Dim::fixed).ok_or(
                        "a non-constant shape input must be 1-D of fixed length".to_string(),
                    )?;
                (0..rank).map(|_| ctx.namer.fresh()).collect()
            }
        };
        let shape = crate::graph::value::broadcast(&x.shape, &target_shape, ctx.namer)?;
        Ok(vec![(x.dtype, shape)])
    }
}

/// Splits into `sizes.len()` outputs along `axis` with constant sizes (input 1).
/// <https://onnx.ai/onnx/operators/onnx__Split.html>
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Split {
    pub axis: i64,
}

impl Op for Split {
    fn op_type(&self) -> &'static str {
        "Split"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![("axis", Attr::Int(self.axis))]
    }
    fn input_arity(&self) -> (usize, usize) {
        (2, 2)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let x = ctx.input(0)?.info;
        let axis = normalize_axis(self.axis, x.rank())?;
        let sizes = ctx
            .input(1)?
            .const_i64()
            .ok_or("split sizes must be a constant int64 tensor")?;
        if let Dim::Fixed(n) = x.shape[axis]
            && sizes.iter().sum::<i64>() != n as i64
        {
            return Err(format!(
                "split sizes {sizes:?} do not add up to dim {axis} of {}",
                x.describe()
            ));
        }
        Ok(sizes
            .iter()
            .map(|&s| {
                let mut shape = x.shape.clone();
                shape[axis] = Dim::Fixed(s.max(0) as u64);
                (x.dtype, shape)
            })
            .collect())
    }
}

/// `[start, start+delta, ...)` below `limit`, all scalars of one type.
/// <https://onnx.ai/onnx/operators/onnx__Range.html>
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Range;

impl Op for Range {
    fn op_type(&self) -> &'static str {
        "Range"
    }
    fn input_arity(&self) -> (usize, usize) {
        (3, 3)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let dtype = same_dtype(ctx, &[0, 1, 2], |d| d != DType::Bool, "a numeric type")?;
        for i in 0..3 {
            if ctx.input(i)?.info.rank() != 0 {
                return Err(format!(
                    "{} must be a scalar",
                    ctx.input(i)?.info.describe()
                ));
            }
        }
        Ok(vec![(dtype, vec![ctx.namer.fresh()])])
    }
}

/// Upper (`upper = true`) or lower triangle of the last two dims, offset by optional input 1.
/// <https://onnx.ai/onnx/operators/onnx__Trilu.html>
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trilu {
    pub upper: bool,
}

impl Op for Trilu {
    fn op_type(&self) -> &'static str {
        "Trilu"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![("upper", Attr::Int(i64::from(self.upper)))]
    }
    fn input_arity(&self) -> (usize, usize) {
        (1, 2)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let x = ctx.input(0)?.info;
        if x.rank() < 2 {
            return Err(format!("{} must have rank >= 2", x.describe()));
        }
        Ok(vec![(x.dtype, x.shape.clone())])
    }
}

/// A tensor of the shape given by input 0, filled with `value` (a one-element tensor).
/// <https://onnx.ai/onnx/operators/onnx__ConstantOfShape.html>
#[derive(Clone, Debug, PartialEq)]
pub struct ConstantOfShape {
    pub value: TensorData,
}

impl Op for ConstantOfShape {
    fn op_type(&self) -> &'static str {
        "ConstantOfShape"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![("value", Attr::Tensor(self.value.clone()))]
    }
    fn input_arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        int_input(ctx, 0, "shape")?;
        if self.value.numel() != 1 {
            return Err("value must hold exactly one element".into());
        }
        let target = ctx.input(0)?;
        let shape = match target.const_i64() {
            Some(t) => t.iter().map(|&n| Dim::Fixed(n.max(0) as u64)).collect(),
            None => {
                let rank =
                    target.info.shape.first().and_then(Dim::fixed).ok_or(
                        "a non-constant shape input must be 1-D of fixed length".to_string(),
                    )?;
                (0..rank).map(|_| ctx.namer.fresh()).collect()
            }
        };
        Ok(vec![(self.value.dtype(), shape)])
    }
    fn retyped(&self, from: DType, to: DType) -> Option<Box<dyn Op>> {
        if self.value.dtype() != from {
            return None;
        }
        let value = self.value.to_float_dtype_saturating(to).ok()?;
        Some(Box::new(ConstantOfShape { value }))
    }
}

#[cfg(test)]
#[allow(clippy::useless_vec)] // `dims!` builds a Vec
mod tests {
    use super::*;
    use crate::dims;

    #[test]
    fn minus_one_cancels_symbols() {
        let x = dims!["batch", "seq", 8, 4];
        assert_eq!(
            infer_minus_one(&x, &dims!["batch", "seq"]),
            Some(Dim::Fixed(32))
        );
        assert_eq!(
            infer_minus_one(&x, &dims![32, "seq"]),
            Some(Dim::sym("batch"))
        );
        assert_eq!(infer_minus_one(&x, &dims![32]), None);
    }

    #[test]
    fn slice_lengths() {
        assert_eq!(slice_len(10, 0, 3, 1), 3);
        assert_eq!(slice_len(10, -3, i64::MAX, 1), 3);
        assert_eq!(slice_len(10, 0, 10, 2), 5);
        assert_eq!(slice_len(10, 9, -11, -1), 10);
    }
}
