use dalle_bundle::{DType, Dim};
use dalle_export::dims;
use dalle_export::graph::ops::*;
use dalle_export::graph::{GraphBuilder, Value, check, proto_io, text};
use dalle_export::proto;
use dalle_export::tensor::TensorData;
use ndarray::{ArrayD, IxDyn, array};
use prost::Message;
use python_free_tests::{
    assert_close, f32_input, i64_input, run, session_from_bytes, session_from_file,
};

fn bytes(g: GraphBuilder) -> Vec<u8> {
    g.finish().unwrap().encode_to_vec()
}

fn arr(shape: &[usize], v: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// x[2,3] · W[3,2] + b → Softmax(axis -1).
fn matmul_add_softmax() -> GraphBuilder {
    let mut g = GraphBuilder::new("mas");
    let x = g.input("x", DType::F32, dims!["batch", 3]).unwrap();
    let w = g
        .initializer(
            "fc.weight",
            TensorData::from_f32(vec![3, 2], &[1., 0., 0., 1., 1., -1.]).unwrap(),
        )
        .unwrap();
    let b = g
        .initializer(
            "fc.bias",
            TensorData::from_f32(vec![2], &[0.5, -0.5]).unwrap(),
        )
        .unwrap();
    let y = g
        .scoped("fc", |g| {
            let y = g.node1(MatMul, &[x, w])?;
            g.node1(Add, &[y, b])
        })
        .unwrap();
    let p = g.node1(Softmax { axis: -1 }, &[y]).unwrap();
    g.output("probs", p).unwrap();
    g
}

#[test]
fn matmul_add_softmax_matches_hand_computation() {
    let mut s = session_from_bytes(&bytes(matmul_add_softmax()));
    let x = arr(&[2, 3], vec![1., 2., 3., 0., -1., 0.5]);
    let out = run(&mut s, vec![("x", f32_input(x))]).remove(0).f32();
    // Row 0: [1+3, 2-3] + [0.5, -0.5] = [4.5, -1.5]; row 1: [0+0.5, -1-0.5] + b = [1.0, -2.0].
    let softmax = |a: f32, b: f32| {
        let m = a.max(b);
        let (ea, eb) = ((a - m).exp(), (b - m).exp());
        [ea / (ea + eb), eb / (ea + eb)]
    };
    let [a0, a1] = softmax(4.5, -1.5);
    let [b0, b1] = softmax(1.0, -2.0);
    assert_close("softmax", &out, &arr(&[2, 2], vec![a0, a1, b0, b1]), 1e-6);
}

#[test]
fn conv_matches_hand_computation() {
    let mut g = GraphBuilder::new("conv");
    let x = g.input("x", DType::F32, dims![1, 1, 3, 3]).unwrap();
    let w = g
        .initializer(
            "w",
            TensorData::from_f32(vec![1, 1, 2, 2], &[1.; 4]).unwrap(),
        )
        .unwrap();
    let b = g
        .initializer("b", TensorData::from_f32(vec![1], &[0.5]).unwrap())
        .unwrap();
    let conv = Conv {
        kernel_shape: vec![2, 2],
        strides: vec![1, 1],
        pads: vec![0; 4],
        dilations: vec![1, 1],
        group: 1,
    };
    let y = g.node1(conv, &[x, w, b]).unwrap();
    assert_eq!(g.shape(y).unwrap(), &dims![1, 1, 2, 2]);
    g.output("y", y).unwrap();
    let mut s = session_from_bytes(&bytes(g));
    let x = arr(&[1, 1, 3, 3], (1..=9).map(|v| v as f32).collect());
    let out = run(&mut s, vec![("x", f32_input(x))]).remove(0).f32();
    assert_close(
        "conv",
        &out,
        &arr(&[1, 1, 2, 2], vec![12.5, 16.5, 24.5, 28.5]),
        1e-6,
    );
}

#[test]
fn layer_norm_matches_hand_computation() {
    let mut g = GraphBuilder::new("ln");
    let x = g.input("x", DType::F32, dims!["batch", 4]).unwrap();
    let scale = g
        .initializer(
            "ln.weight",
            TensorData::from_f32(vec![4], &[2.; 4]).unwrap(),
        )
        .unwrap();
    let bias = g
        .initializer("ln.bias", TensorData::from_f32(vec![4], &[0.5; 4]).unwrap())
        .unwrap();
    let y = g
        .node1(
            LayerNormalization {
                axis: -1,
                epsilon: 1e-5,
            },
            &[x, scale, bias],
        )
        .unwrap();
    g.output("y", y).unwrap();
    let mut s = session_from_bytes(&bytes(g));
    let out = run(
        &mut s,
        vec![("x", f32_input(arr(&[1, 4], vec![1., 2., 3., 4.])))],
    )
    .remove(0)
    .f32();
    let sd = (1.25f32 + 1e-5).sqrt();
    let want: Vec<f32> = [1., 2., 3., 4.]
        .iter()
        .map(|v: &f32| (v - 2.5) / sd * 2.0 + 0.5)
        .collect();
    assert_close("layernorm", &out, &arr(&[1, 4], want), 1e-5);
}

#[test]
fn gather_looks_up_rows() {
    let mut g = GraphBuilder::new("gather");
    let ids = g.input("ids", DType::I64, dims!["batch", "seq"]).unwrap();
    let table = g
        .initializer(
            "emb.weight",
            TensorData::from_f32(vec![4, 2], &[0., 1., 10., 11., 20., 21., 30., 31.]).unwrap(),
        )
        .unwrap();
    let y = g.node1(Gather { axis: 0 }, &[table, ids]).unwrap();
    assert_eq!(g.shape(y).unwrap(), &dims!["batch", "seq", 2]);
    g.output("y", y).unwrap();
    let mut s = session_from_bytes(&bytes(g));
    let ids = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![3i64, 0]).unwrap();
    let out = run(&mut s, vec![("ids", i64_input(ids))]).remove(0).f32();
    assert_close(
        "gather",
        &out,
        &arr(&[1, 2, 2], vec![30., 31., 0., 1.]),
        0.0,
    );
}

