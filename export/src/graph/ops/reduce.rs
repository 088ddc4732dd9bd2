//! Reductions (opset 18: `axes` is a constant input): `ReduceMean`, `ReduceSum`, `ReduceMax`,
//! and `ArgMax`.

use crate::graph::op::{Attr, InferCtx, Op, OutputFact, same_dtype};
use crate::graph::value::normalize_axis;
use dalle_bundle::{DType, Dim};

fn reduced_shape(shape: &[Dim], axes: &[usize], keepdims: bool) -> Vec<Dim> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            if axes.contains(&i) {
                keepdims.then_some(Dim::Fixed(1))
            } else {
                Some(d.clone())
            }
        })
        .collect()
}

macro_rules! reduce_op {
    ($(#[$doc:meta])* $name:ident, $ty:literal) => {
        $(#[$doc])*
        /// The axes are a constant i64 input (input 1).
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name {
            pub keepdims: bool,
        }

        impl Op for $name {
            fn op_type(&self) -> &'static str {
                $ty
            }
            fn attributes(&self) -> Vec<(&'static str, Attr)> {
                vec![("keepdims", Attr::Int(i64::from(self.keepdims)))]
            }
            fn input_arity(&self) -> (usize, usize) {
                (2, 2)
            }
            fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
                let dtype = same_dtype(ctx, &[0], |d| d != DType::Bool, "a numeric type")?;
                let shape = ctx.shape(0)?.clone();
                let axes = ctx
                    .input(1)?
                    .const_i64()
                    .ok_or("axes must be a constant int64 tensor")?;
                let axes = axes
                    .iter()
                    .map(|&a| normalize_axis(a, shape.len()))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(vec![(dtype, reduced_shape(&shape, &axes, self.keepdims))])
            }
        }
    };
}

reduce_op!(/// Mean over `axes`.
    ReduceMean, "ReduceMean");
reduce_op!(/// Sum over `axes`.
    ReduceSum, "ReduceSum");
reduce_op!(/// Maximum over `axes`.
    ReduceMax, "ReduceMax");

/// Index of the maximum along `axis` (first occurrence on ties) → int64.
/// <https://onnx.ai/onnx/operators/onnx__ArgMax.html>
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArgMax {
    pub axis: i64,
    pub keepdims: bool,
}

impl Op for ArgMax {
    fn op_type(&self) -> &'static str {
        "ArgMax"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("axis", Attr::Int(self.axis)),
            ("keepdims", Attr::Int(i64::from(self.keepdims))),
            ("select_last_index", Attr::Int(0)),
        ]
    }
    fn input_arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        same_dtype(ctx, &[0], |d| d != DType::Bool, "a numeric type")?;
        let shape = ctx.shape(0)?.clone();
        let axis = normalize_axis(self.axis, shape.len())?;
        Ok(vec![(
            DType::I64,
            reduced_shape(&shape, &[axis], self.keepdims),
        )])
    }
}
