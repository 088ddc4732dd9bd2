//! Which execution providers have a kernel for every node of a graph at its dtypes: the
//! `providers` of the manifest's `precision` attribute.
//!
//! The exporter does not link ONNX Runtime, so the facts are tables here, one per provider:
//! - [`CPU_MISSING`]: what ONNX Runtime 1.31.1's CPU provider (the library the tests load)
//!   has no kernel for. Measured, not read: `python-free-tests/tests/precision.rs` loads every
//!   family's graphs at every precision on it and checks that a graph loads exactly when this
//!   table says so, and that the load error names a listed op when it does not.
//! - [`CUDA_MISSING`] and [`TENSORRT_MISSING`]: read from ONNX Runtime's `OperatorKernels.md`,
//!   the 1.31.1 GPU wheel's symbols and TensorRT 10.15's `operators.md`
//!   (`shared/reference/gpu-and-minidalle.md` §1.2, §2.1). Not run here: no GPU.
//!
//! A graph is `verified_on` the CPU when the CPU provider runs it (the tests compare every such
//! graph with its float32 original); nowhere else.

use crate::graph::GraphBuilder;
use dalle_bundle::DType;
use dalle_bundle::attributes::precision::{Precision, PrecisionAttributes, Provider, Quantization};

/// `(op, dtype)` pairs ONNX Runtime 1.31.1's CPU provider has no kernel for (x86-64 build),
/// among the ops the families emit. `"*"` matches every op at that dtype.
///
/// Measured: every float16 graph of every family loads (the CPU provider has float16 kernels
/// for each op we emit, `GroupQueryAttention` included); bfloat16 fails on the first
/// elementwise node (`Add`, `Where`, ...), so every bfloat16 node is listed.
pub const CPU_MISSING: &[(&str, DType)] = &[("*", DType::BF16)];

/// `(op, dtype)` pairs the CUDA provider has no kernel for at opset 18.
pub const CUDA_MISSING: &[(&str, DType)] = &[
    // GroupQueryAttention: T = bfloat16, float16 only (OperatorKernels.md; wheel symbols).
    ("GroupQueryAttention", DType::F32),
    // ConvTranspose: double, float, float16 (wheel symbols).
    ("ConvTranspose", DType::BF16),
    // Conv at opset [11, 21]: double, float, float16 (bf16 from opset 22).
    ("Conv", DType::BF16),
    // ArgMax: double, float, float16.
    ("ArgMax", DType::BF16),
    // Clip: no bfloat16.
    ("Clip", DType::BF16),
];

/// Ops TensorRT's ONNX parser does not take: every `com.microsoft` op (the ORT TensorRT
/// provider hands them to CUDA, splitting the engine), and bfloat16 deconvolution (parses, no
/// tactic in TensorRT 11.2, third-party report).
pub const TENSORRT_MISSING: &[(&str, DType)] = &[("ConvTranspose", DType::BF16)];

fn missing(table: &[(&str, DType)], op: &str, dtype: DType) -> bool {
    table
        .iter()
        .any(|&(o, d)| d == dtype && (o == op || o == "*"))
}

/// The `precision` attribute of a graph after the pass.
pub fn describe(
    g: &GraphBuilder,
    precision: Precision,
    kept_float32: Vec<String>,
    quantization: Option<Quantization>,
) -> PrecisionAttributes {
    let nodes = g.node_dtypes();
    let contrib = g.uses_contrib_ops();
    let cpu_missing: Vec<String> = nodes
        .iter()
        .filter(|(op, d)| missing(CPU_MISSING, op, *d))
        .map(|(op, d)| format!("{op}({d})"))
        .collect();
    let mut providers = Vec::new();
    if cpu_missing.is_empty() {
        providers.push(Provider::Cpu);
    }
    if !nodes.iter().any(|(op, d)| missing(CUDA_MISSING, op, *d)) {
        providers.push(Provider::Cuda);
    }
    if !contrib
        && !nodes
            .iter()
            .any(|(op, d)| missing(TENSORRT_MISSING, op, *d))
    {
        providers.push(Provider::Tensorrt);
    }
    let verified_on = if cpu_missing.is_empty() {
        vec![Provider::Cpu]
    } else {
        Vec::new()
    };
    PrecisionAttributes {
        precision,
        compute: precision.compute_dtype(),
        kept_float32,
        quantization,
        providers,
        verified_on,
        cpu_missing_kernels: cpu_missing,
    }
}

impl GraphBuilder {
    /// Whether any node is outside the default ONNX domain.
    pub fn uses_contrib_ops(&self) -> bool {
        self.nodes.iter().any(|n| !n.domain.is_empty())
    }
}