const D: usize = 4;

/// One causal attention head with a KV cache:
///
/// ```text
/// x[1,S,D] ─ Wq ─ q ───────────────┐
///          ─ Wk ─ k ─ Concat(past_k) ─ present_k ─ Transpose ─ MatMul ─ ×1/√D ─ Where(mask) ─ Softmax ─ MatMul ─ out
///          ─ Wv ─ v ─ Concat(past_v) ─ present_v ──────────────────────────────────────────────────────┘
/// mask[S,T] = key_pos[T] > query_pos[S], query_pos = past_len + [0, S)
/// ```
fn attention_graph(wq: &[f32], wk: &[f32], wv: &[f32]) -> GraphBuilder {
    let mut g = GraphBuilder::new("attn");
    let x = g.input("x", DType::F32, dims![1, "sequence", D]).unwrap();
    let past_k = g
        .input("past_key", DType::F32, dims![1, "past_sequence_length", D])
        .unwrap();
    let past_v = g
        .input(
            "past_value",
            DType::F32,
            dims![1, "past_sequence_length", D],
        )
        .unwrap();
    let proj = |g: &mut GraphBuilder, name: &str, w: &[f32]| -> Value {
        let w = g
            .initializer(name, TensorData::from_f32(vec![D, D], w).unwrap())
            .unwrap();
        g.scoped(name, |g| g.node1(MatMul, &[x, w])).unwrap()
    };
    let q = proj(&mut g, "q_proj", wq);
    let k = proj(&mut g, "k_proj", wk);
    let v = proj(&mut g, "v_proj", wv);
    let (k, v) = g
        .scoped("cache", |g| {
            let k = g.node1(Concat { axis: 1 }, &[past_k, k])?;
            let v = g.node1(Concat { axis: 1 }, &[past_v, v])?;
            Ok((k, v))
        })
        .unwrap();
    assert_eq!(
        g.shape(k).unwrap(),
        &dims![1, "past_sequence_length+sequence", D]
    );
    let mask = g
        .scoped("mask", |g| {
            let axis0 = g.const_i64(&[0])?;
            let past_len = g.node1(
                Shape {
                    start: Some(1),
                    end: Some(2),
                },
                &[past_k],
            )?;
            let seq_len = g.node1(
                Shape {
                    start: Some(1),
                    end: Some(2),
                },
                &[x],
            )?;
            let total = g.node1(Add, &[past_len, seq_len])?;
            let past_len = g.node1(Squeeze, &[past_len, axis0])?;
            let total = g.node1(Squeeze, &[total, axis0])?;
            let zero = g.scalar_i64(0)?;
            let one = g.scalar_i64(1)?;
            let q_pos = g.node1(Range, &[past_len, total, one])?;
            let k_pos = g.node1(Range, &[zero, total, one])?;
            let axis1 = g.const_i64(&[1])?;
            let q_pos = g.node1(Unsqueeze, &[q_pos, axis1])?;
            let k_pos = g.node1(Unsqueeze, &[k_pos, axis0])?;
            g.node1(Greater, &[k_pos, q_pos])
        })
        .unwrap();
    let out = g
        .scoped("attn", |g| {
            let kt = g.node1(
                Transpose {
                    perm: vec![0, 2, 1],
                },
                &[k],
            )?;
            let scores = g.node1(MatMul, &[q, kt])?;
            let scale = g.scalar_float(1.0 / (D as f32).sqrt(), DType::F32)?;
            let scores = g.node1(Mul, &[scores, scale])?;
            let neg = g.scalar_float(-f32::MAX, DType::F32)?;
            let scores = g.node1(Where, &[mask, neg, scores])?;
            let p = g.node1(Softmax { axis: -1 }, &[scores])?;
            g.node1(MatMul, &[p, v])
        })
        .unwrap();
    g.output("out", out).unwrap();
    g.output_as("present_key", k, dims![1, "total_sequence_length", D])
        .unwrap();
    g.output_as("present_value", v, dims![1, "total_sequence_length", D])
        .unwrap();
    g
}

