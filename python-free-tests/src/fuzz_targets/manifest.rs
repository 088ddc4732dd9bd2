//! `manifest.json`: parse + validation ([`Manifest::from_json`]), the typed attributes of each
//! graph, the token layout, and the manifest/graph contract ([`dalle::contract`]).
//!
//! Properties of an accepted manifest: it re-reads from its own JSON to the same value; a graph
//! that declares exactly the manifest's inputs and outputs matches it; every input's smallest
//! and largest allowed shapes pass [`check_input_shape`], and one past the largest does not.

use dalle::contract::{ObservedDim, ObservedTensor, ObservedType, check_input_shape, diff_graph};
use dalle_bundle::{
    ClipImageAttributes, ClipTextAttributes, DecoderAttributes, Dim, DimRange, DvaeAttributes,
    GraphRole, GraphSpec, KvCacheAttribute, Manifest, TensorSpec,
};
use std::collections::BTreeMap;
use std::path::Path;

pub(super) fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("manifest.json");
    let Ok(manifest) = Manifest::from_json(text, path) else {
        return;
    };
    let again = Manifest::from_json(&manifest.to_json(), path)
        .expect("a manifest that was accepted fails to re-read from its own JSON");
    assert_eq!(
        again, manifest,
        "the manifest does not survive a JSON round trip"
    );

    if let Some(layout) = &manifest.token_layout {
        let _ = layout.image_length();
    }
    for (role, graph) in &manifest.graphs {
        attributes(*role, graph);
        contract(graph);
    }
}

/// The typed attributes the runtime reads for this role (errors are fine, panics are not).
fn attributes(role: GraphRole, graph: &GraphSpec) {
    let _ = dalle_bundle::PrecisionAttributes::from_spec(graph);
    match role {
        GraphRole::DvaeEncoder | GraphRole::DvaeDecoder => {
            let _ = DvaeAttributes::from_spec(graph);
            let _ = dalle_bundle::VqganAttributes::from_spec(graph);
        }
        GraphRole::TextEncoder | GraphRole::CrossKv => {
            let _ = dalle_bundle::MinDalleAttributes::from_spec(graph);
        }
        GraphRole::Decoder => {
            let _ = DecoderAttributes::from_spec(graph);
            let _ = KvCacheAttribute::from_spec(graph);
        }
        GraphRole::ClipText => {
            let _ = ClipTextAttributes::from_spec(graph);
        }
        GraphRole::ClipImage => {
            let _ = ClipImageAttributes::from_spec(graph);
        }
    }
}

fn contract(graph: &GraphSpec) {
    let inputs: Vec<ObservedTensor> = graph.inputs.iter().map(observed).collect();
    let outputs: Vec<ObservedTensor> = graph.outputs.iter().map(observed).collect();
    let mismatches = diff_graph(graph, &inputs, &outputs);
    assert!(
        mismatches.is_empty(),
        "a graph declaring exactly the manifest's I/O differs from it: {mismatches:?}"
    );
    for input in &graph.inputs {
        shapes(input, &graph.dim_ranges);
    }
}

/// What a graph file declaring exactly `spec` would report.
fn observed(spec: &TensorSpec) -> ObservedTensor {
    ObservedTensor {
        name: spec.name.clone(),
        dtype: ObservedType::Tensor(spec.dtype),
        dims: spec
            .dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => ObservedDim::Fixed(*n),
                Dim::Symbolic(s) => ObservedDim::Dynamic(Some(s.clone())),
            })
            .collect(),
    }
}

fn shapes(input: &TensorSpec, ranges: &BTreeMap<String, DimRange>) {
    let pick = |f: fn(&DimRange) -> u64| -> Option<Vec<usize>> {
        input
            .dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => usize::try_from(*n).ok(),
                Dim::Symbolic(s) => ranges.get(s).and_then(|r| usize::try_from(f(r)).ok()),
            })
            .collect()
    };
    for shape in [pick(|r| r.min), pick(|r| r.max)].into_iter().flatten() {
        if let Err(e) = check_input_shape(input, ranges, &shape) {
            panic!(
                "the allowed shape {shape:?} of `{}` is refused: {e}",
                input.name
            );
        }
    }
    let past_max = input.dims.iter().position(|d| match d {
        Dim::Symbolic(s) => ranges.get(s).is_some_and(|r| r.max < u64::MAX),
        Dim::Fixed(_) => false,
    });
    if let (Some(axis), Some(mut shape)) = (past_max, pick(|r| r.max))
        && let Some(d) = shape.get_mut(axis)
        && let Some(next) = d.checked_add(1)
    {
        *d = next;
        assert!(
            check_input_shape(input, ranges, &shape).is_err(),
            "the shape {shape:?} of `{}` is past its dim range yet accepted",
            input.name
        );
    }
}
