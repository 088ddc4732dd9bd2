//! The runtime's error type.
//!
//! Every variant names what it is about (a path, a graph, a tensor) so the message stands on its
//! own when printed by the binary with `{:#}`. Variants that exist before ONNX Runtime is loaded
//! (library discovery) never hold an [`ort::Error`]: creating one before the library is loaded
//! panics inside `ort`.

use crate::contract::ContractError;
use dalle_bundle::{BundleError, GraphRole};
use std::path::PathBuf;

/// Errors of the runtime library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No ONNX Runtime library was found in any of the places searched.
    #[error(
        "ONNX Runtime library not found; searched:\n{}\nfix: run `{fix}` (or pass --ort-lib PATH / set ORT_DYLIB_PATH)",
        format_searched(searched)
    )]
    OrtLibraryNotFound {
        searched: Vec<PathBuf>,
        /// The command that installs a suitable library.
        fix: String,
    },

    /// A library path given explicitly (flag or environment) does not exist.
    #[error(
        "ONNX Runtime library {path} (from {origin}) does not exist; fix: run `{fix}` or correct the path"
    )]
    OrtLibraryMissing {
        path: PathBuf,
        origin: &'static str,
        fix: String,
    },

    /// `dlopen` of the library failed, or it is not a compatible ONNX Runtime.
    #[error("cannot load ONNX Runtime from {path}")]
    OrtLoad {
        path: PathBuf,
        #[source]
        source: ort::LoadDynamicError,
    },

    /// ONNX Runtime is used before [`crate::ort_lib::init`] succeeded.
    #[error("ONNX Runtime is not loaded yet (internal error: call ort_lib::init first)")]
    OrtNotLoaded,

    /// An ONNX Runtime call failed.
    #[error("{context}")]
    Ort {
        context: String,
        #[source]
        source: ort::Error,
    },

    /// An execution provider could not be registered (never silently replaced by the CPU).
    #[error("cannot use the {provider} execution provider for graph `{role}`: {cause}{hint}")]
    ProviderRegistration {
        provider: &'static str,
        role: GraphRole,
        /// Extra advice (leading newline included), empty when there is none.
        hint: String,
        /// ONNX Runtime's error (part of the message, so the advice can follow it).
        cause: ort::Error,
    },

    /// The execution-provider settings cannot be built from the manifest.
    #[error("execution provider settings for graph `{role}`: {message}")]
    EpPlan { role: GraphRole, message: String },

    /// Reading or validating the manifest failed.
    #[error(transparent)]
    Bundle(#[from] BundleError),

    /// The bundle directory is missing or is not a directory.
    #[error("bundle directory {0} does not exist or is not a directory")]
    BundleDir(PathBuf),

    /// A graph file named by the manifest is missing.
    #[error("graph `{role}`: file {path} named in the manifest does not exist")]
    GraphFileMissing { role: GraphRole, path: PathBuf },

    /// A graph's real inputs/outputs differ from the manifest.
    #[error(transparent)]
    Contract(#[from] ContractError),

    /// A tensor handed to or returned by a graph has the wrong shape or values.
    #[error("graph `{role}`, tensor `{tensor}`: {message}")]
    Tensor {
        role: GraphRole,
        tensor: String,
        message: String,
    },

    /// A graph attribute the runtime needs is missing or malformed in the manifest.
    #[error("graph `{role}`: manifest attribute `{attribute}` {message}")]
    Attribute {
        role: GraphRole,
        attribute: &'static str,
        message: String,
    },

    /// A `.npy` file could not be read or has the wrong content.
    #[error("{path}: {message}")]
    Npy { path: PathBuf, message: String },

    /// An image could not be read or written.
    /// (`image`'s errors repeat their own source in their message, so the error is kept as part
    /// of the message rather than exposed as a `source`, which would print it twice.)
    #[error("{path}: {cause}")]
    Image {
        path: PathBuf,
        cause: image::ImageError,
    },

    /// Invalid user input that is not tied to one file (sizes, token values, ...).
    #[error("{0}")]
    InvalidInput(String),

    /// A bundle's `tokenizer.json` is missing, cannot be parsed, or fails on a prompt.
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },

    /// A prompt has more tokens than the text context (when truncation is not allowed).
    #[error(
        "the prompt has {tokens} text tokens, more than the model's context of {context_length}; shorten it or allow truncation"
    )]
    PromptTooLong {
        tokens: usize,
        context_length: usize,
    },

    /// A generation or sampling setting is out of range (`top_k = 0`, `temperature <= 0`, ...).
    #[error("invalid {setting}: {message}")]
    InvalidSetting {
        setting: &'static str,
        message: String,
    },

    /// Generation needs the manifest's token layout, and this bundle has none.
    #[error(
        "the bundle's manifest has no `token_layout` (needed to build decoder input ids); \
         re-export the bundle with a decoder"
    )]
    NoTokenLayout,

    /// A file system operation failed.
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with the runtime's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an `ort` error with a sentence saying what was being done.
    pub fn ort(context: impl Into<String>, source: impl Into<ort::Error>) -> Error {
        Error::Ort {
            context: context.into(),
            source: source.into(),
        }
    }

    /// A shape/value error about one tensor of one graph.
    pub fn tensor(role: GraphRole, tensor: &str, message: impl Into<String>) -> Error {
        Error::Tensor {
            role,
            tensor: tensor.to_string(),
            message: message.into(),
        }
    }
}

fn format_searched(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("  {}", p.display()))
        .collect::<Vec<_>>()
        .join("\n")
}
