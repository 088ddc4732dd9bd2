use dalle_bundle::io::decoder as io;
use dalle_bundle::{GraphRole, Manifest, ModelFamily};
use dalle_export::families::dalle_pytorch as dp;
use dalle_export::families::dalle_pytorch::decoder::{DecoderOptions, KvCacheLayout, LogitsOutput};
use ndarray::{ArrayD, Axis, IxDyn, Slice};
use ort::session::Session;
use python_free_tests::{f32_input, fixture, i64_input, read_npy, session_from_file};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// fp32 logits: max |error| on unmasked entries.
const LOGITS_ATOL: f32 = 1e-4;

const CASES: [&str; 4] = [
    "dalle_cli",
    "dalle_ctor",
    "dalle_variants",
    "dalle_reversible",
];

fn export_decoder_with(case: &str, dir: &Path, opts: DecoderOptions) -> (PathBuf, dp::DalleConfig) {
    let ckpt = dp::load(&fixture(case).join("dalle.pt")).unwrap();
    let cfg = ckpt.cfg.clone();
    let out = dir.join(format!("{case}-{:?}-{:?}", opts.logits, opts.kv_cache));
    let mut w = python_free_tests::test_writer(&out, ModelFamily::DallePytorch);
    w.add_graph(dp::decoder_entry(&cfg, ckpt.transformer, opts).unwrap())
        .unwrap();
    (w.commit().unwrap(), cfg)
}

/// The decoder's state between calls: the `past_*` tensors and, for an in-place cache, the
/// number of tokens they hold (fed as `cache_length`).
#[derive(Clone)]
struct State {
    tensors: BTreeMap<String, ArrayD<f32>>,
    cache_length: Option<usize>,
}

/// The state inputs of the decoder with zero-length past, shaped from the manifest.
fn empty_state(manifest: &Manifest, batch: usize) -> State {
    let spec = manifest.graph(GraphRole::Decoder).unwrap();
    let tensors = spec
        .inputs
        .iter()
        .filter(|t| t.name.starts_with("past_"))
        .map(|t| {
            let shape: Vec<usize> = t
                .dims
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    dalle_bundle::Dim::Fixed(n) => *n as usize,
                    dalle_bundle::Dim::Symbolic(s) if s == "past_sequence_length" => 0,
                    _ if i == 0 => batch,
                    other => panic!("unexpected dim {other}"),
                })
                .collect();
            (t.name.clone(), ArrayD::zeros(IxDyn(&shape)))
        })
        .collect();
    let in_place = spec.input(io::CACHE_LENGTH).is_some();
    State {
        tensors,
        cache_length: in_place.then_some(0),
    }
}

/// Runs one decoder call; returns the logits and the new state.
fn step(s: &mut Session, ids: ArrayD<i64>, state: &State) -> (ArrayD<f32>, State) {
    step_output(s, io::LOGITS, ids, state)
}

