//! `dalle-export check --target tensorrt|cuda|cpu`: will every node of a bundle's graphs run on
//! that execution provider, before the bundle is deployed?
//!
//! It exists because a node a provider lacks does not fail loudly: ONNX Runtime quietly hands it
//! to another provider (TensorRT → CUDA → CPU), with copies between devices and no CUDA graphs.
//! The checker reads each graph's nodes, element types (`value_info`) and constants, and looks
//! them up in the providers' own support tables, kept as data with their source and version
//! (`export/data/`, parsed by [`tables`]):
//!
//! - `cpu` / `cuda`: ONNX Runtime's kernel registrations for the node's op, opset and element
//!   types (`ort.rs`). On CUDA, nodes that only compute shapes are notes, not errors: ONNX
//!   Runtime puts shape computations on the CPU anyway.
//! - `tensorrt`: TensorRT 10.15's ONNX parser table — op, element types, the quoted
//!   restrictions as machine-checked rules — and shape tensors (`tensorrt.rs`): a shape tensor
//!   computed from a graph input's *values* is an error (TensorRT then needs that input's values
//!   in its optimization profile, which the manifest's `dim_ranges` do not give); ones computed
//!   from input dims are listed as a note. For each node TensorRT would not take, the report says
//!   whether ONNX Runtime's CUDA provider (which runs such nodes under the TensorRT provider) has
//!   a kernel for it.
//!
//! Any error means the bundle would not run fully on the target (`dalle-export check` exits 1).

mod facts;
mod ort;
mod report;
pub mod tables;
mod tensorrt;

pub use report::{Finding, GraphReport, Report, Severity};

use crate::graph::{check as structure, proto_io};
use crate::proto;
use facts::{GraphFacts, Origin};
use std::collections::BTreeSet;
use std::path::Path;

/// The execution provider a bundle is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Cpu,
    Cuda,
    TensorRt,
}

impl Target {
    /// As spelled on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::Cpu => "cpu",
            Target::Cuda => "cuda",
            Target::TensorRt => "tensorrt",
        }
    }

    /// What the target's support is checked against.
    pub fn describe(self) -> &'static str {
        match self {
            Target::Cpu => {
                "ONNX Runtime CPU kernels (docs/OperatorKernels.md @ 001d12d2, opset-18 excerpt)"
            }
            Target::Cuda => {
                "ONNX Runtime CUDA kernels (docs/OperatorKernels.md @ 001d12d2, opset-18 excerpt)"
            }
            Target::TensorRt => {
                "TensorRT 10.15 ONNX parser (onnx-tensorrt docs/operators.md); nodes it does not \
                 take are checked against ONNX Runtime's CUDA kernels"
            }
        }
    }
}