/// Plain causal attention over the whole sequence, for reference.
fn reference_attention(x: &[f32], s: usize, wq: &[f32], wk: &[f32], wv: &[f32]) -> Vec<f32> {
    let mm = |a: &[f32], w: &[f32]| -> Vec<f32> {
        (0..s)
            .flat_map(|i| {
                (0..D).map(move |j| (0..D).map(|k| a[i * D + k] * w[k * D + j]).sum::<f32>())
            })
            .collect()
    };
    let (q, k, v) = (mm(x, wq), mm(x, wk), mm(x, wv));
    let mut out = vec![0.0; s * D];
    for i in 0..s {
        let scores: Vec<f32> = (0..=i)
            .map(|j| (0..D).map(|d| q[i * D + d] * k[j * D + d]).sum::<f32>() / (D as f32).sqrt())
            .collect();
        let m = scores.iter().cloned().fold(f32::MIN, f32::max);
        let e: Vec<f32> = scores.iter().map(|v| (v - m).exp()).collect();
        let z: f32 = e.iter().sum();
        for d in 0..D {
            out[i * D + d] = (0..=i).map(|j| e[j] / z * v[j * D + d]).sum();
        }
    }
    out
}

#[test]
fn causal_attention_with_kv_cache_matches_reference_incrementally() {
    let w = |seed: f32| -> Vec<f32> {
        (0..D * D)
            .map(|i| ((i as f32 * 0.37 + seed).sin()) * 0.5)
            .collect()
    };
    let (wq, wk, wv) = (w(0.1), w(1.3), w(2.7));
    let mut s = session_from_bytes(&bytes(attention_graph(&wq, &wk, &wv)));
    let total = 5;
    let x: Vec<f32> = (0..total * D).map(|i| ((i as f32) * 0.61).cos()).collect();
    let want = reference_attention(&x, total, &wq, &wk, &wv);

    // One call over everything, with an empty cache.
    let empty = || f32_input(arr(&[1, 0, D], vec![]));
    let outs = run(
        &mut s,
        vec![
            ("x", f32_input(arr(&[1, total, D], x.clone()))),
            ("past_key", empty()),
            ("past_value", empty()),
        ],
    );
    assert_close(
        "full",
        &outs[0].clone().f32(),
        &arr(&[1, total, D], want.clone()),
        1e-5,
    );

    // Prefill 3, then one token per call, feeding present back as past.
    let outs = run(
        &mut s,
        vec![
            ("x", f32_input(arr(&[1, 3, D], x[..3 * D].to_vec()))),
            ("past_key", empty()),
            ("past_value", empty()),
        ],
    );
    let mut got = outs[0].clone().f32().into_raw_vec_and_offset().0;
    let (mut pk, mut pv) = (outs[1].clone().f32(), outs[2].clone().f32());
    for t in 3..total {
        let step = f32_input(arr(&[1, 1, D], x[t * D..(t + 1) * D].to_vec()));
        let outs = run(
            &mut s,
            vec![
                ("x", step),
                ("past_key", f32_input(pk)),
                ("past_value", f32_input(pv)),
            ],
        );
        got.extend(outs[0].clone().f32().iter());
        pk = outs[1].clone().f32();
        pv = outs[2].clone().f32();
        assert_eq!(pk.shape(), &[1, t + 1, D]);
    }
    assert_close(
        "incremental",
        &arr(&[1, total, D], got),
        &arr(&[1, total, D], want),
        1e-5,
    );
}

