//! `manifest.json`: what a bundle holds and how to run it.
//!
//! The manifest is written by `dalle-export` and is the only thing the runtime knows about a
//! model: graph files and their I/O (names, dtypes, symbolic dims), shape ranges for TensorRT
//! optimization profiles, the token layout, default sampling settings, and provenance (source
//! files with SHA-256, exporter version).

use crate::dtype::{DType, Dim, format_dims};
use crate::{BundleError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// File name of the manifest inside a bundle.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The manifest format this build reads and writes. Bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// The model family a bundle was exported from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFamily {
    /// OpenAI's released dVAE (`encoder.pkl` / `decoder.pkl`).
    OpenaiDvae,
    /// A DALLE-pytorch checkpoint (transformer + its VAE).
    DallePytorch,
    /// A Hugging Face CLIP model on its own.
    Clip,
    /// A seeded random model made by `dalle-export demo` (no trained weights).
    RandomDemo,
    /// DALL·E mini/mega in kuprel/min-dalle's files (`encoder.pt`, `decoder.pt`, `detoker.pt`,
    /// `vocab.json`, `merges.txt`).
    MinDalle,
}

impl fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ModelFamily::OpenaiDvae => "openai-dvae",
            ModelFamily::DallePytorch => "dalle-pytorch",
            ModelFamily::Clip => "clip",
            ModelFamily::RandomDemo => "random-demo",
            ModelFamily::MinDalle => "min-dalle",
        };
        f.write_str(s)
    }
}

/// What a graph does in the pipeline. Each role has a fixed file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphRole {
    DvaeEncoder,
    DvaeDecoder,
    Decoder,
    ClipText,
    ClipImage,
    /// min-dalle's BART text encoder (`io::min_dalle`).
    TextEncoder,
    /// The decoder's cross-attention keys/values from the encoder states, once per prompt.
    CrossKv,
}

impl GraphRole {
    /// Every role, in pipeline order.
    pub const ALL: [GraphRole; 7] = [
        GraphRole::TextEncoder,
        GraphRole::CrossKv,
        GraphRole::Decoder,
        GraphRole::DvaeEncoder,
        GraphRole::DvaeDecoder,
        GraphRole::ClipText,
        GraphRole::ClipImage,
    ];

    /// The role's name in the manifest (`dvae_decoder`).
    pub fn name(self) -> &'static str {
        match self {
            GraphRole::DvaeEncoder => "dvae_encoder",
            GraphRole::DvaeDecoder => "dvae_decoder",
            GraphRole::Decoder => "decoder",
            GraphRole::ClipText => "clip_text",
            GraphRole::ClipImage => "clip_image",
            GraphRole::TextEncoder => "text_encoder",
            GraphRole::CrossKv => "cross_kv",
        }
    }

    /// The graph's file name inside the bundle (`dvae_decoder.onnx`).
    pub fn file_name(self) -> String {
        format!("{}.onnx", self.name())
    }
}

impl fmt::Display for GraphRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Name, element type and shape of one graph input or output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub dims: Vec<Dim>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dtype: DType, dims: Vec<Dim>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            dims,
        }
    }
}

impl fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}{}",
            self.name,
            self.dtype,
            format_dims(&self.dims)
        )
    }
}

/// The range a symbolic dimension takes at run time: TensorRT builds its optimization profile
/// from `min`/`opt`/`max`, and the runtime rejects inputs outside `[min, max]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DimRange {
    pub min: u64,
    pub opt: u64,
    pub max: u64,
}

impl DimRange {
    pub fn new(min: u64, opt: u64, max: u64) -> DimRange {
        DimRange { min, opt, max }
    }
}

/// One graph of the bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphSpec {
    /// File name relative to the bundle directory.
    pub file: String,
    /// External-data file, when initializers are stored outside the `.onnx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_data: Option<String>,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Ranges of the symbolic dimensions used by `inputs` (TensorRT optimization profiles).
    #[serde(default)]
    pub dim_ranges: BTreeMap<String, DimRange>,
    /// Graph-specific facts (e.g. `vocab_size`, `downsample`), for tools and the runtime.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

impl GraphSpec {
    /// The input with this name.
    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|t| t.name == name)
    }

    /// The output with this name.
    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|t| t.name == name)
    }
}

