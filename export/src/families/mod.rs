//! One module per model family: each turns a checkpoint into graphs for the bundle.
//!
//! Every family has one entry point that adds it to a bundle, `<family>::add_to_bundle(&mut
//! writer, …)`, which the `dalle-export` subcommands and the tests both call.

pub mod clip;
pub mod dalle_pytorch;
pub mod min_dalle;
pub mod openai_dvae;
pub mod vqgan;

/// Where an export reports what it read (the CLI prints each line to stderr).
pub type Progress = fn(&str);

/// A [`Progress`] that drops every line.
pub fn quiet(_: &str) {}