fn demo_decoder(seed: u64) -> GraphBuilder {
    use dalle_export::families::openai_dvae::{DecoderConfig, decoder, random_decoder};
    let cfg = DecoderConfig {
        n_init: 8,
        n_hid: 8,
        n_blk_per_group: 1,
        output_channels: 3,
        vocab_size: 16,
    };
    let mut w = random_decoder(&cfg, seed).unwrap();
    let g = decoder::build(&cfg, &mut w).unwrap();
    w.finish().unwrap();
    g
}

#[test]
fn same_input_gives_byte_identical_onnx() {
    assert_eq!(bytes(demo_decoder(3)), bytes(demo_decoder(3)));
    assert_eq!(bytes(matmul_add_softmax()), bytes(matmul_add_softmax()));
    assert_ne!(bytes(demo_decoder(3)), bytes(demo_decoder(4)));
}

#[test]
fn external_data_model_loads_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let inline_path = dir.path().join("inline.onnx");
    let ext_path = dir.path().join("ext.onnx");
    proto_io::write_model(demo_decoder(5).finish().unwrap(), &inline_path, None).unwrap();
    let ext = proto_io::ExternalData::beside("ext.onnx");
    let written =
        proto_io::write_model(demo_decoder(5).finish().unwrap(), &ext_path, Some(&ext)).unwrap();
    let data_path = written
        .data_path
        .clone()
        .expect("large tensors went external");
    assert_eq!(data_path, dir.path().join("ext.onnx.data"));
    assert!(
        written.model_bytes < written.data_bytes / 2,
        "weights left the .onnx: {written:?}"
    );

    // Every external tensor starts on a 64-byte boundary and lies inside the file.
    let model = proto_io::read_model(&ext_path).unwrap();
    let data_len = std::fs::metadata(&data_path).unwrap().len();
    let mut external = 0;
    for t in &model.graph.as_ref().unwrap().initializer {
        let get = |k: &str| {
            t.external_data
                .iter()
                .find(|e| e.key.as_deref() == Some(k))
                .and_then(|e| e.value.clone())
        };
        if let Some(off) = get("offset") {
            let (off, len): (u64, u64) = (
                off.parse().unwrap(),
                get("length").unwrap().parse().unwrap(),
            );
            assert_eq!(off % 64, 0, "{:?} at {off}", t.name);
            assert!(off + len <= data_len);
            assert_eq!(get("location").as_deref(), Some("ext.onnx.data"));
            external += 1;
        }
    }
    assert!(external > 10);

    // Both run in ORT and agree exactly; reading the external data back restores the model.
    let tokens =
        || i64_input(ArrayD::from_shape_vec(IxDyn(&[1, 2, 3]), vec![0, 5, 15, 3, 9, 1]).unwrap());
    let a = run(
        &mut session_from_file(&inline_path),
        vec![("image_tokens", tokens())],
    )
    .remove(0)
    .f32();
    let b = run(
        &mut session_from_file(&ext_path),
        vec![("image_tokens", tokens())],
    )
    .remove(0)
    .f32();
    assert_eq!(a.shape(), &[1, 3, 16, 24]);
    assert_eq!(a, b);
    let mut restored = model.clone();
    proto_io::load_external_data(&mut restored, &ext_path).unwrap();
    assert_eq!(
        restored.encode_to_vec(),
        proto_io::read_model(&inline_path).unwrap().encode_to_vec()
    );
}