/// How text and image tokens share the transformer's sequence (DALLE-pytorch layout, see
/// `shared/reference/models.md` §2.2).
///
/// The decoder's `input_ids` and its logits' last axis use one **unified vocabulary**:
/// `[0, image_token_offset)` are text ids (BOS = `bos_id`; the tokenizer's ids; the pad at text
/// position `i` is `pad_id_base + i`), `[image_token_offset, total_vocab_size)` are image codes
/// shifted by `image_token_offset`. The sequence the model sees is
/// `[BOS, text_0 .. text_{text_length-1}, image_0 .. image_{n-2}]`: position `p` predicts token
/// `p + 1`, so position `text_length` predicts the first image code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenLayout {
    /// Text positions after BOS (DALLE-pytorch `text_seq_len`).
    pub text_length: u64,
    /// The tokenizer's vocabulary size (DALLE-pytorch `num_text_tokens`); tokenizer id 0 is
    /// padding.
    pub text_vocab_size: u64,
    /// Id of the token prepended to the text.
    pub bos_id: u64,
    /// The pad at text position `i` (0-based, after BOS) has id `pad_id_base + i`.
    pub pad_id_base: u64,
    /// Image tokens form a `image_grid × image_grid` raster, row-major.
    pub image_grid: u64,
    /// Size of the image codebook.
    pub image_vocab_size: u64,
    /// Offset added to an image code to get its id in the unified vocabulary.
    pub image_token_offset: u64,
    /// Size of the unified vocabulary (= the logits' last dimension).
    pub total_vocab_size: u64,
}

impl TokenLayout {
    /// Number of image tokens (`image_grid²`).
    pub fn image_length(&self) -> u64 {
        self.image_grid * self.image_grid
    }
}

/// Default sampling settings recorded by the exporter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingDefaults {
    /// Keep the `top_k` most likely image tokens (a count over image tokens only).
    pub top_k: Option<u64>,
    /// Nucleus sampling threshold.
    pub top_p: Option<f64>,
    pub temperature: f64,
    /// Classifier-free guidance scale (1 = off).
    pub cond_scale: f64,
}

/// What the runtime needs to use a bundle's CLIP graphs (`clip_text`, `clip_image`): text
/// tokenization, image preprocessing and the logit scale (Hugging Face `CLIPModel`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipInfo {
    /// Hugging Face `tokenizer.json` of the CLIP text model, inside the bundle (it applies no
    /// start/end tokens itself: the runtime adds `bos_id` … `eos_id` and pads).
    pub tokenizer: String,
    /// Text context length (`input_ids` is `[batch, context_length]`).
    pub context_length: u64,
    /// `<|startoftext|>` id.
    pub bos_id: u64,
    /// `<|endoftext|>` id (kept as the last token when a prompt is truncated).
    pub eos_id: u64,
    /// Id the text is right-padded with.
    pub pad_id: u64,
    /// Raw learned `logit_scale`; logits are `exp(logit_scale) · cos`.
    pub logit_scale: f64,
    /// Side of the square `pixel_values` input.
    pub image_size: u64,
    /// Per-channel (RGB) mean and std of the normalization, on pixels in [0, 1].
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    /// Embedding width of both towers' outputs.
    pub projection_dim: u64,
}

/// A file the bundle was exported from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// What the file was (`encoder`, `decoder`, `checkpoint`, ...).
    pub role: String,
    /// File name as given (no directory, so bundles stay reproducible across machines).
    pub file_name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Where the bundle came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// `dalle-export <version>`.
    pub exporter: String,
    #[serde(default)]
    pub sources: Vec<SourceFile>,
    /// Free-form notes (e.g. "seeded random weights, seed 7: not a trained model").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The whole manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub family: ModelFamily,
    pub graphs: BTreeMap<GraphRole, GraphSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_layout: Option<TokenLayout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingDefaults>,
    /// Tokenizer file name inside the bundle, where the model takes text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// CLIP tokenization, preprocessing and scale, where the bundle has CLIP graphs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<ClipInfo>,
    pub provenance: Provenance,
}

