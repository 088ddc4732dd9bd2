//! One module per model family: each turns a checkpoint into graphs for the bundle.

pub mod clip;
pub mod dalle_pytorch;
pub mod openai_dvae;
