//! TensorRT optimization-profile strings built from the manifest.
//!
//! ONNX Runtime's TensorRT provider takes three strings (`trt_profile_{min,opt,max}_shapes`), each
//! `name:d1xd2x...,name2:...`, and wants every dynamic input listed in all three. They come from
//! the manifest: a symbolic dim takes its `dim_ranges` entry's min/opt/max, a fixed dim stays as
//! is. Inputs without symbolic dims need no profile and are left out; a graph without dynamic
//! inputs gets no profile at all. A decoder's prefill and decode sessions narrow some ranges
//! first ([`super::phases`]) and pass them to [`trt_profile_with`].

use crate::error::{Error, Result};
use dalle_bundle::{Dim, DimRange, GraphRole, GraphSpec};
use std::collections::BTreeMap;

/// The three profile strings for one graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrtProfile {
    pub min: String,
    pub opt: String,
    pub max: String,
}

/// The profile for `spec`'s dynamic inputs, or `None` when all inputs are static.
pub fn trt_profile(role: GraphRole, spec: &GraphSpec) -> Result<Option<TrtProfile>> {
    trt_profile_with(role, spec, &spec.dim_ranges)
}

/// The profile for `spec`'s dynamic inputs with the symbolic dims' ranges taken from `ranges`
/// (the manifest's `dim_ranges`, or a phase's narrowed copy of them).
pub fn trt_profile_with(
    role: GraphRole,
    spec: &GraphSpec,
    ranges: &BTreeMap<String, DimRange>,
) -> Result<Option<TrtProfile>> {
    let mut min = Vec::new();
    let mut opt = Vec::new();
    let mut max = Vec::new();
    for input in &spec.inputs {
        if input.dims.iter().all(|d| d.fixed().is_some()) {
            continue;
        }
        let mut dims = [Vec::new(), Vec::new(), Vec::new()];
        for dim in &input.dims {
            let (lo, mid, hi) = match dim {
                Dim::Fixed(n) => (*n, *n, *n),
                Dim::Symbolic(name) => {
                    let DimRange { min, opt, max } =
                        *ranges.get(name).ok_or_else(|| Error::EpPlan {
                            role,
                            message: format!(
                                "input `{}` uses symbolic dim `{name}`, which has no entry in dim_ranges \
                                 (TensorRT needs min/opt/max for it)",
                                input.name
                            ),
                        })?;
                    (min, opt, max)
                }
            };
            dims[0].push(lo.to_string());
            dims[1].push(mid.to_string());
            dims[2].push(hi.to_string());
        }
        min.push(format!("{}:{}", input.name, dims[0].join("x")));
        opt.push(format!("{}:{}", input.name, dims[1].join("x")));
        max.push(format!("{}:{}", input.name, dims[2].join("x")));
    }
    if min.is_empty() {
        return Ok(None);
    }
    Ok(Some(TrtProfile {
        min: min.join(","),
        opt: opt.join(","),
        max: max.join(","),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dalle_bundle::{DType, TensorSpec};
    use std::collections::BTreeMap;

    fn spec(inputs: Vec<TensorSpec>, ranges: &[(&str, DimRange)]) -> GraphSpec {
        GraphSpec {
            file: "g.onnx".into(),
            external_data: None,
            inputs,
            outputs: vec![],
            dim_ranges: ranges
                .iter()
                .map(|(n, r)| (n.to_string(), *r))
                .collect::<BTreeMap<_, _>>(),
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn several_dynamic_inputs_share_ranges() {
        let s = spec(
            vec![
                TensorSpec::new(
                    "input_ids",
                    DType::I64,
                    vec![Dim::sym("batch"), Dim::sym("sequence")],
                ),
                TensorSpec::new(
                    "past_key_values.0.key",
                    DType::F32,
                    vec![
                        Dim::sym("batch"),
                        4.into(),
                        Dim::sym("past_sequence_length"),
                        16.into(),
                    ],
                ),
            ],
            &[
                ("batch", DimRange::new(1, 4, 8)),
                ("sequence", DimRange::new(1, 1, 256)),
                ("past_sequence_length", DimRange::new(0, 1024, 1279)),
            ],
        );
        let p = trt_profile(GraphRole::Decoder, &s).unwrap().unwrap();
        assert_eq!(p.min, "input_ids:1x1,past_key_values.0.key:1x4x0x16");
        assert_eq!(p.opt, "input_ids:4x1,past_key_values.0.key:4x4x1024x16");
        assert_eq!(p.max, "input_ids:8x256,past_key_values.0.key:8x4x1279x16");
    }

    #[test]
    fn static_inputs_are_left_out() {
        let s = spec(
            vec![
                TensorSpec::new("fixed", DType::F32, vec![1.into(), 3.into()]),
                TensorSpec::new(
                    "image_tokens",
                    DType::I64,
                    vec![Dim::sym("batch"), 32.into(), 32.into()],
                ),
            ],
            &[("batch", DimRange::new(1, 1, 4))],
        );
        let p = trt_profile(GraphRole::DvaeDecoder, &s).unwrap().unwrap();
        assert_eq!(p.min, "image_tokens:1x32x32");
        assert_eq!(p.max, "image_tokens:4x32x32");
    }

    #[test]
    fn all_static_means_no_profile() {
        let s = spec(
            vec![TensorSpec::new("x", DType::F32, vec![1.into(), 3.into()])],
            &[],
        );
        assert_eq!(trt_profile(GraphRole::DvaeEncoder, &s).unwrap(), None);
    }

    #[test]
    fn missing_range_is_an_error_naming_the_input() {
        let s = spec(
            vec![TensorSpec::new(
                "pixels",
                DType::F32,
                vec![Dim::sym("batch")],
            )],
            &[],
        );
        let err = trt_profile(GraphRole::DvaeEncoder, &s).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`pixels`") && msg.contains("`batch`"), "{msg}");
    }
}
