//! Matrix products: `MatMul` (numpy semantics, batched with broadcasting) and `Gemm`, and
//! `DequantizeLinear` (per-axis int8 → float, the QDQ form of `--precision int8`).

use crate::graph::op::{Attr, InferCtx, Op, OutputFact, same_dtype};
use crate::graph::value::broadcast;
use dalle_bundle::{DType, Dim, dtype::format_dims};

fn float(d: DType) -> bool {
    d.is_float()
}

fn check_inner(k1: &Dim, k2: &Dim, a: &[Dim], b: &[Dim]) -> Result<(), String> {
    match (k1, k2) {
        (Dim::Fixed(x), Dim::Fixed(y)) if x != y => Err(format!(
            "inner dimensions differ: {} x {}",
            format_dims(a),
            format_dims(b)
        )),
        _ => Ok(()),
    }
}

/// Matrix product with numpy `matmul` semantics (1-D operands are promoted and the promoted
/// dim removed; leading dims broadcast). <https://onnx.ai/onnx/operators/onnx__MatMul.html>
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MatMul;

impl Op for MatMul {
    fn op_type(&self) -> &'static str {
        "MatMul"
    }
    fn input_arity(&self) -> (usize, usize) {
        (2, 2)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let dtype = same_dtype(ctx, &[0, 1], float, "a float type")?;
        let a = ctx.shape(0)?.clone();
        let b = ctx.shape(1)?.clone();
        if a.is_empty() || b.is_empty() {
            return Err("MatMul operands must have rank >= 1".into());
        }
        let (a2, a_vec) = if a.len() == 1 {
            (vec![Dim::Fixed(1), a[0].clone()], true)
        } else {
            (a.clone(), false)
        };
        let (b2, b_vec) = if b.len() == 1 {
            (vec![b[0].clone(), Dim::Fixed(1)], true)
        } else {
            (b.clone(), false)
        };
        let (m, k1) = (&a2[a2.len() - 2], &a2[a2.len() - 1]);
        let (k2, n) = (&b2[b2.len() - 2], &b2[b2.len() - 1]);
        check_inner(k1, k2, &a, &b)?;
        let mut shape = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2], ctx.namer)?;
        if !a_vec {
            shape.push(m.clone());
        }
        if !b_vec {
            shape.push(n.clone());
        }
        Ok(vec![(dtype, shape)])
    }
}

/// `alpha * A' * B' + beta * C` on 2-D operands (`'` = optional transpose).
/// <https://onnx.ai/onnx/operators/onnx__Gemm.html>
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl Default for Gemm {
    fn default() -> Gemm {
        Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
        }
    }
}

impl Op for Gemm {
    fn op_type(&self) -> &'static str {
        "Gemm"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("alpha", Attr::Float(self.alpha)),
            ("beta", Attr::Float(self.beta)),
            ("transA", Attr::Int(i64::from(self.trans_a))),
            ("transB", Attr::Int(i64::from(self.trans_b))),
        ]
    }
    fn input_arity(&self) -> (usize, usize) {
        (2, 3)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let dtype = same_dtype(ctx, &[0, 1], float, "a float type")?;
        let a = ctx.shape(0)?;
        let b = ctx.shape(1)?;
        if a.len() != 2 || b.len() != 2 {
            return Err(format!(
                "Gemm needs 2-D operands, got {} and {}",
                format_dims(a),
                format_dims(b)
            ));
        }
        let (m, k1) = if self.trans_a {
            (&a[1], &a[0])
        } else {
            (&a[0], &a[1])
        };
        let (k2, n) = if self.trans_b {
            (&b[1], &b[0])
        } else {
            (&b[0], &b[1])
        };
        check_inner(k1, k2, a, b)?;
        let shape = vec![m.clone(), n.clone()];
        if let Some(c) = ctx.optional(2) {
            if c.info.dtype != dtype {
                return Err(format!("C {} has the wrong dtype", c.info.describe()));
            }
            broadcast(&shape, &c.info.shape, ctx.namer)?;
        }
        Ok(vec![(dtype, shape)])
    }
}

/// `(x − zero_point) · scale` per slice along `axis`, int8 `x` with one float32 scale per slice
/// (`x_zero_point` omitted: 0, as TensorRT requires). Opset 13's per-axis form.
/// <https://onnx.ai/onnx/operators/onnx__DequantizeLinear.html>
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DequantizeLinear {
    pub axis: i64,
}

impl Op for DequantizeLinear {
    fn op_type(&self) -> &'static str {
        "DequantizeLinear"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![("axis", Attr::Int(self.axis))]
    }
    fn input_arity(&self) -> (usize, usize) {
        (2, 2)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let x = ctx.input(0)?.info;
        if x.dtype != DType::I8 {
            return Err(format!("{} must be int8", x.describe()));
        }
        let scale = ctx.input(1)?.info;
        if scale.dtype != DType::F32 {
            return Err(format!("{} must be float", scale.describe()));
        }
        let axis = crate::graph::value::normalize_axis(self.axis, x.rank())?;
        if scale.rank() != 1 || scale.shape.first() != x.shape.get(axis) {
            return Err(format!(
                "scale {} must have one entry per slice of axis {} of {}",
                scale.describe(),
                self.axis,
                x.describe()
            ));
        }
        Ok(vec![(DType::F32, x.shape.clone())])
    }
}
