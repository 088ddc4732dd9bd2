//! Text-to-image generation end to end on ONNX Runtime: a tiny hand-built decoder step graph
//! (one `past_key_values.0.key|value` pair concatenated along axis 2, logits a deterministic
//! function of the ids and the whole past) plus a small random dVAE, through the engine (the
//! concatenated cache: rows grouped by start). Covers prefill with an empty past, IoBinding
//! state hand-over, batching, guidance, priming, outputs, and errors.

use dalle::engine::{
    self, Engine, InitInput, OrtDallePytorch, PromptInput, Request, RequestRules, SamplingOverrides,
};
use dalle::ep::{EpChoice, EpOptions};
use dalle::generate::{self, PromptInfo};
use dalle::{Bundle, dvae, preprocess};
use dalle_bundle::io::decoder::{INPUT_IDS, KvKind, LOGITS, past_name, present_name};
use dalle_bundle::io::dims::{BATCH, PAST_SEQUENCE, SEQUENCE, TOTAL_SEQUENCE};
use dalle_bundle::{DType, DimRange, GraphRole, TokenLayout};
use dalle_export::bundle_writer::GraphEntry;
use dalle_export::dims;
use dalle_export::families::openai_dvae::{self, DecoderConfig, EncoderConfig};
use dalle_export::graph::GraphBuilder;
use dalle_export::graph::ops::*;
use dalle_export::tensor::TensorData;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const TEXT_LENGTH: u64 = 4;
const TEXT_VOCAB: u64 = 10;
const GRID: u64 = 32;
const IMAGE_VOCAB: u64 = 32;
const OFFSET: u64 = TEXT_VOCAB + TEXT_LENGTH;
const VOCAB: u64 = OFFSET + IMAGE_VOCAB;

fn layout() -> TokenLayout {
    TokenLayout {
        text_length: TEXT_LENGTH,
        text_vocab_size: TEXT_VOCAB,
        bos_id: 0,
        pad_id_base: TEXT_VOCAB,
        image_grid: GRID,
        image_vocab_size: IMAGE_VOCAB,
        image_token_offset: OFFSET,
        total_vocab_size: VOCAB,
    }
}

/// `logits = table[ids] + sin(0.37 · Σ present.key) · w`, `present.* = concat(past.*, ids)`.
fn tiny_decoder() -> GraphEntry {
    let v = VOCAB as usize;
    let mut g = GraphBuilder::new("tiny_decoder");
    let ids = g
        .input(INPUT_IDS, DType::I64, dims![BATCH, SEQUENCE])
        .unwrap();
    let kv_dims = || dims![BATCH, 1, PAST_SEQUENCE, 1];
    let past_k = g
        .input(&past_name(0, KvKind::Key), DType::F32, kv_dims())
        .unwrap();
    let past_v = g
        .input(&past_name(0, KvKind::Value), DType::F32, kv_dims())
        .unwrap();
    let table: Vec<f32> = (0..v * v)
        .map(|i| ((i as f32 * 0.7391).sin() * 3.0).round() / 2.0)
        .collect();
    let table = g
        .initializer("table", TensorData::from_f32(vec![v, v], &table).unwrap())
        .unwrap();
    let w: Vec<f32> = (0..v).map(|i| (i as f32 * 1.3).cos() * 2.0).collect();
    let w = g
        .initializer("w", TensorData::from_f32(vec![v], &w).unwrap())
        .unwrap();
    let x = g.node1(Cast { to: DType::F32 }, &[ids]).unwrap();
    let axes = g.const_i64(&[1, 3]).unwrap();
    let new = g.node1(Unsqueeze, &[x, axes]).unwrap();
    let present_k = g.node1(Concat { axis: 2 }, &[past_k, new]).unwrap();
    let present_v = g.node1(Concat { axis: 2 }, &[past_v, new]).unwrap();
    let sum_axes = g.const_i64(&[1, 2, 3]).unwrap();
    let sum = g
        .node1(ReduceSum { keepdims: false }, &[present_k, sum_axes])
        .unwrap();
    let scale = g.scalar_float(0.37, DType::F32).unwrap();
    let sum = g.node1(Mul, &[sum, scale]).unwrap();
    let wave = g.node1(Sin, &[sum]).unwrap();
    let last = g.const_i64(&[1, 2]).unwrap();
    let wave = g.node1(Unsqueeze, &[wave, last]).unwrap();
    let bias = g.node1(Mul, &[wave, w]).unwrap();
    let rows = g.node1(Gather { axis: 0 }, &[table, ids]).unwrap();
    let logits = g.node1(Add, &[rows, bias]).unwrap();
    g.output_as(LOGITS, logits, dims![BATCH, SEQUENCE, VOCAB])
        .unwrap();
    let total = || dims![BATCH, 1, TOTAL_SEQUENCE, 1];
    g.output_as(&present_name(0, KvKind::Key), present_k, total())
        .unwrap();
    g.output_as(&present_name(0, KvKind::Value), present_v, total())
        .unwrap();
    let mut dim_ranges = BTreeMap::new();
    dim_ranges.insert(BATCH.to_string(), DimRange::new(1, 4, 8));
    dim_ranges.insert(SEQUENCE.to_string(), DimRange::new(1, 1, 1 + 4 + 1024));
    dim_ranges.insert(
        PAST_SEQUENCE.to_string(),
        DimRange::new(0, 512, 1 + 4 + 1024),
    );
    GraphEntry {
        role: GraphRole::Decoder,
        graph: g,
        dim_ranges,
        attributes: BTreeMap::new(),
    }
}

