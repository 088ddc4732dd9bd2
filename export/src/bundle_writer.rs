//! Writes a bundle directory atomically.
//!
//! Everything is written into a hidden staging directory next to the destination
//! (`.<name>.partial-<pid>`); [`BundleWriter::commit`] writes `manifest.json` last and moves
//! the staging directory into place (`crate::staging`: the swap, destination checks, and
//! cleanup after killed exports). A failed or interrupted export never leaves a half-written
//! bundle at the destination: dropping an uncommitted writer removes the staging directory, and
//! an existing destination is only replaced on commit (and only with `overwrite`).

use crate::error::{ExportError, Result};
use crate::graph::GraphBuilder;
use crate::graph::precision::PrecisionPolicy;
use crate::graph::proto_io::{ExternalData, write_finished};
use dalle_bundle::manifest::MANIFEST_FILE;
use dalle_bundle::{DimRange, GraphRole, GraphSpec, Manifest, ModelFamily, Provenance, SourceFile};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// When initializers go to `<graph>.onnx.data` instead of inside the `.onnx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalDataPolicy {
    /// External when the graph's initializers total at least `model_bytes`; then every
    /// initializer of at least `tensor_bytes` moves out.
    Auto {
        model_bytes: usize,
        tensor_bytes: usize,
    },
    /// Always external (tensors of at least `tensor_bytes`).
    Always { tensor_bytes: usize },
    /// Never (fails past protobuf's 2 GB limit).
    Never,
}

impl Default for ExternalDataPolicy {
    fn default() -> Self {
        ExternalDataPolicy::Auto {
            model_bytes: 64 << 20,
            tensor_bytes: 1024,
        }
    }
}

impl std::str::FromStr for ExternalDataPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(ExternalDataPolicy::default()),
            "always" => Ok(ExternalDataPolicy::Always { tensor_bytes: 1024 }),
            "never" => Ok(ExternalDataPolicy::Never),
            other => Err(format!(
                "unknown external-data policy `{other}` (auto, always, never)"
            )),
        }
    }
}

/// A graph ready to be added: the builder plus what the manifest needs beyond its I/O.
pub struct GraphEntry {
    pub role: GraphRole,
    pub graph: GraphBuilder,
    pub dim_ranges: BTreeMap<String, DimRange>,
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// Builds a bundle in a staging directory; see the module docs.
pub struct BundleWriter {
    destination: PathBuf,
    staging: PathBuf,
    overwrite: bool,
    external: ExternalDataPolicy,
    manifest: Manifest,
    precision: PrecisionPolicy,
    committed: bool,
}

impl BundleWriter {
    /// Starts a bundle for `destination`. Fails if it exists and `overwrite` is false.
    pub fn create(
        destination: &Path,
        family: ModelFamily,
        provenance: Provenance,
        overwrite: bool,
        external: ExternalDataPolicy,
    ) -> Result<BundleWriter> {
        crate::staging::check_destination(destination, overwrite)?;
        let (parent, name) = crate::staging::split(destination)?;
        std::fs::create_dir_all(&parent).map_err(|e| ExportError::io(&parent, e))?;
        let recovered = crate::staging::recover(&parent, &name)?;
        for p in &recovered.removed_staging {
            tracing::info!(
                "removed {} (left by an export that was killed)",
                p.display()
            );
        }
        if recovered.restored_old {
            tracing::warn!(
                "{}: restored the previous bundle, left aside by an export killed while replacing it",
                destination.display()
            );
        }
        let staging = crate::staging::staging_dir(&parent, &name);
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| ExportError::io(&staging, e))?;
        }
        std::fs::create_dir(&staging).map_err(|e| ExportError::io(&staging, e))?;
        Ok(BundleWriter {
            destination: destination.to_path_buf(),
            staging,
            overwrite,
            external,
            manifest: Manifest::new(family, provenance),
            precision: PrecisionPolicy::default(),
            committed: false,
        })
    }

    /// The precision every graph added from now on is written in (`--precision`; default
    /// float32). The writer applies it to each graph ([`GraphBuilder::with_precision`]) and
    /// records the graph's `precision` attribute, so a family gets every precision without
    /// knowing about it.
    pub fn set_precision(&mut self, policy: PrecisionPolicy) {
        self.precision = policy;
    }

    /// The manifest being built (token layout, sampling defaults, notes).
    pub fn manifest_mut(&mut self) -> &mut Manifest {
        &mut self.manifest
    }

    /// Finishes (validates) and writes one graph, recording it in the manifest.
    pub fn add_graph(&mut self, entry: GraphEntry) -> Result<GraphSpec> {
        let GraphEntry {
            role,
            graph,
            dim_ranges,
            mut attributes,
        } = entry;
        let (graph, precision) = graph.with_precision(&self.precision)?;
        precision.insert_into(&mut attributes);
        if self.manifest.graphs.contains_key(&role) {
            return Err(ExportError::Unsupported(format!(
                "graph `{role}` added twice"
            )));
        }
        let inputs = graph.input_specs();
        let outputs = graph.output_specs();
        // Initializer data stays aside (file-backed tensors unread) and is streamed out.
        let model = graph.finish_streaming()?;
        let file = role.file_name();
        let initializer_bytes = model.initializer_bytes();
        let ext = match self.external {
            ExternalDataPolicy::Auto {
                model_bytes,
                tensor_bytes,
            } if initializer_bytes >= model_bytes => Some(ExternalData {
                file_name: format!("{file}.data"),
                threshold_bytes: tensor_bytes,
            }),
            ExternalDataPolicy::Always { tensor_bytes } => Some(ExternalData {
                file_name: format!("{file}.data"),
                threshold_bytes: tensor_bytes,
            }),
            _ => None,
        };
        let written = write_finished(model, &self.staging.join(&file), ext.as_ref())?;
        let spec = GraphSpec {
            file,
            external_data: written
                .data_path
                .as_ref()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned()),
            inputs,
            outputs,
            dim_ranges,
            attributes,
        };
        self.manifest.graphs.insert(role, spec.clone());
        Ok(spec)
    }

    /// Writes an extra file (e.g. `tokenizer.json`) into the bundle.
    pub fn add_file(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.staging.join(name);
        std::fs::write(&path, bytes).map_err(|e| ExportError::io(&path, e))
    }

    /// Writes the manifest and moves the bundle into place.
    pub fn commit(mut self) -> Result<PathBuf> {
        self.manifest.validate()?;
        let manifest_path = self.staging.join(MANIFEST_FILE);
        std::fs::write(&manifest_path, self.manifest.to_json())
            .map_err(|e| ExportError::io(&manifest_path, e))?;
        let dest = self.destination.clone();
        // Refuses a destination someone else created meanwhile (without `overwrite`) or one
        // that is not a bundle; swaps atomically where the file system can.
        crate::staging::install(&self.staging, &dest, self.overwrite)?;
        self.committed = true;
        Ok(dest)
    }
}

impl Drop for BundleWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// Size and SHA-256 of a source file, for the manifest's provenance. Only regular files are
/// read (a FIFO or `/dev/zero` would never end).
pub fn source_file(role: &str, path: &Path) -> Result<SourceFile> {
    let (mut f, _) = crate::checkpoint::open_regular(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| ExportError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(SourceFile {
        role: role.to_string(),
        file_name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes,
        sha256: hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    })
}

/// `dalle-export <version>`.
pub fn exporter_version() -> String {
    format!("dalle-export {}", env!("CARGO_PKG_VERSION"))
}
