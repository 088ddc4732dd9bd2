//! The exporter's error type.
//!
//! Errors carry the names a user needs to act on: the graph node and operands for wiring errors,
//! the tensor name with expected and actual shapes for weight errors, the file for I/O errors.

use std::path::PathBuf;

/// Everything that can go wrong while reading a checkpoint or building and writing a graph.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A node could not be wired: bad operand types or shapes, wrong arity, bad attributes.
    #[error("in {node}: {message}")]
    Node { node: String, message: String },

    /// The finished graph breaks a structural rule (see `graph::check`).
    #[error("invalid graph `{graph}`: {message}")]
    InvalidGraph { graph: String, message: String },

    /// Malformed tensor data (byte count, shape, dtype).
    #[error("tensor: {0}")]
    Tensor(String),

    /// A checkpoint could not be read (format, corruption, forbidden pickle globals).
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),

    /// A checkpoint's tensors or hyperparameters do not match what the model family expects.
    #[error("{0}")]
    Weights(String),

    /// Hyperparameters or options this exporter does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// The output directory exists and replacing it was not asked for.
    #[error("{}: already exists (pass --force to replace it)", path.display())]
    DestinationExists { path: PathBuf },

    /// The output path cannot take a bundle (a file, a link, a directory of other things).
    #[error("{}: {why}", path.display())]
    Destination { path: PathBuf, why: String },

    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Bundle(#[from] dalle_bundle::BundleError),

    /// A hyperparameter outside its documented limit (`dalle_bundle::limits`), or sizes whose
    /// combination overflows.
    #[error("unsupported: {0}")]
    Limit(#[from] dalle_bundle::limits::LimitError),

    /// A tokenizer file could not be built or read.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerFileError),

    /// What was being done when `source` happened (e.g. `reading encoder.pkl`).
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<ExportError>,
    },
}

impl ExportError {
    /// A wiring error for `node`.
    pub fn node(node: impl Into<String>, message: impl Into<String>) -> ExportError {
        ExportError::Node {
            node: node.into(),
            message: message.into(),
        }
    }

    /// This error, as the cause of a failure while doing `context`.
    pub fn context(self, context: impl Into<String>) -> ExportError {
        ExportError::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ExportError {
        ExportError::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`ExportError`] as the default error.
pub type Result<T, E = ExportError> = std::result::Result<T, E>;