/// A bundle with the tiny decoder (unless `decoder` is false) and a random 32-code dVAE.
fn bundle(dir: &Path, decoder: bool) -> PathBuf {
    let enc = EncoderConfig {
        n_hid: 8,
        n_blk_per_group: 1,
        input_channels: 3,
        vocab_size: IMAGE_VOCAB as usize,
    };
    let dec = DecoderConfig {
        n_init: 8,
        n_hid: 8,
        n_blk_per_group: 1,
        output_channels: 3,
        vocab_size: IMAGE_VOCAB as usize,
    };
    let mut w = python_free_tests::test_writer(
        &dir.join(if decoder { "b" } else { "dvae_only" }),
        dalle_bundle::ModelFamily::RandomDemo,
    );
    w.add_graph(
        openai_dvae::encoder_entry(&enc, openai_dvae::random_encoder(&enc, 1).unwrap()).unwrap(),
    )
    .unwrap();
    w.add_graph(
        openai_dvae::decoder_entry(&dec, openai_dvae::random_decoder(&dec, 2).unwrap()).unwrap(),
    )
    .unwrap();
    if decoder {
        w.add_graph(tiny_decoder()).unwrap();
        w.manifest_mut().token_layout = Some(layout());
    }
    w.commit().unwrap()
}

fn open(path: &Path) -> Bundle {
    python_free_tests::ort_env();
    let options = EpOptions {
        ep: EpChoice::Cpu,
        ..EpOptions::default()
    };
    Bundle::open(path, options).unwrap()
}

/// Primes `req` with the demo picture.
fn prime_with_sample(req: &mut Request, rows: u64) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo/sample.png");
    req.init = Some(InitInput::Image {
        image: preprocess::load_image(&path).unwrap(),
        rows: Some(rows),
    });
}

fn request(candidates: usize, seed: u64) -> Request {
    Request {
        prompt: PromptInput::Ids(vec![3, 4]),
        candidates,
        sampling: SamplingOverrides {
            top_k: Some(8),
            seed: Some(seed),
            ..SamplingOverrides::default()
        },
        init: None,
        rerank: None,
    }
}

/// An engine on the bundle whose calls hold at most `rows` rows.
fn engine(path: &Path, rows: usize) -> (Engine<OrtDallePytorch>, RequestRules) {
    let b = open(path);
    let rules = RequestRules::from_bundle(&b).unwrap();
    let (model, _) = OrtDallePytorch::from_bundle(b, None).unwrap();
    (Engine::new(model, Some(rows)), rules)
}

fn run(e: &mut Engine<OrtDallePytorch>, rules: &RequestRules, r: Request) -> engine::Generation {
    engine::generate(e, rules.validate(r).unwrap(), &mut |_| {}).unwrap()
}

