//! Checking a loaded graph against its manifest entry.
//!
//! [`diff_graph`] compares the manifest's [`TensorSpec`]s with what the ONNX file really declares
//! ([`ObservedTensor`], read from the session by [`crate::session`]) and returns *every*
//! difference, so one run shows the whole drift. It is pure: tests feed it hand-made observations.
//! [`check_input_shape`] checks a concrete tensor shape against a manifest input before a run.
//!
//! Compatibility rules for one dimension (manifest vs graph):
//! - fixed `n` vs fixed `m`: must be equal;
//! - fixed vs dynamic, symbolic vs dynamic: compatible (the graph accepts more; symbol names are
//!   cosmetic);
//! - symbolic `s` vs fixed `m`: only when `dim_ranges[s]` is exactly `m..=m`, otherwise the
//!   manifest promises sizes the graph cannot take.

use dalle_bundle::dtype::format_dims;
use dalle_bundle::{DType, Dim, DimRange, GraphRole, GraphSpec, TensorSpec};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// An element type as the ONNX file declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObservedType {
    /// A tensor of a type the manifest can name.
    Tensor(DType),
    /// Anything else (other tensor element types, sequences, maps), by name.
    Other(String),
}

impl fmt::Display for ObservedType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObservedType::Tensor(d) => write!(f, "{d}"),
            ObservedType::Other(s) => f.write_str(s),
        }
    }
}

/// One dimension as the ONNX file declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObservedDim {
    Fixed(u64),
    /// Dynamic, with its symbol when the file names one.
    Dynamic(Option<String>),
}

impl fmt::Display for ObservedDim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObservedDim::Fixed(n) => write!(f, "{n}"),
            ObservedDim::Dynamic(Some(s)) => f.write_str(s),
            ObservedDim::Dynamic(None) => f.write_str("?"),
        }
    }
}

/// One graph input or output as the ONNX file declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedTensor {
    pub name: String,
    pub dtype: ObservedType,
    pub dims: Vec<ObservedDim>,
}

impl fmt::Display for ObservedTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.dims.iter().map(ToString::to_string).collect();
        write!(f, "{}: {}[{}]", self.name, self.dtype, dims.join(", "))
    }
}

/// Input or output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Input,
    Output,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Input => "input",
            Side::Output => "output",
        })
    }
}

/// One difference between the manifest and the graph file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// In the manifest, not in the graph.
    Missing { side: Side, expected: TensorSpec },
    /// In the graph, not in the manifest.
    Unexpected { side: Side, found: ObservedTensor },
    DType {
        side: Side,
        name: String,
        expected: DType,
        found: ObservedType,
    },
    Rank {
        side: Side,
        name: String,
        expected: Vec<Dim>,
        found: Vec<ObservedDim>,
    },
    Dim {
        side: Side,
        name: String,
        axis: usize,
        expected: Dim,
        found: ObservedDim,
        why: String,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Missing { side, expected } => write!(
                f,
                "{side} `{}` is in the manifest ({expected}) but not in the graph",
                expected.name
            ),
            Mismatch::Unexpected { side, found } => write!(
                f,
                "{side} `{}` is in the graph ({found}) but not in the manifest",
                found.name
            ),
            Mismatch::DType {
                side,
                name,
                expected,
                found,
            } => write!(
                f,
                "{side} `{name}`: element type is {found} in the graph, {expected} in the manifest"
            ),
            Mismatch::Rank {
                side,
                name,
                expected,
                found,
            } => {
                let found_dims: Vec<String> = found.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "{side} `{name}`: rank {} in the graph [{}], {} in the manifest {}",
                    found.len(),
                    found_dims.join(", "),
                    expected.len(),
                    format_dims(expected)
                )
            }
            Mismatch::Dim {
                side,
                name,
                axis,
                expected,
                found,
                why,
            } => write!(
                f,
                "{side} `{name}`: dim {axis} is {found} in the graph, {expected} in the manifest ({why})"
            ),
        }
    }
}

/// A graph whose real inputs/outputs differ from the manifest, with every difference.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "graph `{role}` ({}) does not match the manifest ({} difference{}):\n{}",
    path.display(),
    mismatches.len(),
    if mismatches.len() == 1 { "" } else { "s" },
    mismatches.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n")
)]
pub struct ContractError {
    pub role: GraphRole,
    pub path: PathBuf,
    pub mismatches: Vec<Mismatch>,
}

/// Every difference between `spec` and the graph's observed inputs/outputs (empty: they match).
pub fn diff_graph(
    spec: &GraphSpec,
    inputs: &[ObservedTensor],
    outputs: &[ObservedTensor],
) -> Vec<Mismatch> {
    let mut out = diff_side(Side::Input, &spec.inputs, inputs, &spec.dim_ranges);
    out.extend(diff_side(
        Side::Output,
        &spec.outputs,
        outputs,
        &spec.dim_ranges,
    ));
    out
}

