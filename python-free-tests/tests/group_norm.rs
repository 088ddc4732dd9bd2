//! The shared group-norm layer (`dalle_export::layers::group_norm`) against `torch.nn.GroupNorm`
//! (fixtures by `tools/fixtures/group_norm_fixtures.py`): fp32, atol 1e-4 — the reference
//! outputs are O(1) (unit variance after the norm, weight ≈ 1 ± 0.2), so 1e-4 is ~1000 ulps of
//! headroom for the two-pass mean/variance over at most 70 elements per group.

use dalle_bundle::{DType, Dim};
use dalle_export::graph::GraphBuilder;
use dalle_export::layers::group_norm;
use dalle_export::tensor::TensorData;
use prost::Message;
use python_free_tests::{assert_close, f32_input, fixture, read_npy, run, session_from_bytes};

struct Case {
    groups: usize,
    channels: usize,
    eps: f32,
    shape: Vec<usize>,
}

fn read_case(dir: &std::path::Path) -> Case {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let n = |k: &str| v[k].as_u64().unwrap() as usize;
    Case {
        groups: n("groups"),
        channels: n("channels"),
        eps: v["eps"].as_f64().unwrap() as f32,
        shape: v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect(),
    }
}

fn param(case: &str, name: &str) -> TensorData {
    let a = read_npy(&fixture("group_norm").join(case).join(name)).f32();
    TensorData::from_f32(a.shape().to_vec(), a.as_slice().unwrap()).unwrap()
}

fn check_case(case: &str) {
    let dir = fixture("group_norm").join(case);
    let c = read_case(&dir);
    let mut g = GraphBuilder::new("group_norm");
    // Batch and spatial dims symbolic, channels fixed: the layer must keep them symbolic.
    let mut dims = vec![Dim::Symbolic("batch".into()), Dim::Fixed(c.channels as u64)];
    dims.extend((2..c.shape.len()).map(|i| Dim::Symbolic(format!("d{i}"))));
    let x = g.input("x", DType::F32, dims.clone()).unwrap();
    let w = g
        .initializer("norm.weight", param(case, "weight.npy"))
        .unwrap();
    let b = g.initializer("norm.bias", param(case, "bias.npy")).unwrap();
    let y = g
        .scoped("norm", |g| group_norm(g, x, w, b, c.groups, c.eps))
        .unwrap();
    assert_eq!(g.info(y).unwrap().shape, dims, "{case}: output dims");
    g.output("y", y).unwrap();
    let model = g.finish().unwrap();
    let ops: Vec<&str> = model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.as_deref().unwrap_or(""))
        .collect();
    assert!(
        !ops.contains(&"GroupNormalization"),
        "{case}: emits GroupNormalization: {ops:?}"
    );
    let mut s = session_from_bytes(&model.encode_to_vec());
    let xin = read_npy(&dir.join("x.npy")).f32();
    assert_eq!(xin.shape(), c.shape.as_slice());
    let got = run(&mut s, vec![("x", f32_input(xin))]).remove(0).f32();
    let want = read_npy(&dir.join("y.npy")).f32();
    assert_close(case, &got, &want, 1e-4);
}

#[test]
fn group_norm_matches_torch_taming_config() {
    check_case("taming_32x64");
}

#[test]
fn group_norm_matches_torch_rank5_few_groups() {
    check_case("mindalle_4x8_rank5");
}

#[test]
fn group_norm_rejects_channels_that_do_not_split() {
    let mut g = GraphBuilder::new("bad");
    let x = g
        .input(
            "x",
            DType::F32,
            vec![Dim::Fixed(1), Dim::Fixed(6), Dim::Fixed(2)],
        )
        .unwrap();
    let w = g.const_f32(vec![6], &[1.0; 6]).unwrap();
    let b = g.const_f32(vec![6], &[0.0; 6]).unwrap();
    let e = group_norm(&mut g, x, w, b, 4, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("6 channels do not split into 4 groups"), "{e}");
}
