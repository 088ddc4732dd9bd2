//! The op catalogue: one typed struct per ONNX operator the builder emits, grouped by kind.
//!
//! Target opset: [`crate::graph::OPSET`] (18) in the default domain, so graphs are portable
//! (ORT on all EPs, TensorRT's ONNX parser); the one exception is `contrib.rs`, emitted only
//! when an export option asks for it. Each file's doc lists its ops; each
//! struct's doc links the operator spec. Attributes are typed fields, never string maps.

mod contrib;
mod elementwise;
mod linalg;
mod nn;
mod reduce;
mod shape;

pub use contrib::*;
pub use elementwise::*;
pub use linalg::*;
pub use nn::*;
pub use reduce::*;
pub use shape::*;