/// Why a check could not run at all (as opposed to what it found).
#[derive(Debug, thiserror::Error)]
pub enum CompatError {
    #[error(transparent)]
    Table(#[from] tables::TableError),
    #[error(transparent)]
    Export(#[from] crate::ExportError),
    #[error(transparent)]
    Bundle(#[from] dalle_bundle::BundleError),
    #[error("{}: not a bundle directory (no manifest.json) or an .onnx file", .0.display())]
    NotABundle(std::path::PathBuf),
}

/// Checks a bundle directory (every graph in its manifest) or a single `.onnx` file.
pub fn check_path(path: &Path, target: Target) -> Result<Report, CompatError> {
    let mut graphs = Vec::new();
    if path.is_dir() {
        let manifest = dalle_bundle::Manifest::read_from_dir(path)?;
        manifest.validate()?;
        for (role, spec) in &manifest.graphs {
            let model = proto_io::read_model(&path.join(&spec.file))?;
            graphs.push(check_model(
                &model,
                &format!("{} ({})", spec.file, role.name()),
                target,
            )?);
        }
    } else if path.is_file() {
        let model = proto_io::read_model(path)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        graphs.push(check_model(&model, &name, target)?);
    } else {
        return Err(CompatError::NotABundle(path.to_path_buf()));
    }
    Ok(Report { target, graphs })
}

/// Checks one model; `name` labels it in the report.
pub fn check_model(
    model: &proto::ModelProto,
    name: &str,
    target: Target,
) -> Result<GraphReport, CompatError> {
    let kernels = tables::onnxruntime()?;
    let trt = tables::tensorrt()?;
    let opset_of = |domain: &str| {
        let domain = if domain == "ai.onnx" { "" } else { domain };
        model
            .opset_import
            .iter()
            .find(|o| o.domain.as_deref().unwrap_or("") == domain)
            .and_then(|o| o.version)
    };
    let opset = opset_of("").unwrap_or(0);
    let mut report = GraphReport {
        name: name.to_string(),
        nodes: 0,
        opset,
        findings: Vec::new(),
    };
    if let Err(message) = structure::validate(model) {
        report.findings.push(graph_finding(
            Severity::Error,
            format!("not a valid graph: {message}"),
        ));
        return Ok(report);
    }
    let Some(graph) = model.graph.as_ref() else {
        return Ok(report);
    };
    report.nodes = graph.node.len();
    let facts = GraphFacts::new(graph);
    if target == Target::TensorRt && !(trt.opset_min..=trt.opset_max).contains(&opset) {
        report.findings.push(graph_finding(
            Severity::Error,
            format!(
                "opset {opset} is outside TensorRT's range {}..={}",
                trt.opset_min, trt.opset_max
            ),
        ));
    }
    let mut shape_notes: BTreeSet<String> = BTreeSet::new();
    let mut shape_count = 0usize;
    for node in &graph.node {
        let op = node.op_type.as_deref().unwrap_or("");
        let domain = node.domain.as_deref().unwrap_or("");
        let node_opset = opset_of(domain).unwrap_or(0);
        let label = if domain.is_empty() || domain == "ai.onnx" {
            op.to_string()
        } else {
            format!("{domain}::{op}")
        };
        let mut push = |severity, message: String| {
            report.findings.push(Finding {
                severity,
                node: Some(node.name.clone().unwrap_or_default()),
                op: Some(label.clone()),
                message,
            });
        };
        match target {
            Target::Cpu => {
                if let Some(why) = ort::missing_kernel(kernels, &facts, node, "CPU", node_opset) {
                    push(Severity::Error, why);
                }
            }
            Target::Cuda => {
                if let Some(why) = ort::missing_kernel(kernels, &facts, node, "CUDA", node_opset) {
                    if shape_only(&facts, node) {
                        push(
                            Severity::Note,
                            format!(
                                "{why}; a shape computation, which ONNX Runtime runs on the CPU \
                                 anyway"
                            ),
                        );
                    } else {
                        push(
                            Severity::Error,
                            format!("{why}: falls back to the CPU provider"),
                        );
                    }
                }
            }
            Target::TensorRt => {
                let problems = trt_problems(trt, kernels, &facts, node, node_opset, &mut push);
                if !problems.is_empty() {
                    let cuda = match ort::missing_kernel(kernels, &facts, node, "CUDA", node_opset)
                    {
                        None => "ONNX Runtime runs it on CUDA instead".to_string(),
                        Some(why) => format!("not on CUDA either ({why}): it would run on the CPU"),
                    };
                    push(Severity::Error, format!("{}; {cuda}", problems.join("; ")));
                }
                for st in tensorrt::shape_tensors(&facts, node) {
                    match st.origin {
                        Origin::Inputs(set) => {
                            let names: Vec<&str> =
                                set.iter().map(|&i| facts.input_name(i)).collect();
                            push(
                                Severity::Error,
                                format!(
                                    "shape tensor `{}` (input {}) is computed from the values of \
                                     graph input(s) {}: TensorRT would need their values in the \
                                     optimization profile, which the manifest's dim_ranges do \
                                     not give",
                                    st.name,
                                    st.index,
                                    names.join(", ")
                                ),
                            );
                        }
                        Origin::Unknown => push(
                            Severity::Warning,
                            format!("cannot tell where shape tensor `{}` comes from", st.name),
                        ),
                        Origin::Shapes | Origin::Constant => {
                            shape_count += 1;
                            shape_notes.insert(st.elem.unwrap_or("unknown type").to_string());
                        }
                    }
                }
            }
        }
    }
    if shape_count > 0 {
        report.findings.push(graph_finding(
            Severity::Note,
            format!(
                "{shape_count} shape tensor(s) ({}) computed from input dims only: TensorRT \
                 takes them",
                shape_notes.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(report)
}

fn graph_finding(severity: Severity, message: String) -> Finding {
    Finding {
        severity,
        node: None,
        op: None,
        message,
    }
}

/// Whether every output of `node` is a shape computation (constants and tensor dims only).
fn shape_only(facts: &GraphFacts<'_>, node: &proto::NodeProto) -> bool {
    node.output
        .iter()
        .filter(|o| !o.is_empty())
        .all(|o| matches!(facts.origin(o), Origin::Shapes | Origin::Constant))
}

/// Why TensorRT's parser would not take `node` (empty when it does); warnings go to `push`.
fn trt_problems(
    trt: &tables::TrtTable,
    kernels: &tables::KernelTable,
    facts: &GraphFacts<'_>,
    node: &proto::NodeProto,
    opset: i64,
    push: &mut impl FnMut(Severity, String),
) -> Vec<String> {
    let op = node.op_type.as_deref().unwrap_or("");
    let domain = node.domain.as_deref().unwrap_or("");
    if !(domain.is_empty() || domain == "ai.onnx") {
        return vec![format!(
            "`{domain}` is not an ONNX standard domain: TensorRT's parser has no such op"
        )];
    }
    let Some(row) = trt.ops.get(op) else {
        return vec!["not in TensorRT 10.15's operator table".to_string()];
    };
    if !row.supported {
        return vec![format!("TensorRT 10.15's parser does not support {op}")];
    }
    let (errors, warnings) = tensorrt::check_node(row, kernels, facts, node, opset);
    for w in warnings {
        push(
            Severity::Warning,
            format!("{w}; TensorRT: \"{}\"", row.restriction),
        );
    }
    errors
}