/// Runs one decoder call; returns output `logits_name` and the new state.
fn step_output(
    s: &mut Session,
    logits_name: &str,
    ids: ArrayD<i64>,
    state: &State,
) -> (ArrayD<f32>, State) {
    let fed = ids.shape()[1];
    let mut inputs = vec![(io::INPUT_IDS.to_string(), i64_input(ids))];
    for (name, value) in &state.tensors {
        inputs.push((name.clone(), f32_input(value.clone())));
    }
    if let Some(n) = state.cache_length {
        inputs.push((
            io::CACHE_LENGTH.to_string(),
            i64_input(ArrayD::from_shape_vec(IxDyn(&[1]), vec![n as i64]).unwrap()),
        ));
    }
    let outputs = s.run(inputs).unwrap();
    let logits = outputs[logits_name]
        .try_extract_array::<f32>()
        .unwrap()
        .to_owned();
    let tensors = state
        .tensors
        .keys()
        .map(|past| {
            let present = io::present_for(past).unwrap();
            (
                past.clone(),
                outputs[present.as_str()]
                    .try_extract_array::<f32>()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    let next = State {
        tensors,
        cache_length: state.cache_length.map(|n| n + fed),
    };
    (logits, next)
}

/// Compares logits; masked entries must be exactly -f32::MAX in both.
fn compare(case: &str, what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>) -> f32 {
    assert_eq!(got.shape(), want.shape(), "{case} {what}");
    let mut worst = 0.0f32;
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        if *w == -f32::MAX {
            assert_eq!(*g, -f32::MAX, "{case} {what}: entry {i} should be masked");
        } else {
            let d = (g - w).abs();
            assert!(
                d.is_finite() && d <= LOGITS_ATOL,
                "{case} {what}: |{g} - {w}| = {d} at flat index {i}"
            );
            worst = worst.max(d);
        }
    }
    worst
}

fn parity(case: &str) {
    let dir = tempfile::tempdir().unwrap();
    parity_full(case, dir.path(), KvCacheLayout::Concat);
    parity_last_image(case, dir.path(), KvCacheLayout::Concat);
    let ckpt = dp::load(&fixture(case).join("dalle.pt")).unwrap();
    if ckpt.cfg.dim_head.is_multiple_of(8) {
        parity_full(case, dir.path(), KvCacheLayout::InPlace);
        parity_last_image(case, dir.path(), KvCacheLayout::InPlace);
    } else {
        // ONNX Runtime's GroupQueryAttention takes head sizes that are multiples of 8 only.
        let opts = DecoderOptions {
            logits: LogitsOutput::LastImage,
            kv_cache: KvCacheLayout::InPlace,
        };
        let err = dp::decoder_entry(&ckpt.cfg, ckpt.transformer, opts)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("multiple of 8") && err.contains("--kv-cache concat"),
            "{err}"
        );
    }
}

/// The full-logits graph against the reference logits, teacher-forced and one token at a time.
fn parity_full(case: &str, dir: &Path, kv_cache: KvCacheLayout) {
    let (bundle, cfg) = export_decoder_with(
        case,
        dir,
        DecoderOptions {
            logits: LogitsOutput::Full,
            kv_cache,
        },
    );
    let manifest = Manifest::read_from_dir(&bundle).unwrap();
    let mut s = session_from_file(&bundle.join("decoder.onnx"));
    let ids = read_npy(&fixture(case).join("input_ids.npy")).i64();
    let want = read_npy(&fixture(case).join("logits.npy")).f32();
    let batch = ids.shape()[0];

    // Teacher forcing: the whole sequence in one call with an empty cache.
    let (logits, _) = step(&mut s, ids.clone(), &empty_state(&manifest, batch));
    let full = compare(case, "teacher-forced", &logits, &want);

    // Prefill BOS + text, then one token per call, feeding present back as past.
    let text_len = cfg.text_len();
    let (mut got, mut state) = step(
        &mut s,
        ids.slice_axis(Axis(1), Slice::from(..text_len)).to_owned(),
        &empty_state(&manifest, batch),
    );
    for t in text_len..ids.shape()[1] {
        let (l, next) = step(
            &mut s,
            ids.slice_axis(Axis(1), Slice::from(t..t + 1)).to_owned(),
            &state,
        );
        got = ndarray::concatenate(Axis(1), &[got.view(), l.view()]).unwrap();
        state = next;
    }
    let incremental = compare(case, "incremental", &got, &want);
    eprintln!(
        "{case} ({} cache): max |error| teacher-forced {full:e}, incremental {incremental:e}",
        kv_cache.name()
    );
}

/// The generation graph (`image_logits`, last position only) against the reference logits'
/// image range at the same positions: after the prompt prefill, after each fed image token, and
/// teacher-forced on the whole sequence.
fn parity_last_image(case: &str, dir: &Path, kv_cache: KvCacheLayout) {
    let (bundle, cfg) = export_decoder_with(
        case,
        dir,
        DecoderOptions {
            logits: LogitsOutput::LastImage,
            kv_cache,
        },
    );
    let manifest = Manifest::read_from_dir(&bundle).unwrap();
    let spec = manifest.graph(GraphRole::Decoder).unwrap();
    assert!(spec.output(io::LOGITS).is_none() && spec.output(io::IMAGE_LOGITS).is_some());
    let mut s = session_from_file(&bundle.join("decoder.onnx"));
    let ids = read_npy(&fixture(case).join("input_ids.npy")).i64();
    let want = read_npy(&fixture(case).join("logits.npy")).f32();
    let (batch, len) = (ids.shape()[0], ids.shape()[1]);
    let offset = cfg.num_text_tokens_internal();
    let image_at = |t: usize| {
        want.slice_axis(Axis(1), Slice::from(t..t + 1))
            .slice_axis(Axis(2), Slice::from(offset..))
            .to_owned()
            .into_shape_with_order(IxDyn(&[batch, cfg.num_image_tokens]))
            .unwrap()
    };
    let text_len = cfg.text_len();
    let (mut got, mut state) = step_output(
        &mut s,
        io::IMAGE_LOGITS,
        ids.slice_axis(Axis(1), Slice::from(..text_len)).to_owned(),
        &empty_state(&manifest, batch),
    );
    let mut worst = compare(
        case,
        "image logits after prefill",
        &got,
        &image_at(text_len - 1),
    );
    for t in text_len..len {
        (got, state) = step_output(
            &mut s,
            io::IMAGE_LOGITS,
            ids.slice_axis(Axis(1), Slice::from(t..t + 1)).to_owned(),
            &state,
        );
        worst = worst.max(compare(
            case,
            &format!("image logits at {t}"),
            &got,
            &image_at(t),
        ));
    }
    let (tf, _) = step_output(
        &mut s,
        io::IMAGE_LOGITS,
        ids,
        &empty_state(&manifest, batch),
    );
    worst = worst.max(compare(
        case,
        "image logits teacher-forced",
        &tf,
        &image_at(len - 1),
    ));
    eprintln!(
        "{case} ({} cache): last-image graph max |error| {worst:e}",
        kv_cache.name()
    );
}

#[test]
fn cli_defaults_all_attention_types_match_reference() {
    parity("dalle_cli");
}

#[test]
fn constructor_defaults_rotary_shift_sandwich_match_reference() {
    parity("dalle_ctor");
}

#[test]
fn stable_shared_ids_shared_embeddings_fp16_match_reference() {
    parity("dalle_variants");
}

#[test]
fn reversible_matches_reference() {
    parity("dalle_reversible");
}

#[test]
fn configs_are_read_from_hparams() {
    for case in CASES {
        let ckpt = dp::load(&fixture(case).join("dalle.pt")).unwrap();
        let c = &ckpt.cfg;
        assert_eq!((c.text_seq_len, c.num_text_tokens), (8, 100), "{case}");
        match case {
            "dalle_cli" => assert!(!c.rotary_emb && !c.shift_tokens && c.attn_types.len() == 4),
            "dalle_ctor" => assert!(c.rotary_emb && c.shift_tokens && c.sandwich_norm),
            "dalle_variants" => assert!(
                c.stable && c.share_input_output_emb && c.shared_attn_ids == vec![0, 0, 1, 1]
            ),
            _ => assert!(c.reversible),
        }
    }
}

#[test]
fn unsupported_checkpoints_are_clear_errors() {
    for (file, needle) in [
        (
            "sparse_attention.pt",
            "attention type `sparse` (DeepSpeed SparseSelfAttention)",
        ),
        ("unknown_attention.pt", "attention type `mlp`"),
        ("vqgan_vae.pt", "trained with VQGanVAE"),
        ("deepspeed_placeholder.pt", "zero_to_fp32"),
        ("no_hparams.pt", "no `hparams` dict"),
    ] {
        let path = fixture("dalle_bad").join(file);
        let err = dp::load(&path)
            .err()
            .unwrap_or_else(|| panic!("{file} should be rejected"))
            .to_string();
        assert!(err.contains(needle), "{file}: {err}");
    }
    // A dVAE file is not a DALLE-pytorch checkpoint.
    let err = dp::load(&fixture("dvae_small").join("encoder.pkl"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("forbidden global") || err.contains("not a DALLE-pytorch"),
        "{err}"
    );
}

#[test]
fn missing_and_wrong_shaped_tensors_name_the_tensor() {
    let ckpt = dp::load(&fixture("dalle_cli").join("dalle.pt")).unwrap();
    let cfg = ckpt.cfg.clone();
    let mut tensors = ckpt.transformer.into_map();
    tensors.remove("to_logits.1.bias");
    let err = dp::decoder_entry(
        &cfg,
        dalle_export::weights::Weights::new("edited", tensors.clone()),
        DecoderOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("missing tensor `to_logits.1.bias`"), "{err}");

    let qkv = "transformer.layers.layers.2.0.fn.fn.fn.to_qkv.weight";
    let t = tensors.remove(qkv).unwrap();
    let v = t.to_f32_vec().unwrap();
    tensors.insert(
        qkv.into(),
        dalle_export::TensorData::from_f32(vec![v.len() / 16, 16], &v).unwrap(),
    );
    tensors.insert(
        "to_logits.1.bias".into(),
        dalle_export::TensorData::from_f32(vec![172], &[0.0; 172]).unwrap(),
    );
    let err = dp::decoder_entry(
        &cfg,
        dalle_export::weights::Weights::new("edited", tensors.clone()),
        DecoderOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains(&format!("`{qkv}` has shape [96, 16], expected [48, 32]")),
        "{err}"
    );

    tensors.insert(qkv.into(), t);
    tensors.insert(
        "transformer.extra.weight".into(),
        dalle_export::TensorData::from_f32(vec![1], &[0.0]).unwrap(),
    );
    let err = dp::decoder_entry(
        &cfg,
        dalle_export::weights::Weights::new("edited", tensors),
        DecoderOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("unused tensor") && err.contains("transformer.extra.weight"),
        "{err}"
    );
}

/// `OpenAIDiscreteVAE` checkpoints: the dVAE comes from the checkpoint's own `vae.enc.`/`vae.dec.`
/// tensors or from the released files by flag (which must then be identical).
#[test]
fn openai_dvae_from_checkpoint_or_flags() {
    use dalle_export::weights::Weights;
    let small = fixture("dvae_small");
    let mut cfg = dp::load(&fixture("dalle_cli").join("dalle.pt"))
        .unwrap()
        .cfg;
    cfg.vae = dp::VaeKind::OpenAi;
    cfg.num_image_tokens = 64; // the small dVAE's codebook
    let root = dalle_export::checkpoint::PickleValue::None;
    let inside = || {
        let mut t = BTreeMap::new();
        for (half, file) in [
            ("enc.", "encoder.safetensors"),
            ("dec.", "decoder.safetensors"),
        ] {
            for (k, v) in dalle_export::checkpoint::read_safetensors(&small.join(file)).unwrap() {
                t.insert(format!("{half}{k}"), v);
            }
        }
        Weights::new("ckpt (vae.)", t)
    };
    let files = dp::OpenAiVaeFiles {
        encoder: Some(&small.join("encoder.pkl")),
        decoder: Some(&small.join("decoder.pkl")),
    };

    let roles = |e: Vec<dalle_export::bundle_writer::GraphEntry>| {
        e.iter().map(|e| e.role).collect::<Vec<_>>()
    };
    assert_eq!(
        roles(dp::vae_entries(&cfg, &root, inside(), dp::OpenAiVaeFiles::default()).unwrap()),
        [GraphRole::DvaeEncoder, GraphRole::DvaeDecoder]
    );
    assert_eq!(
        roles(dp::vae_entries(&cfg, &root, inside(), files).unwrap()).len(),
        2
    );
    assert_eq!(
        roles(dp::vae_entries(&cfg, &root, Weights::default(), files).unwrap()).len(),
        2
    );

    let err = dp::vae_entries(
        &cfg,
        &root,
        Weights::default(),
        dp::OpenAiVaeFiles::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("--vae-encoder encoder.pkl"), "{err}");

    // Flags that are not the checkpoint's VAE.
    let swapped = dp::OpenAiVaeFiles {
        encoder: Some(&small.join("encoder.pkl")),
        decoder: Some(&small.join("encoder.pkl")),
    };
    let err = dp::vae_entries(&cfg, &root, inside(), swapped)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("given as the decoder"), "{err}");
    let mut edited = inside().into_map();
    let w = edited.get_mut("enc.blocks.input.b").unwrap();
    let v: Vec<f32> = w.to_f32_vec().unwrap().iter().map(|x| x + 1.0).collect();
    *w = dalle_export::TensorData::from_f32(w.shape().to_vec(), &v).unwrap();
    let err = dp::vae_entries(&cfg, &root, Weights::new("ckpt", edited), files)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("blocks.input.b") && err.contains("not the VAE this model was trained with"),
        "{err}"
    );

    // A codebook that does not match the transformer's image vocabulary.
    cfg.num_image_tokens = 8192;
    let err = dp::vae_entries(&cfg, &root, inside(), dp::OpenAiVaeFiles::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("has 64 codes but the transformer embeds 8192"),
        "{err}"
    );
}