#[test]
fn generates_pngs_grid_and_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, rules) = engine(&bundle(dir.path(), true), 2);
    let req = rules.validate(request(3, 7)).unwrap();
    let mut sampled = 0;
    let out = engine::generate(&mut e, req, &mut |n| sampled += n).unwrap();
    assert_eq!(sampled, 3 * 1024);
    assert_eq!(out.tokens.len(), 3);
    assert!(
        out.tokens
            .iter()
            .all(|t| t.len() == 1024 && t.iter().all(|&c| c < 32))
    );
    assert_eq!(out.pixels.shape(), &[3, 3, 256, 256]);
    let s = &out.timings.sampling;
    assert_eq!(
        s.steps,
        2 * 1023,
        "two waves of candidates, one step per token after the first"
    );
    assert!(s.loop_model <= s.loop_total);
    eprintln!(
        "tiny decoder: prefill {:?}, {} steps, {:?}/step, {:?}/step outside ORT ({:.0}% in ORT)",
        s.prefill,
        s.steps,
        s.step_mean(),
        s.overhead_mean(),
        s.model_share() * 100.0
    );

    let prompt = PromptInfo {
        prompt: "a red circle".into(),
        text_token_ids: out.request.text.ids.clone(),
        token_count: 2,
        truncated: false,
        init_image: None,
    };
    let target = dir.path().join("out");
    let files = generate::write(&target, &out, &prompt, &out.request.params, None).unwrap();
    assert_eq!(files.len(), 3 + 2);
    for name in ["candidate_00.png", "candidate_02.png", "grid.png"] {
        let bytes = std::fs::read(target.join(name)).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "{name}");
    }
    let grid = preprocess::load_image(&target.join("grid.png")).unwrap();
    assert_eq!(
        (grid.width(), grid.height()),
        (
            2 * 256 + generate::gutter(256),
            2 * 256 + generate::gutter(256)
        ),
        "3 candidates: 2×2 grid with a gutter"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(target.join("generation.json")).unwrap()).unwrap();
    assert_eq!(json["prompt"], "a red circle");
    assert_eq!(json["seed"], 7);
    assert_eq!(json["settings"]["top_k"], 8);
    assert_eq!(json["settings"]["batch"], 2);
    assert_eq!(json["text_token_ids"], serde_json::json!([3, 4, 0, 0]));
    let c1: Vec<u32> =
        serde_json::from_value(json["candidates"][1]["image_tokens"].clone()).unwrap();
    assert_eq!(c1, out.tokens[1]);
    for key in [
        "prefill_ms",
        "step_mean_ms",
        "ort_run_share",
        "decode_ms",
        "total_ms",
        "session_load_ms",
    ] {
        assert!(json["timings"][key].is_number(), "{key}: {json}");
    }
}

#[test]
fn same_seed_same_tokens_whatever_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = bundle(dir.path(), true);
    let tokens = |rows, seed| {
        let (mut e, rules) = engine(&path, rows);
        run(&mut e, &rules, request(3, seed)).tokens
    };
    let base = tokens(3, 11);
    assert_eq!(tokens(3, 11), base, "same seed, same tokens");
    assert_eq!(tokens(1, 11), base, "batch 1");
    assert_eq!(tokens(2, 11), base, "batch 2");
    assert_ne!(tokens(3, 12), base, "another seed");
    assert_ne!(base[0], base[1], "candidates differ");
}

#[test]
fn guidance_and_priming_run_on_ort() {
    let dir = tempfile::tempdir().unwrap();
    let path = bundle(dir.path(), true);
    let (mut e, rules) = engine(&path, 8);
    let mut req = request(2, 3);
    req.sampling.cond_scale = Some(3.0);
    prime_with_sample(&mut req, 4);
    let Some(InitInput::Image { image, .. }) = req.init.clone() else {
        unreachable!()
    };
    let out = run(&mut e, &rules, req);
    assert_eq!(out.primed, 4 * 32);
    assert_eq!(out.batch, 2, "both guided candidates at once (8 rows)");
    let codes = dvae::encode(&mut open(&path), &image).unwrap();
    let first: Vec<u32> = codes.iter().take(128).map(|&c| c as u32).collect();
    for t in &out.tokens {
        assert_eq!(t[..128], first[..], "primed rows are the image's");
        assert_eq!(t.len(), 1024);
    }
    assert_eq!(out.timings.sampling.steps, 1024 - 128 - 1);
}

#[test]
fn bad_requests_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&bundle(dir.path(), true));
    let rules = RequestRules::from_bundle(&b).unwrap();
    let bad = |f: &dyn Fn(&mut Request)| {
        let mut req = request(1, 0);
        f(&mut req);
        rules.validate(req).unwrap_err().to_string()
    };
    let e = bad(&|r| r.sampling.temperature = Some(0.0));
    assert!(e.contains("invalid temperature"), "{e}");
    let e = bad(&|r| r.sampling.top_k = Some(0));
    assert!(e.contains("invalid top_k"), "{e}");
    let e = bad(&|r| r.candidates = 0);
    assert!(e.contains("invalid candidates"), "{e}");
    let e = bad(&|r| r.prompt = PromptInput::Ids(vec![1, 2, 3, 4, 5]));
    assert!(e.contains("at most 4"), "{e}");
    let e = bad(&|r| prime_with_sample(r, 32));
    assert!(e.contains("init_rows"), "{e}");

    let dvae_only = open(&bundle(dir.path(), false));
    let e = RequestRules::from_bundle(&dvae_only)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("token_layout"), "{e}");
}