/// [`diff_graph`] as a `Result`.
pub fn check_graph(
    role: GraphRole,
    path: PathBuf,
    spec: &GraphSpec,
    inputs: &[ObservedTensor],
    outputs: &[ObservedTensor],
) -> Result<(), ContractError> {
    let mismatches = diff_graph(spec, inputs, outputs);
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(ContractError {
            role,
            path,
            mismatches,
        })
    }
}

fn diff_side(
    side: Side,
    expected: &[TensorSpec],
    observed: &[ObservedTensor],
    ranges: &BTreeMap<String, DimRange>,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for want in expected {
        let Some(got) = observed.iter().find(|o| o.name == want.name) else {
            out.push(Mismatch::Missing {
                side,
                expected: want.clone(),
            });
            continue;
        };
        if got.dtype != ObservedType::Tensor(want.dtype) {
            out.push(Mismatch::DType {
                side,
                name: want.name.clone(),
                expected: want.dtype,
                found: got.dtype.clone(),
            });
        }
        if got.dims.len() != want.dims.len() {
            out.push(Mismatch::Rank {
                side,
                name: want.name.clone(),
                expected: want.dims.clone(),
                found: got.dims.clone(),
            });
            continue;
        }
        for (axis, (w, g)) in want.dims.iter().zip(&got.dims).enumerate() {
            if let Some(why) = dim_incompatibility(w, g, ranges) {
                out.push(Mismatch::Dim {
                    side,
                    name: want.name.clone(),
                    axis,
                    expected: w.clone(),
                    found: g.clone(),
                    why,
                });
            }
        }
    }
    for got in observed {
        if !expected.iter().any(|e| e.name == got.name) {
            out.push(Mismatch::Unexpected {
                side,
                found: got.clone(),
            });
        }
    }
    out
}

fn dim_incompatibility(
    want: &Dim,
    got: &ObservedDim,
    ranges: &BTreeMap<String, DimRange>,
) -> Option<String> {
    match (want, got) {
        (_, ObservedDim::Dynamic(_)) => None,
        (Dim::Fixed(n), ObservedDim::Fixed(m)) => {
            (n != m).then(|| "fixed sizes differ".to_string())
        }
        (Dim::Symbolic(s), ObservedDim::Fixed(m)) => match ranges.get(s) {
            Some(r) if r.min == *m && r.max == *m => None,
            Some(r) => Some(format!(
                "the manifest allows {}..={} for `{s}` but the graph only takes {m}",
                r.min, r.max
            )),
            None => Some(format!(
                "the graph fixes it to {m} but the manifest declares it symbolic"
            )),
        },
    }
}