#[test]
fn external_data_outside_the_model_dir_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    proto_io::write_model(
        demo_decoder(1).finish().unwrap(),
        &path,
        Some(&proto_io::ExternalData::beside("m.onnx")),
    )
    .unwrap();
    let mut model = proto_io::read_model(&path).unwrap();
    for t in &mut model.graph.as_mut().unwrap().initializer {
        for e in &mut t.external_data {
            if e.key.as_deref() == Some("location") {
                e.value = Some("../../etc/passwd".into());
            }
        }
    }
    let err = proto_io::load_external_data(&mut model, &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("leaves the model's directory"), "{err}");
}

/// x → Relu → Add(c) → y, as a proto to break in each test below.
fn valid_model() -> proto::ModelProto {
    let mut g = GraphBuilder::new("valid");
    let x = g.input("x", DType::F32, dims![2]).unwrap();
    let c = g
        .initializer("c", TensorData::from_f32(vec![2], &[1., 2.]).unwrap())
        .unwrap();
    let r = g.node1(Relu, &[x]).unwrap();
    let y = g.node1(Add, &[r, c]).unwrap();
    g.output("y", y).unwrap();
    g.finish().unwrap()
}

fn broken(f: impl FnOnce(&mut proto::ModelProto)) -> String {
    let mut m = valid_model();
    f(&mut m);
    check::validate(&m).unwrap_err()
}

fn graph(m: &mut proto::ModelProto) -> &mut proto::GraphProto {
    m.graph.as_mut().unwrap()
}

