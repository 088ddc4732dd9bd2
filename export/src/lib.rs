//! `dalle-export`: reads DALL·E-1-family checkpoints and writes self-contained ONNX bundles.
//!
//! Layers, bottom up:
//! - [`proto`]: ONNX protobuf types (prost, generated and committed).
//! - [`tensor`]: tensor bytes with dtype and shape, as read from checkpoints.
//! - [`graph`]: the typed graph builder (wire-time shape inference, deterministic naming and
//!   bytes, validation, external data, text dump).
//! - [`checkpoint`]: PyTorch (zip + restricted pickle) and safetensors readers that never
//!   execute anything.
//! - [`layers`]: the neural-network layers every family shares (linear, layer norm, attention
//!   core, GELU variants); [`kv_cache`]: the decoder cache layouts and the attention step over
//!   each.
//! - [`bundle_writer`]: atomic bundle directories with `manifest.json`; [`staging`]: moving
//!   them into place (`--force` swaps) and cleaning up after killed exports.
//! - [`compat`]: `dalle-export check`, every node against an execution provider's support tables
//!   (TensorRT's ONNX parser, ONNX Runtime's CUDA and CPU kernels).
//! - [`tokenizer`]: the `tokenizer.json` a text-conditioned bundle carries (CLIP BPE, or a
//!   user-supplied Hugging Face file).
//!
//! This crate does not depend on ONNX Runtime; the runtime (`dalle-ort`) depends only on the
//! shared `dalle-bundle` contract.

pub mod bundle_writer;
pub mod checkpoint;
pub mod compat;
pub mod error;
pub mod families;
pub mod graph;
pub mod kv_cache;
pub mod layers;
pub mod proto;
pub mod staging;
pub mod tensor;
pub mod tokenizer;
pub mod weights;

pub use error::{ExportError, Result};
pub use graph::GraphBuilder;
pub use tensor::TensorData;
