//! The bundle contract: what `dalle-export` writes and `dalle-ort` reads.
//!
//! A *bundle* is a directory holding ONNX graphs (`*.onnx`, optionally `*.onnx.data`), an
//! optional `tokenizer.json`, and `manifest.json`. This crate is the single place that defines
//! the manifest's types ([`manifest`]), every graph's input/output names ([`io`]) and
//! the graph attributes both sides read ([`attributes`]), so the
//! runtime cannot drift from the exporter: both sides compile against the same constants.
//!
//! The crate is deliberately tiny (serde only) so the runtime can depend on it without pulling in
//! the graph builder, and the exporter without pulling in ONNX Runtime.

pub mod attributes;
pub mod dtype;
pub mod io;
pub mod limits;
pub mod manifest;
mod validate;

pub use attributes::{
    AttributeError, ClipImageAttributes, ClipTextAttributes, ClipTowerAttributes,
    DecoderAttributes, DvaeAttributes, KvCacheAttribute, LogitsKind, MinDalleAttributes, Precision,
    PrecisionAttributes, Provider, QuantFormat, VqKindAttribute, VqganAttributes,
};
pub use dtype::{DType, Dim};
pub use manifest::{
    ClipInfo, DimRange, GraphRole, GraphSpec, Manifest, ModelFamily, Provenance, SamplingDefaults,
    SourceFile, TensorSpec, TokenLayout,
};

/// Errors reading or validating a bundle's manifest.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid manifest")]
    Json {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: manifest format version {found} is not supported by this build (supported: {supported}); re-export the bundle with a matching dalle-export"
    )]
    UnsupportedVersion {
        path: std::path::PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("invalid manifest: {0}")]
    Invalid(String),
    /// A manifest number outside its [`limits`] (or an overflowing combination of them).
    #[error("invalid manifest: {0}")]
    Limit(#[from] limits::LimitError),
    #[error("the bundle has no `{role}` graph (it has: {available})")]
    MissingGraph { role: GraphRole, available: String },
}

/// `Result` with [`BundleError`] as the default error.
pub type Result<T, E = BundleError> = std::result::Result<T, E>;