#[test]
fn each_validation_rule_rejects_its_broken_graph() {
    check::validate(&valid_model()).unwrap();
    type Breakage = Box<dyn FnOnce(&mut proto::ModelProto)>;
    let cases: Vec<(&str, Breakage)> = vec![
        ("declares no IR version", Box::new(|m| m.ir_version = None)),
        (
            "does not import the default ONNX opset",
            Box::new(|m| m.opset_import.clear()),
        ),
        (
            "which has no opset import",
            Box::new(|m| graph(m).node[0].domain = Some("com.microsoft".into())),
        ),
        ("declares no outputs", Box::new(|m| graph(m).output.clear())),
        (
            "has no tensor type",
            Box::new(|m| graph(m).input[0].r#type = None),
        ),
        (
            "is used twice",
            Box::new(|m| {
                let n = graph(m).node[0].name.clone();
                graph(m).node[1].name = n;
            }),
        ),
        (
            "is defined twice",
            Box::new(|m| {
                let o = graph(m).node[0].output.clone();
                graph(m).node[1].output = o;
            }),
        ),
        (
            "not in topological order",
            Box::new(|m| graph(m).node.swap(0, 1)),
        ),
        (
            "defined nowhere (dangling)",
            Box::new(|m| graph(m).node[1].input[0] = "ghost".into()),
        ),
        (
            "is not produced by any node",
            Box::new(|m| graph(m).output[0].name = Some("ghost".into())),
        ),
        (
            "is dead",
            Box::new(|m| {
                let mut n = graph(m).node[0].clone();
                n.name = Some("/unused".into());
                n.output = vec!["unused".into()];
                graph(m).node.push(n);
            }),
        ),
        (
            "is never read",
            Box::new(|m| {
                let mut t = graph(m).initializer[0].clone();
                t.name = Some("orphan".into());
                graph(m).initializer.push(t);
            }),
        ),
        ("has no name", Box::new(|m| graph(m).node[0].name = None)),
    ];
    for (message, f) in cases {
        let err = broken(f);
        assert!(err.contains(message), "expected `{message}` in: {err}");
    }
}

#[test]
fn finish_rejects_dead_nodes() {
    let mut g = GraphBuilder::new("dead");
    let x = g.input("x", DType::F32, dims![2]).unwrap();
    let _unused = g.node1(Relu, &[x]).unwrap();
    let y = g.node1(Neg, &[x]).unwrap();
    g.output("y", y).unwrap();
    let err = g.finish().unwrap_err().to_string();
    assert!(
        err.contains("invalid graph `dead`") && err.contains("node `/Relu` is dead"),
        "{err}"
    );
}

#[test]
fn wiring_errors_name_the_node_and_operands() {
    let mut g = GraphBuilder::new("bad");
    let a = g.input("a", DType::F32, dims![2, 3]).unwrap();
    let b = g.input("b", DType::F32, dims![4, 5]).unwrap();
    let err = g
        .scoped("layers.3/attn", |g| g.node1(MatMul, &[a, b]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "in /layers.3/attn/MatMul (MatMul): inner dimensions differ: [2, 3] x [4, 5]"
    );

    let i = g.input("i", DType::I64, dims![2]).unwrap();
    let err = g.node1(Add, &[a, i]).unwrap_err().to_string();
    assert!(
        err.contains("operands `a` (float[2, 3]) and `i` (int64[2]) have different dtypes"),
        "{err}"
    );

    let err = g.node1(Relu, &[a, a]).unwrap_err().to_string();
    assert!(err.contains("expects 1 inputs, got 2"), "{err}");

    g.named("proj", Relu, &[a]).unwrap();
    let err = g.named("proj", Relu, &[a]).unwrap_err().to_string();
    assert!(
        err.contains("/proj") && err.contains("already exists"),
        "{err}"
    );

    let x = g.input("x", DType::F32, dims!["batch", 3, 8, 8]).unwrap();
    let w = g
        .initializer(
            "w",
            TensorData::from_f32(vec![4, 2, 3, 3], &[0.; 72]).unwrap(),
        )
        .unwrap();
    let err = g.node1(Conv::same(3), &[x, w]).unwrap_err().to_string();
    assert!(
        err.contains("input has 3 channels but weight [4, 2, 3, 3] expects 2"),
        "{err}"
    );

    assert!(
        g.input("x", DType::F32, dims![1])
            .unwrap_err()
            .to_string()
            .contains("already exists")
    );
}

#[test]
fn symbolic_shapes_are_inferred() {
    let mut g = GraphBuilder::new("shapes");
    let x = g.input("x", DType::F32, dims!["batch", "seq", 8]).unwrap();
    let shape = g.const_i64(&[0, 0, 2, 4]).unwrap();
    let y = g.node1(Reshape, &[x, shape]).unwrap();
    assert_eq!(g.shape(y).unwrap(), &dims!["batch", "seq", 2, 4]);
    let t = g
        .node1(
            Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[y],
        )
        .unwrap();
    assert_eq!(g.shape(t).unwrap(), &dims!["batch", 2, "seq", 4]);
    let back = g.const_i64(&[0, 0, -1]).unwrap();
    let z = g.node1(Reshape, &[y, back]).unwrap();
    assert_eq!(g.shape(z).unwrap(), &dims!["batch", "seq", 8]);
    let axes = g.const_i64(&[-1]).unwrap();
    let m = g.node1(ReduceMean { keepdims: true }, &[x, axes]).unwrap();
    assert_eq!(g.shape(m).unwrap(), &dims!["batch", "seq", 1]);
    assert_eq!(g.shape(x).unwrap()[0], Dim::sym("batch"));
}

#[test]
fn constants_are_deduplicated() {
    let mut g = GraphBuilder::new("consts");
    let a = g.scalar_float(0.5, DType::F32).unwrap();
    let b = g.scalar_float(0.5, DType::F32).unwrap();
    let c = g.scalar_float(0.25, DType::F32).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(g.info(a).unwrap().name, "/constants/float/[]/0.5");
}

#[test]
fn text_dump_is_stable() {
    let dump = text::dump(&matmul_add_softmax().finish().unwrap());
    let want = "\
model ir=8 opset=ai.onnx:18 producer=dalle-export 0.1.0
graph mas
inputs:
  x: float[batch, 3]
outputs:
  probs: float[batch, 2]
initializers: 2 (32 bytes)
  fc.weight: float[3, 2]
  fc.bias: float[2]
nodes: 3
  /fc/MatMul = MatMul(x, fc.weight) -> /fc/MatMul/output_0: float[batch, 2]
  /fc/Add = Add(/fc/MatMul/output_0, fc.bias) -> /fc/Add/output_0: float[batch, 2]
  /Softmax = Softmax(/fc/Add/output_0) {axis=-1} -> probs: float[batch, 2]
";
    assert_eq!(dump, want);
}

#[test]
fn reshaped_array_helper_sanity() {
    // Guards the helpers themselves: a mismatch must be reported with its position.
    let a = array![1.0f32, 2.0].into_dyn();
    let b = array![1.0f32, 2.5].into_dyn();
    let r = std::panic::catch_unwind(|| assert_close("x", &a, &b, 0.1));
    assert!(r.is_err());
}

/// `ConvTranspose` by its definition: every input pixel scatters `x · w` into the output at
/// `i·stride − pad + k` (kept where in range).
fn conv_transpose_by_definition(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    bias: &[f32],
    (stride, pad): (usize, usize),
) -> ArrayD<f32> {
    let (b, cin, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (cout, k) = (w.shape()[1], w.shape()[2]);
    let (oh, ow) = (
        stride * (h - 1) + k - 2 * pad,
        stride * (wd - 1) + k - 2 * pad,
    );
    let mut out = ArrayD::<f32>::zeros(IxDyn(&[b, cout, oh, ow]));
    for n in 0..b {
        for co in 0..cout {
            for y in 0..oh {
                for xx in 0..ow {
                    out[[n, co, y, xx]] = bias[co];
                }
            }
            for ci in 0..cin {
                for i in 0..h {
                    for j in 0..wd {
                        for ki in 0..k {
                            for kj in 0..k {
                                let (oy, ox) = (i * stride + ki, j * stride + kj);
                                if oy < pad || ox < pad || oy - pad >= oh || ox - pad >= ow {
                                    continue;
                                }
                                out[[n, co, oy - pad, ox - pad]] +=
                                    x[[n, ci, i, j]] * w[[ci, co, ki, kj]];
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn conv_transpose_matches_hand_computation() {
    // Kernel 2×2 of ones, stride 2, no padding: each pixel becomes a 2×2 block, plus the bias.
    let mut g = GraphBuilder::new("convt_block");
    let x = g.input("x", DType::F32, dims![1, 1, 2, 2]).unwrap();
    let w = g
        .initializer(
            "w",
            TensorData::from_f32(vec![1, 1, 2, 2], &[1.; 4]).unwrap(),
        )
        .unwrap();
    let b = g
        .initializer("b", TensorData::from_f32(vec![1], &[0.5]).unwrap())
        .unwrap();
    let op = ConvTranspose {
        kernel_shape: vec![2, 2],
        strides: vec![2, 2],
        pads: vec![0; 4],
        output_padding: vec![0, 0],
        dilations: vec![1, 1],
        group: 1,
    };
    let y = g.node1(op, &[x, w, b]).unwrap();
    assert_eq!(g.shape(y).unwrap(), &dims![1, 1, 4, 4]);
    g.output("y", y).unwrap();
    let mut s = session_from_bytes(&bytes(g));
    let out = run(
        &mut s,
        vec![("x", f32_input(arr(&[1, 1, 2, 2], vec![1., 2., 3., 4.])))],
    )
    .remove(0)
    .f32();
    #[rustfmt::skip]
    let want = vec![
        1.5, 1.5, 2.5, 2.5,
        1.5, 1.5, 2.5, 2.5,
        3.5, 3.5, 4.5, 4.5,
        3.5, 3.5, 4.5, 4.5,
    ];
    assert_close("block", &out, &arr(&[1, 1, 4, 4], want), 1e-6);

    // DALLE-pytorch's ConvTranspose2d(2, 3, 4, stride=2, padding=1): overlapping windows,
    // cropped borders, symbolic spatial dims doubled.
    let mut g = GraphBuilder::new("convt_up2");
    let x = g
        .input("x", DType::F32, dims!["batch", 2, "h", "w"])
        .unwrap();
    let wv: Vec<f32> = (0..2 * 3 * 16)
        .map(|i| ((i * 7) % 11) as f32 - 5.0)
        .collect();
    let w = g
        .initializer("w", TensorData::from_f32(vec![2, 3, 4, 4], &wv).unwrap())
        .unwrap();
    let b = g
        .initializer(
            "b",
            TensorData::from_f32(vec![3], &[0.25, -1.0, 2.0]).unwrap(),
        )
        .unwrap();
    let y = g.node1(ConvTranspose::upsample2(4), &[x, w, b]).unwrap();
    assert_eq!(g.shape(y).unwrap(), &dims!["batch", 3, "h*2", "w*2"]);
    g.output("y", y).unwrap();
    let mut s = session_from_bytes(&bytes(g));
    let xv = arr(
        &[1, 2, 2, 3],
        vec![1., -2., 0.5, 3., 0., -1., 2., 1., -0.5, 0., 4., 1.],
    );
    let out = run(&mut s, vec![("x", f32_input(xv.clone()))])
        .remove(0)
        .f32();
    let want =
        conv_transpose_by_definition(&xv, &arr(&[2, 3, 4, 4], wv), &[0.25, -1.0, 2.0], (2, 1));
    assert_eq!(out.shape(), &[1, 3, 4, 6]);
    assert_close("up2", &out, &want, 1e-5);

    // The weight's first axis is C_in: a mismatch names both.
    let mut g = GraphBuilder::new("convt_bad");
    let x = g.input("x", DType::F32, dims![1, 3, 2, 2]).unwrap();
    let w = g
        .initializer(
            "w",
            TensorData::from_f32(vec![2, 3, 4, 4], &[0.; 96]).unwrap(),
        )
        .unwrap();
    let err = g
        .node1(ConvTranspose::upsample2(4), &[x, w])
        .unwrap_err()
        .to_string();
    assert!(err.contains("input has 3 channels"), "{err}");
}

#[test]
fn f16_and_bf16_initializers_load_in_ort() {
    let mut g = GraphBuilder::new("halves");
    let x = g.input("x", DType::F32, dims![3]).unwrap();
    let base = TensorData::from_f32(vec![3], &[1.5, -2.25, 0.125]).unwrap();
    let mut y = x;
    for (name, dt) in [("h.weight", DType::F16), ("b.weight", DType::BF16)] {
        let w = g
            .initializer(name, base.to_float_dtype(dt).unwrap())
            .unwrap();
        assert_eq!(g.dtype(w).unwrap(), dt);
        let w = g.node1(Cast { to: DType::F32 }, &[w]).unwrap();
        y = g.node1(Add, &[y, w]).unwrap();
    }
    g.output("y", y).unwrap();
    // Both with the data inline and moved to external data.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("halves.onnx");
    let ext = proto_io::ExternalData {
        file_name: "halves.onnx.data".into(),
        threshold_bytes: 1,
    };
    let model = g.finish().unwrap();
    let inline = model.encode_to_vec();
    proto_io::write_model(model, &path, Some(&ext)).unwrap();
    for mut s in [session_from_bytes(&inline), session_from_file(&path)] {
        let out = run(&mut s, vec![("x", f32_input(arr(&[3], vec![0.0; 3])))])
            .remove(0)
            .f32();
        assert_close("halves", &out, &arr(&[3], vec![3.0, -4.5, 0.25]), 0.0);
    }
}
