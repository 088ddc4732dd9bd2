//! Checkpoint readers that never execute anything.
//!
//! - [`read_pytorch`]: `torch.save` zip archives (state dicts, nested training dicts, whole
//!   pickled modules such as the OpenAI dVAE `encoder.pkl`). The pickle is run by a small VM
//!   (`pickle.rs`) whose globals are a fixed whitelist (`globals.rs`) plus a caller-provided
//!   [`ClassAllowList`] of classes that become inert [`PickleValue::Object`] records. Tensors
//!   are file-backed [`TensorData`](crate::tensor::TensorData) views of their storages, read
//!   (and made contiguous) only when written (`strided.rs`).
//! - [`module_state_dict`] / [`tensor_dict`]: flat `name → tensor` maps from the value tree.
//! - [`read_safetensors`]: safetensors files.
//!
//!
//! Hostile files: only regular files are opened ([`open_regular`], before anything reads
//! them); shared pickle values stay shared; everything a file can make the reader produce is
//! charged to one budget of its size + [`EXPANSION_ALLOWANCE`] (`budget.rs`); zip entries may
//! not overlap; every size read from a file is checked before it sizes anything.
//!
//! Layout: `error.rs` (the error type), `file.rs` (opening files, ranged reads), `budget.rs`,
//! `value.rs` (the value tree), `globals.rs` (whitelist), `pickle.rs` (VM), `strided.rs`
//! (storage views → file-backed tensors), `pytorch.rs` (zip container), `module.rs` (state
//! dicts), `safetensors.rs`.

mod budget;
mod error;
mod file;
mod globals;
mod module;
mod pickle;
mod pytorch;
mod safetensors;
mod strided;
mod value;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;

pub use self::safetensors::read_safetensors;
pub use budget::EXPANSION_ALLOWANCE;
pub use error::CheckpointError;
pub use file::open_regular;
pub use globals::{ClassAllowList, DVAE_CLASSES, RECORD_CLASSES, TORCH_NN_CLASSES};
pub use module::{module_state_dict, tensor_dict};
pub use pickle::unpickle;
pub use pytorch::read_pytorch;
pub use value::PickleValue;