/// Checks a concrete shape against a manifest input: rank, fixed dims, and symbolic dims within
/// their `dim_ranges` (a symbolic dim without a range only needs to be non-zero).
pub fn check_input_shape(
    spec: &TensorSpec,
    ranges: &BTreeMap<String, DimRange>,
    shape: &[usize],
) -> Result<(), String> {
    let shape_str = format!(
        "[{}]",
        shape
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if shape.len() != spec.dims.len() {
        return Err(format!(
            "has shape {shape_str}, but the graph takes rank {} {}",
            spec.dims.len(),
            format_dims(&spec.dims)
        ));
    }
    for (axis, (dim, &size)) in spec.dims.iter().zip(shape).enumerate() {
        let size = size as u64;
        match dim {
            Dim::Fixed(n) if *n != size => {
                return Err(format!(
                    "has shape {shape_str}, but dim {axis} must be {n} ({})",
                    format_dims(&spec.dims)
                ));
            }
            Dim::Symbolic(s) => match ranges.get(s) {
                Some(r) if size < r.min || size > r.max => {
                    return Err(format!(
                        "has shape {shape_str}, but dim {axis} (`{s}`) must be within {}..={} \
                         (the bundle's dim_ranges)",
                        r.min, r.max
                    ));
                }
                None if size == 0 => {
                    return Err(format!(
                        "has shape {shape_str}, but dim {axis} (`{s}`) must not be 0"
                    ));
                }
                _ => {}
            },
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder_spec() -> GraphSpec {
        let mut dim_ranges = BTreeMap::new();
        dim_ranges.insert("batch".to_string(), DimRange::new(1, 1, 8));
        dim_ranges.insert("grid_height".to_string(), DimRange::new(32, 32, 32));
        dim_ranges.insert("grid_width".to_string(), DimRange::new(8, 32, 64));
        GraphSpec {
            file: "dvae_decoder.onnx".into(),
            external_data: None,
            inputs: vec![TensorSpec::new(
                "image_tokens",
                DType::I64,
                vec![
                    Dim::sym("batch"),
                    Dim::sym("grid_height"),
                    Dim::sym("grid_width"),
                ],
            )],
            outputs: vec![TensorSpec::new(
                "pixels",
                DType::F32,
                vec![
                    Dim::sym("batch"),
                    3.into(),
                    Dim::sym("height"),
                    Dim::sym("width"),
                ],
            )],
            dim_ranges,
            attributes: BTreeMap::new(),
        }
    }

    fn obs(name: &str, dtype: DType, dims: &[Option<u64>]) -> ObservedTensor {
        ObservedTensor {
            name: name.into(),
            dtype: ObservedType::Tensor(dtype),
            dims: dims
                .iter()
                .map(|d| match d {
                    Some(n) => ObservedDim::Fixed(*n),
                    None => ObservedDim::Dynamic(Some("sym".into())),
                })
                .collect(),
        }
    }

    #[test]
    fn matching_graph_has_no_differences() {
        let spec = decoder_spec();
        let inputs = [obs("image_tokens", DType::I64, &[None, Some(32), None])];
        let outputs = [obs("pixels", DType::F32, &[None, Some(3), None, None])];
        assert_eq!(diff_graph(&spec, &inputs, &outputs), vec![]);
    }

    #[test]
    fn reports_every_difference_at_once() {
        let spec = decoder_spec();
        let inputs = [
            obs("image_tokens", DType::I32, &[None, None]),
            obs("attention_mask", DType::I64, &[None]),
        ];
        let outputs = [obs("pixels", DType::F32, &[None, Some(4), Some(256), None])];
        let diffs = diff_graph(&spec, &inputs, &outputs);
        assert_eq!(diffs.len(), 5, "{diffs:#?}");
        let err = ContractError {
            role: GraphRole::DvaeDecoder,
            path: "b/dvae_decoder.onnx".into(),
            mismatches: diffs,
        };
        let msg = err.to_string();
        assert!(msg.contains("5 differences"), "{msg}");
        assert!(
            msg.contains("input `image_tokens`: element type is int32 in the graph, int64"),
            "{msg}"
        );
        assert!(msg.contains("input `image_tokens`: rank 2"), "{msg}");
        assert!(
            msg.contains("input `attention_mask` is in the graph"),
            "{msg}"
        );
        assert!(
            msg.contains("output `pixels`: dim 1 is 4 in the graph, 3"),
            "{msg}"
        );
        assert!(
            msg.contains("output `pixels`: dim 2 is 256 in the graph, height"),
            "{msg}"
        );
    }

    #[test]
    fn missing_tensors_are_named() {
        let spec = decoder_spec();
        let diffs = diff_graph(&spec, &[], &[]);
        let text: Vec<String> = diffs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "input `image_tokens` is in the manifest (image_tokens: int64[batch, grid_height, grid_width]) but not in the graph",
                "output `pixels` is in the manifest (pixels: float[batch, 3, height, width]) but not in the graph",
            ]
        );
    }

    #[test]
    fn symbolic_vs_fixed_follows_the_range() {
        let spec = decoder_spec();
        let out = [obs("pixels", DType::F32, &[None, Some(3), None, None])];
        // grid_height's range is 32..=32, so a graph fixed at 32 is fine; grid_width is not.
        let ok = [obs("image_tokens", DType::I64, &[None, Some(32), None])];
        assert!(diff_graph(&spec, &ok, &out).is_empty());
        let bad = [obs("image_tokens", DType::I64, &[None, None, Some(32)])];
        let diffs = diff_graph(&spec, &bad, &out);
        assert_eq!(diffs.len(), 1);
        assert!(
            diffs[0].to_string().contains("allows 8..=64"),
            "{}",
            diffs[0]
        );
    }

    #[test]
    fn non_tensor_types_are_reported_by_name() {
        let spec = decoder_spec();
        let mut seq = obs("image_tokens", DType::I64, &[None, None, None]);
        seq.dtype = ObservedType::Other("sequence".into());
        let out = [obs("pixels", DType::F32, &[None, Some(3), None, None])];
        let diffs = diff_graph(&spec, &[seq], &out);
        assert_eq!(diffs.len(), 1);
        assert!(
            diffs[0].to_string().contains("sequence in the graph"),
            "{}",
            diffs[0]
        );
    }

    #[test]
    fn runtime_shapes_are_checked_against_ranges() {
        let spec = decoder_spec();
        let input = &spec.inputs[0];
        assert!(check_input_shape(input, &spec.dim_ranges, &[2, 32, 32]).is_ok());
        let rank = check_input_shape(input, &spec.dim_ranges, &[32, 32]).unwrap_err();
        assert!(rank.contains("rank 3"), "{rank}");
        let batch = check_input_shape(input, &spec.dim_ranges, &[9, 32, 32]).unwrap_err();
        assert!(
            batch.contains("`batch`") && batch.contains("1..=8"),
            "{batch}"
        );
        let fixed = TensorSpec::new("x", DType::F32, vec![1.into(), 3.into()]);
        let err = check_input_shape(&fixed, &spec.dim_ranges, &[1, 4]).unwrap_err();
        assert!(err.contains("dim 1 must be 3"), "{err}");
    }
}