impl Manifest {
    /// An empty manifest of the current format version.
    pub fn new(family: ModelFamily, provenance: Provenance) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            family,
            graphs: BTreeMap::new(),
            token_layout: None,
            sampling: None,
            tokenizer: None,
            clip: None,
            provenance,
        }
    }

    /// The graph with this role, or an error listing the roles the bundle has.
    pub fn graph(&self, role: GraphRole) -> Result<&GraphSpec> {
        self.graphs
            .get(&role)
            .ok_or_else(|| BundleError::MissingGraph {
                role,
                available: if self.graphs.is_empty() {
                    "none".to_string()
                } else {
                    self.graphs
                        .keys()
                        .map(|r| r.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    }

    /// Serializes to pretty JSON (stable key order: maps are `BTreeMap`s).
    pub fn to_json(&self) -> String {
        // Serializing these plain data types cannot fail (no maps with non-string keys at the
        // JSON level: GraphRole serializes as a string).
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
            + "\n"
    }

    /// Parses and validates a manifest from JSON text; `path` is used in error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Manifest> {
        // Check the version before the full parse, so an incompatible future format gets the
        // version message rather than a field-level parse error.
        #[derive(Deserialize)]
        struct VersionOnly {
            format_version: u32,
        }
        let version: VersionOnly =
            serde_json::from_str(text).map_err(|source| BundleError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        if version.format_version != FORMAT_VERSION {
            return Err(BundleError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let manifest: Manifest =
            serde_json::from_str(text).map_err(|source| BundleError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Reads `manifest.json` from a bundle directory.
    pub fn read_from_dir(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| BundleError::Io {
            path: path.clone(),
            source,
        })?;
        Manifest::from_json(&text, &path)
    }

    /// Internal consistency: file names are plain names inside the bundle, I/O names are unique,
    /// every symbolic dim used by an input has a range, ranges are ordered, and every number is
    /// within its limit and agrees with the graphs' dims (`validate.rs`).
    pub fn validate(&self) -> Result<()> {
        for (role, graph) in &self.graphs {
            check_plain_file_name(&graph.file, *role)?;
            if let Some(data) = &graph.external_data {
                check_plain_file_name(data, *role)?;
            }
            let mut seen = std::collections::BTreeSet::new();
            for t in graph.inputs.iter().chain(&graph.outputs) {
                if !seen.insert(t.name.as_str()) {
                    return Err(BundleError::Invalid(format!(
                        "graph {role}: tensor name `{}` appears twice in its inputs/outputs",
                        t.name
                    )));
                }
            }
            for (name, r) in &graph.dim_ranges {
                if !(r.min <= r.opt && r.opt <= r.max) {
                    return Err(BundleError::Invalid(format!(
                        "graph {role}: dim range `{name}` must satisfy min <= opt <= max, got {}/{}/{}",
                        r.min, r.opt, r.max
                    )));
                }
            }
            for input in &graph.inputs {
                for d in &input.dims {
                    if let Dim::Symbolic(s) = d
                        && !graph.dim_ranges.contains_key(s)
                    {
                        return Err(BundleError::Invalid(format!(
                            "graph {role}: input `{}` uses symbolic dim `{s}` with no entry in dim_ranges",
                            input.name
                        )));
                    }
                }
            }
        }
        if let Some(tok) = &self.tokenizer {
            check_plain_file_name(tok, GraphRole::Decoder)?;
        }
        if let Some(clip) = &self.clip {
            check_plain_file_name(&clip.tokenizer, GraphRole::ClipText)?;
        }
        crate::validate::numbers(self)
    }
}

fn check_plain_file_name(name: &str, role: GraphRole) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\');
    if ok {
        Ok(())
    } else {
        Err(BundleError::Invalid(format!(
            "graph {role}: file name `{name}` must be a plain file name inside the bundle"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut m = Manifest::new(
            ModelFamily::OpenaiDvae,
            Provenance {
                exporter: "dalle-export 0.1.0".into(),
                sources: vec![],
                notes: vec![],
            },
        );
        let mut ranges = BTreeMap::new();
        ranges.insert("batch".to_string(), DimRange::new(1, 1, 8));
        m.graphs.insert(
            GraphRole::DvaeDecoder,
            GraphSpec {
                file: "dvae_decoder.onnx".into(),
                external_data: None,
                inputs: vec![TensorSpec::new(
                    "image_tokens",
                    DType::I64,
                    vec![Dim::sym("batch"), 32.into(), 32.into()],
                )],
                outputs: vec![],
                dim_ranges: ranges,
                attributes: BTreeMap::new(),
            },
        );
        m
    }

    #[test]
    fn round_trips_through_json() {
        let m = sample();
        let json = m.to_json();
        assert!(json.contains("\"dtype\": \"int64\""), "{json}");
        assert!(json.contains("\"batch\""), "{json}");
        let back = Manifest::from_json(&json, Path::new("manifest.json")).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn rejects_future_versions_by_number() {
        let json = sample()
            .to_json()
            .replace("\"format_version\": 1", "\"format_version\": 99");
        let err = Manifest::from_json(&json, Path::new("m.json")).unwrap_err();
        assert!(err.to_string().contains("format version 99"), "{err}");
    }

    #[test]
    fn rejects_paths_outside_the_bundle() {
        let mut m = sample();
        if let Some(g) = m.graphs.get_mut(&GraphRole::DvaeDecoder) {
            g.file = "../evil.onnx".into();
        }
        let err = m.validate().unwrap_err();
        assert!(err.to_string().contains("plain file name"), "{err}");
    }

    #[test]
    fn rejects_symbolic_dims_without_range() {
        let mut m = sample();
        if let Some(g) = m.graphs.get_mut(&GraphRole::DvaeDecoder) {
            g.dim_ranges.clear();
        }
        let err = m.validate().unwrap_err();
        assert!(err.to_string().contains("no entry in dim_ranges"), "{err}");
    }

    #[test]
    fn missing_graph_lists_available() {
        let err = sample().graph(GraphRole::Decoder).unwrap_err();
        assert!(err.to_string().contains("dvae_decoder"), "{err}");
    }
}