/// The runtime's state handling of an in-place cache (buffers bound as past and present, rows
/// copied by `select_rows`, several tokens after a past on a multi-row batch) against the
/// concatenated cache, through `OrtDecoder` as generation uses it; and a clear error when the
/// cache is full.
#[test]
fn in_place_cache_through_the_runtime_matches_concat() {
    use dalle::generate::{DecoderStep, OrtDecoder};
    let case = "dalle_cli";
    let dir = tempfile::tempdir().unwrap();
    let ids = read_npy(&fixture(case).join("input_ids.npy")).i64();
    let (batch, len) = (ids.shape()[0], ids.shape()[1]);
    let rows = 3;
    let mut runs = vec![];
    for kv_cache in [KvCacheLayout::Concat, KvCacheLayout::InPlace] {
        let opts = DecoderOptions {
            logits: LogitsOutput::LastImage,
            kv_cache,
        };
        let (bundle, cfg) = export_decoder_with(case, dir.path(), opts);
        let manifest = Manifest::read_from_dir(&bundle).unwrap();
        let spec = manifest.graph(GraphRole::Decoder).unwrap();
        let session = session_from_file(&bundle.join("decoder.onnx"));
        let mut dec = OrtDecoder::new(session, spec, &cfg.token_layout()).unwrap();
        let text_len = cfg.text_len();
        let row_ids = |r: usize, from: usize, to: usize| -> Vec<i64> {
            (from..to).map(|t| ids[[r % batch, t]]).collect()
        };
        let mut one = dec.empty_state(1).unwrap();
        let mut logits = ndarray::Array2::zeros((0, 0));
        let prompt = ndarray::Array2::from_shape_vec((1, text_len), row_ids(0, 0, text_len));
        dec.step(prompt.unwrap().view(), &mut one, &mut logits)
            .unwrap();
        let mut state = dec.select_rows(&one, &vec![0; rows]).unwrap();
        let mut got = vec![];
        // Two tokens in one call after the past, then one per call.
        let mut t = text_len;
        while t < len {
            let n = if t == text_len { 2 } else { 1 };
            let step: Vec<i64> = (0..rows).flat_map(|r| row_ids(r, t, t + n)).collect();
            let step = ndarray::Array2::from_shape_vec((rows, n), step).unwrap();
            dec.step(step.view(), &mut state, &mut logits).unwrap();
            got.push(logits.clone());
            t += n;
        }
        assert_eq!(state.past_length(), len);
        if kv_cache == KvCacheLayout::InPlace {
            let one_more = ndarray::Array2::from_elem((rows, 1), ids[[0, len - 1]]);
            let e = dec
                .step(one_more.view(), &mut state, &mut logits)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("in-place cache holds {len} tokens")),
                "{e}"
            );
        }
        runs.push(got);
    }
    let mut worst = 0.0f32;
    for (a, b) in runs[0].iter().zip(&runs[1]) {
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    assert!(worst <= LOGITS_ATOL, "in-place vs concat: {worst:e}");
    eprintln!("runtime in-place vs concat: max |difference| {worst:e}");
}
