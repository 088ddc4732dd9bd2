//! Every graph's `precision` attribute: how its weights and activations are stored, what stays
//! float32, how `int8` matrices are quantized, and which execution providers the graph suits.
//!
//! Written by the exporter's precision pass (`export/src/graph/precision/`) for every graph of
//! every family; read by the runtime's execution-provider plan (`src/ep/`), which refuses a
//! provider the graph does not suit. A graph exported before this attribute existed reads as
//! float32 with the providers of its operators unknown (`providers` empty).

use super::{Attributes, Result, invalid};
use crate::DType;
use crate::GraphSpec;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The attribute's key.
pub const PRECISION: &str = "precision";

/// The `--precision` of an export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything float32 (the reference's own precision).
    #[default]
    Fp32,
    /// float16 weights and activations; what must stay wide is float32.
    Fp16,
    /// bfloat16 weights and activations; what must stay wide is float32.
    Bf16,
    /// Weight-only int8 of the large matrices; everything else float32.
    Int8,
}

impl Precision {
    /// Every precision, in flag order.
    pub const ALL: [Precision; 4] = [
        Precision::Fp32,
        Precision::Fp16,
        Precision::Bf16,
        Precision::Int8,
    ];

    /// The flag's and the manifest's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    /// The dtype of activations (and of float weights that are not quantized).
    pub fn compute_dtype(self) -> DType {
        match self {
            Precision::Fp16 => DType::F16,
            Precision::Bf16 => DType::BF16,
            Precision::Fp32 | Precision::Int8 => DType::F32,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown precision `{s}` (fp32, fp16, bf16, int8)"))
    }
}

/// An ONNX Runtime execution provider, as the manifest names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Cpu,
    Cuda,
    Tensorrt,
}

impl Provider {
    /// The manifest's and `--ep`'s spelling.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::Tensorrt => "tensorrt",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How `int8` matrices are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuantFormat {
    /// `com.microsoft.MatMulNBits` (8 bits, blockwise scales along the input axis, zero point
    /// 128): ONNX Runtime's CPU and CUDA providers.
    MatmulNbits,
    /// `DequantizeLinear` (int8, one scale per output channel, zero point 0) + `MatMul`:
    /// standard ONNX, for TensorRT.
    Qdq,
}

impl QuantFormat {
    /// The manifest's and `--int8-format`'s spelling.
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::MatmulNbits => "matmul-nbits",
            QuantFormat::Qdq => "qdq",
        }
    }
}

impl std::str::FromStr for QuantFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "matmul-nbits" => Ok(QuantFormat::MatmulNbits),
            "qdq" => Ok(QuantFormat::Qdq),
            other => Err(format!("unknown int8 format `{other}` (matmul-nbits, qdq)")),
        }
    }
}

/// Where the scales of a quantized matrix `[out, in]` apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleLayout {
    /// One scale per output channel and block of `block_size` inputs: `[out, ceil(in/block)]`.
    PerBlock,
    /// One scale per output channel: `[out]`.
    PerChannel,
}

/// How the `int8` graph's matrices were quantized (symmetric round-to-nearest of each
/// PyTorch `Linear` weight, scale = max |w| / 127 over its block or channel).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantization {
    pub format: QuantFormat,
    pub bits: u32,
    /// Inputs per scale (`per-block`); absent for `per-channel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    pub scales: ScaleLayout,
    /// The stored zero point (128 for MatMulNBits' unsigned bytes, 0 for QDQ's int8).
    pub zero_point: i64,
    /// `MatMulNBits`' `accuracy_level` (0: ONNX Runtime's default); absent for QDQ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_level: Option<i64>,
    /// How many matrices were quantized (the others, and every non-matrix weight, stay
    /// float32), and how many weights they hold.
    pub matrices: u64,
    pub weights: u64,
}

/// The `precision` attribute of one graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecisionAttributes {
    pub precision: Precision,
    /// The activations' dtype (`float` for `fp32` and `int8`).
    pub compute: DType,
    /// What stays float32 in a float16/bfloat16 graph, and why: ops computed in float32
    /// between casts, and the graph inputs/outputs kept float32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_float32: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
    /// The execution providers that have a kernel for every node at these dtypes.
    pub providers: Vec<Provider>,
    /// The providers on which this project's tests run this graph against the float32
    /// reference; on the others it is only checked structurally (types and shapes).
    pub verified_on: Vec<Provider>,
    /// Operators (at their dtype) ONNX Runtime's CPU provider has no kernel for, when `cpu`
    /// is not among `providers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu_missing_kernels: Vec<String>,
}

impl PrecisionAttributes {
    /// Reads the attribute of a graph; `None` for bundles exported before it existed.
    pub fn from_spec(spec: &GraphSpec) -> Result<Option<Self>> {
        Self::from_attributes(&spec.attributes)
    }

    /// [`PrecisionAttributes::from_spec`] on the attributes alone.
    pub fn from_attributes(a: &Attributes) -> Result<Option<Self>> {
        a.get(PRECISION)
            .map(|v| {
                serde_json::from_value(v.clone())
                    .map_err(|_| invalid(PRECISION, "a precision object", v))
            })
            .transpose()
    }

    /// Writes the attribute into `a`.
    pub fn insert_into(&self, a: &mut Attributes) {
        // Serializing plain data with string keys cannot fail.
        if let Ok(v) = serde_json::to_value(self) {
            a.insert(PRECISION.into(), v);
        }
    }

    /// Whether the graph suits `provider` (`None` when the bundle does not say).
    pub fn suits(&self, provider: Provider) -> Option<bool> {
        if self.providers.is_empty() {
            None
        } else {
            Some(self.providers.contains(&provider))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::test_spec as spec;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let p = PrecisionAttributes {
            precision: Precision::Int8,
            compute: DType::F32,
            kept_float32: vec![],
            quantization: Some(Quantization {
                format: QuantFormat::MatmulNbits,
                bits: 8,
                block_size: Some(32),
                scales: ScaleLayout::PerBlock,
                zero_point: 128,
                accuracy_level: Some(0),
                matrices: 3,
                weights: 1000,
            }),
            providers: vec![Provider::Cpu, Provider::Cuda],
            verified_on: vec![Provider::Cpu],
            cpu_missing_kernels: vec![],
        };
        let mut a = Attributes::new();
        p.insert_into(&mut a);
        assert_eq!(
            PrecisionAttributes::from_spec(&spec(a.clone())),
            Ok(Some(p))
        );
        assert_eq!(
            PrecisionAttributes::from_spec(&spec(Attributes::new())),
            Ok(None)
        );
        a.insert(PRECISION.into(), serde_json::json!({"precision": "fp8"}));
        let e = PrecisionAttributes::from_spec(&spec(a)).unwrap_err();
        assert_eq!(e.attribute(), PRECISION);
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!("fp64".parse::<Precision>().is_err());
    }
}
