//! The operator interface: every ONNX op the builder can emit is a typed struct implementing
//! [`Op`]. An op names its ONNX type, lists its attributes, states its arity, and infers its
//! outputs' dtypes and shapes from its inputs when it is wired.

use super::value::{DimNamer, Shape, ValueInfo};
use crate::tensor::TensorData;
use dalle_bundle::DType;

/// An attribute value (the subset of ONNX attribute kinds the builder emits).
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    String(String),
    Tensor(TensorData),
}

/// What inference can see of one input: its info and, for constants and initializers, its data.
#[derive(Clone, Copy, Debug)]
pub struct InputFact<'a> {
    pub info: &'a ValueInfo,
    pub constant: Option<&'a TensorData>,
}

impl InputFact<'_> {
    /// The constant's values as i64 (for shape-like inputs such as Reshape's `shape`).
    pub fn const_i64(&self) -> Option<Vec<i64>> {
        self.constant.and_then(|t| t.to_i64_vec().ok())
    }
}

/// Context handed to [`Op::infer`].
pub struct InferCtx<'a> {
    /// Inputs in order; `None` for an omitted optional input.
    pub inputs: &'a [Option<InputFact<'a>>],
    pub namer: &'a mut DimNamer,
}

impl<'a> InferCtx<'a> {
    /// Input `i`, which must be present.
    pub fn input(&self, i: usize) -> Result<InputFact<'a>, String> {
        self.inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("input {i} is required"))
    }

    /// Input `i` if given.
    pub fn optional(&self, i: usize) -> Option<InputFact<'a>> {
        self.inputs.get(i).copied().flatten()
    }

    /// Input `i`'s shape.
    pub fn shape(&self, i: usize) -> Result<&'a Shape, String> {
        Ok(&self.input(i)?.info.shape)
    }

    /// Input `i`'s dtype.
    pub fn dtype(&self, i: usize) -> Result<DType, String> {
        Ok(self.input(i)?.info.dtype)
    }
}

/// Inferred dtype and shape of one output.
pub type OutputFact = (DType, Shape);

/// An ONNX operator with typed attributes.
pub trait Op: 'static {
    /// ONNX op type (`"MatMul"`).
    fn op_type(&self) -> &'static str;

    /// Operator domain; `""` is the default ONNX domain.
    fn domain(&self) -> &'static str {
        ""
    }

    /// Attributes (any order: the builder sorts them by name).
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        Vec::new()
    }

    /// Allowed number of inputs, inclusive (`(min, max)`); optional inputs count.
    fn input_arity(&self) -> (usize, usize);

    /// Dtypes and shapes of the outputs, or a message saying which operand is wrong.
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String>;

    /// For ops whose attributes fix a float output dtype (`Cast`'s `to`, `ConstantOfShape`'s
    /// `value`): the same op producing `to` where it produced `from`. `None` for every other op
    /// (their output dtypes follow their inputs). The precision pass (`graph/precision.rs`)
    /// calls it; an op added with such an attribute must implement it.
    fn retyped(&self, _from: DType, _to: DType) -> Option<Box<dyn Op>> {
        None
    }
}

/// Checks that all listed inputs share one dtype, which must satisfy `allowed`.
pub fn same_dtype(
    ctx: &InferCtx<'_>,
    inputs: &[usize],
    allowed: impl Fn(DType) -> bool,
    what: &str,
) -> Result<DType, String> {
    let first = ctx.input(inputs.first().copied().unwrap_or(0))?;
    let dtype = first.info.dtype;
    if !allowed(dtype) {
        return Err(format!(
            "operand {} has dtype {dtype}, expected {what}",
            first.info.describe()
        ));
    }
    for &i in inputs.iter().skip(1) {
        let other = ctx.input(i)?;
        if other.info.dtype != dtype {
            return Err(format!(
                "operands {} and {} have different dtypes",
                first.info.describe(),
                other.info.describe()
            ));
        }
    }
    Ok(dtype)
}
