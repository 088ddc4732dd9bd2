//! Checkpoint readers that never execute anything.
//!
//! - [`read_pytorch`]: `torch.save` zip archives (state dicts, nested training dicts, whole
//!   pickled modules such as the OpenAI dVAE `encoder.pkl`). The pickle is run by a small VM
//!   (`pickle.rs`) whose globals are a fixed whitelist (`globals.rs`) plus a caller-provided
//!   [`ClassAllowList`] of classes that become inert [`PickleValue::Object`] records. Tensors
//!   are materialized as contiguous [`TensorData`](crate::tensor::TensorData) (`strided.rs`).
//! - [`module_state_dict`] / [`tensor_dict`]: flat `name → tensor` maps from the value tree.
//! - [`read_safetensors`]: safetensors files.
//!
//! Layout: `error.rs` (the error type), `value.rs` (the value tree), `globals.rs` (whitelist),
//! `pickle.rs` (VM), `strided.rs` (views → dense tensors), `pytorch.rs` (zip container),
//! `module.rs` (state dicts), `safetensors.rs`.

mod error;
mod globals;
mod module;
mod pickle;
mod pytorch;
mod safetensors;
mod strided;
mod value;

#[cfg(test)]
mod tests;

pub use error::CheckpointError;
pub use globals::{ClassAllowList, DVAE_CLASSES, RECORD_CLASSES, TORCH_NN_CLASSES};
pub use module::{module_state_dict, tensor_dict};
pub use pickle::unpickle;
pub use pytorch::read_pytorch;
pub use safetensors::read_safetensors;
pub use value::PickleValue;
