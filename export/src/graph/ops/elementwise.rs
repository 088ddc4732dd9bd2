//! Element-wise ops: binary arithmetic and comparison with numpy broadcasting (Add, Sub, Mul,
//! Div, Pow, Max, Min, Equal, Less, Greater, And, Or, Xor), unary math (Relu, Sigmoid, Tanh,
//! Exp, Log, Sqrt, Neg, Erf, Abs, Reciprocal, Not, Sin, Cos, Identity), `Where`, `Cast` and
//! `Clip`.
//! Spec: <https://onnx.ai/onnx/operators/> (opset 18 versions).

use crate::graph::op::{Attr, InferCtx, Op, OutputFact, same_dtype};
use crate::graph::value::broadcast;
use dalle_bundle::DType;

fn numeric(d: DType) -> bool {
    d != DType::Bool
}

fn float(d: DType) -> bool {
    d.is_float()
}

macro_rules! binary_op {
    ($(#[$doc:meta])* $name:ident, $ty:literal, $allowed:expr, $what:literal, $out:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub struct $name;

        impl Op for $name {
            fn op_type(&self) -> &'static str {
                $ty
            }
            fn input_arity(&self) -> (usize, usize) {
                (2, 2)
            }
            fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
                let dtype = same_dtype(ctx, &[0, 1], $allowed, $what)?;
                let a = ctx.shape(0)?;
                let b = ctx.shape(1)?;
                let shape = broadcast(a, b, ctx.namer)?;
                let out: fn(DType) -> DType = $out;
                Ok(vec![(out(dtype), shape)])
            }
        }
    };
}

binary_op!(/// `A + B`.
    Add, "Add", numeric, "a numeric type", |d| d);
binary_op!(/// `A - B`.
    Sub, "Sub", numeric, "a numeric type", |d| d);
binary_op!(/// `A * B`.
    Mul, "Mul", numeric, "a numeric type", |d| d);
binary_op!(/// `A / B` (integer division truncates).
    Div, "Div", numeric, "a numeric type", |d| d);
binary_op!(/// `A ^ B` (both operands of one float type here).
    Pow, "Pow", float, "a float type", |d| d);
binary_op!(/// Element-wise maximum of two tensors.
    Max, "Max", numeric, "a numeric type", |d| d);
binary_op!(/// Element-wise minimum of two tensors.
    Min, "Min", numeric, "a numeric type", |d| d);
binary_op!(/// `A == B` → bool.
    Equal, "Equal", |_| true, "any type", |_| DType::Bool);
binary_op!(/// `A < B` → bool.
    Less, "Less", numeric, "a numeric type", |_| DType::Bool);
binary_op!(/// `A <= B` → bool.
    LessOrEqual, "LessOrEqual", numeric, "a numeric type", |_| DType::Bool);
binary_op!(/// `A > B` → bool.
    Greater, "Greater", numeric, "a numeric type", |_| DType::Bool);
binary_op!(/// `A >= B` → bool.
    GreaterOrEqual, "GreaterOrEqual", numeric, "a numeric type", |_| DType::Bool);
binary_op!(/// Logical and of two bool tensors.
    And, "And", |d| d == DType::Bool, "bool", |d| d);
binary_op!(/// Logical or of two bool tensors.
    Or, "Or", |d| d == DType::Bool, "bool", |d| d);
binary_op!(/// Logical exclusive or of two bool tensors (`A != B`; TensorRT's `Equal` takes no bool).
    Xor, "Xor", |d| d == DType::Bool, "bool", |d| d);

macro_rules! unary_op {
    ($(#[$doc:meta])* $name:ident, $ty:literal, $allowed:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub struct $name;

        impl Op for $name {
            fn op_type(&self) -> &'static str {
                $ty
            }
            fn input_arity(&self) -> (usize, usize) {
                (1, 1)
            }
            fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
                let dtype = same_dtype(ctx, &[0], $allowed, $what)?;
                Ok(vec![(dtype, ctx.shape(0)?.clone())])
            }
        }
    };
}

unary_op!(/// `max(x, 0)`.
    Relu, "Relu", numeric, "a numeric type");
unary_op!(/// `1 / (1 + exp(-x))`.
    Sigmoid, "Sigmoid", float, "a float type");
unary_op!(/// Hyperbolic tangent.
    Tanh, "Tanh", float, "a float type");
unary_op!(/// `e^x`.
    Exp, "Exp", float, "a float type");
unary_op!(/// Natural logarithm.
    Log, "Log", float, "a float type");
unary_op!(/// Square root.
    Sqrt, "Sqrt", float, "a float type");
unary_op!(/// `-x`.
    Neg, "Neg", numeric, "a numeric type");
unary_op!(/// Gauss error function (for exact GELU).
    Erf, "Erf", float, "a float type");
unary_op!(/// `|x|`.
    Abs, "Abs", numeric, "a numeric type");
unary_op!(/// `1 / x`.
    Reciprocal, "Reciprocal", float, "a float type");
unary_op!(/// Logical not.
    Not, "Not", |d| d == DType::Bool, "bool");
unary_op!(/// Sine.
    Sin, "Sin", float, "a float type");
unary_op!(/// Cosine.
    Cos, "Cos", float, "a float type");
unary_op!(/// Pass-through (used to give a value a second name).
    Identity, "Identity", |_| true, "any type");

/// `cond ? x : y` with broadcasting.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Where;

impl Op for Where {
    fn op_type(&self) -> &'static str {
        "Where"
    }
    fn input_arity(&self) -> (usize, usize) {
        (3, 3)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        same_dtype(ctx, &[0], |d| d == DType::Bool, "bool (the condition)")?;
        let dtype = same_dtype(ctx, &[1, 2], |_| true, "any type")?;
        let cx = broadcast(ctx.shape(0)?, ctx.shape(1)?, ctx.namer)?;
        let shape = broadcast(&cx, ctx.shape(2)?, ctx.namer)?;
        Ok(vec![(dtype, shape)])
    }
}

/// Element type conversion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cast {
    pub to: DType,
}

impl Op for Cast {
    fn op_type(&self) -> &'static str {
        "Cast"
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![(
            "to",
            Attr::Int(i64::from(crate::graph::proto_io::onnx_dtype(self.to))),
        )]
    }
    fn input_arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        Ok(vec![(self.to, ctx.shape(0)?.clone())])
    }
    fn retyped(&self, from: DType, to: DType) -> Option<Box<dyn Op>> {
        (self.to == from).then(|| Box::new(Cast { to }) as Box<dyn Op>)
    }
}

/// Clamp to `[min, max]`; both bounds are optional scalar inputs of the input's type.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Clip;

impl Op for Clip {
    fn op_type(&self) -> &'static str {
        "Clip"
    }
    fn input_arity(&self) -> (usize, usize) {
        (1, 3)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let x = ctx.input(0)?;
        for i in 1..3 {
            if let Some(bound) = ctx.optional(i)
                && (bound.info.dtype != x.info.dtype || bound.info.rank() != 0)
            {
                return Err(format!(
                    "bound {} must be a scalar of {}'s type",
                    bound.info.describe(),
                    x.info.describe()
                ));
            }
        }
        Ok(vec![(x.info.dtype, x.info.shape.clone())])
    }
}
