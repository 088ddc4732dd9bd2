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

/// Row-batch checks (rows at different positions in one call): max |error| on fp32 logits.
const ROWS_ATOL: f32 = 1e-5;

/// The decoder's state between calls: the `past_*` tensors and, for an in-place cache, the
/// number of tokens each row holds (fed as `cache_length`).
#[derive(Clone)]
struct State {
    tensors: BTreeMap<String, ArrayD<f32>>,
    cache_length: Option<Vec<usize>>,
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
        cache_length: in_place.then(|| vec![0; batch]),
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
    if let Some(lengths) = &state.cache_length {
        let lengths: Vec<i64> = lengths.iter().map(|&n| n as i64).collect();
        inputs.push((
            io::CACHE_LENGTH.to_string(),
            i64_input(ArrayD::from_shape_vec(IxDyn(&[lengths.len()]), lengths).unwrap()),
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
        cache_length: state
            .cache_length
            .as_ref()
            .map(|lengths| lengths.iter().map(|n| n + fed).collect()),
    };
    (logits, next)
}

/// Compares logits; masked entries must be exactly -f32::MAX in both.
fn compare(case: &str, what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>) -> f32 {
    compare_within(case, what, got, want, LOGITS_ATOL)
}

/// [`compare`] with tolerance `atol`.
fn compare_within(case: &str, what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>, atol: f32) -> f32 {
    assert_eq!(got.shape(), want.shape(), "{case} {what}");
    let mut worst = 0.0f32;
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        if *w == -f32::MAX {
            assert_eq!(*g, -f32::MAX, "{case} {what}: entry {i} should be masked");
        } else {
            let d = (g - w).abs();
            assert!(
                d.is_finite() && d <= atol,
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

/// Calls after the batched one: the rows advance together from their different positions.
const EXTRA_STEPS: usize = 3;

/// One batch state from single-row in-place states: each row's valid key/value prefix (the
/// rest NaN: a row must never read past its own `cache_length`), each row's shift window as is.
fn assemble_rows(rows: &[State]) -> State {
    let lengths: Vec<usize> = rows
        .iter()
        .map(|r| r.cache_length.as_ref().unwrap()[0])
        .collect();
    let tensors = rows[0]
        .tensors
        .keys()
        .map(|name| {
            let parts: Vec<_> = rows.iter().map(|r| r.tensors[name].view()).collect();
            let mut t = ndarray::concatenate(Axis(0), &parts).unwrap();
            if name.starts_with("past_key_values.") {
                for (b, &n) in lengths.iter().enumerate() {
                    t.index_axis_mut(Axis(0), b)
                        .slice_axis_mut(Axis(1), Slice::from(n..))
                        .fill(f32::NAN);
                }
            }
            (name.clone(), t)
        })
        .collect();
    State {
        tensors,
        cache_length: Some(lengths),
    }
}

/// In-place cache, rows at different positions in one call (`cache_length` per row): row 0 at
/// the end of the prompt, row 1 37 tokens further (halfway to row 2 where the sequence is
/// short), row 2 near the end. Each row is first run alone (teacher-forced prefill to its
/// position); the batched call and [`EXTRA_STEPS`] more must give each row its reference logits
/// and its logits run alone.
fn rows_at_different_positions(case: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ids = read_npy(&fixture(case).join("input_ids.npy")).i64();
    let want = read_npy(&fixture(case).join("logits.npy")).f32();
    let (sequences, len) = (ids.shape()[0], ids.shape()[1]);
    let seq_of = |r: usize| r % sequences;
    for logits in [LogitsOutput::Full, LogitsOutput::LastImage] {
        let opts = DecoderOptions {
            logits,
            kv_cache: KvCacheLayout::InPlace,
        };
        let (bundle, cfg) = export_decoder_with(case, dir.path(), opts);
        let manifest = Manifest::read_from_dir(&bundle).unwrap();
        let spec = manifest.graph(GraphRole::Decoder).unwrap();
        let batch_dim = || vec![dalle_bundle::Dim::Symbolic("batch".into())];
        assert_eq!(spec.input(io::CACHE_LENGTH).unwrap().dims, batch_dim());
        let window = spec.attributes.get(io::SHIFT_WINDOW_ATTRIBUTE);
        if cfg.shift_tokens {
            assert_eq!(window, Some(&serde_json::json!(cfg.fmap)));
            let shift = io::past_shift_name(0, io::Branch::FeedForward);
            let mut dims = batch_dim();
            dims.extend([cfg.fmap, cfg.dim].map(|n| dalle_bundle::Dim::Fixed(n as u64)));
            assert_eq!(spec.input(&shift).unwrap().dims, dims);
            let present = io::present_for(&shift).unwrap();
            assert_eq!(spec.output(&present).unwrap().dims, dims);
        } else {
            assert_eq!(window, None);
        }
        let mut s = session_from_file(&bundle.join("decoder.onnx"));
        let (out_name, offset) = match logits {
            LogitsOutput::Full => (io::LOGITS, 0),
            LogitsOutput::LastImage => (io::IMAGE_LOGITS, cfg.num_text_tokens_internal()),
        };
        // The reference logits of row r at position t, shaped like one row of the output.
        let reference = |r: usize, t: usize| {
            let l = want
                .slice_axis(Axis(0), Slice::from(seq_of(r)..seq_of(r) + 1))
                .slice_axis(Axis(1), Slice::from(t..t + 1))
                .slice_axis(Axis(2), Slice::from(offset..))
                .to_owned();
            match logits {
                LogitsOutput::Full => l,
                LogitsOutput::LastImage => l.index_axis(Axis(1), 0).to_owned(),
            }
        };
        let text_len = cfg.text_len();
        let last = len - 1 - EXTRA_STEPS;
        let middle = if text_len + 37 < last {
            text_len + 37
        } else {
            (text_len + last) / 2
        };
        let starts = [text_len, middle, last];
        let tokens = |rows: &[usize], t: &dyn Fn(usize) -> usize| {
            let v: Vec<i64> = rows.iter().map(|&r| ids[[seq_of(r), t(r)]]).collect();
            ArrayD::from_shape_vec(IxDyn(&[rows.len(), 1]), v).unwrap()
        };

        // Each row alone: teacher-forced prefill up to its position, then one token per call.
        let mut prefilled = vec![];
        // alone[k][r]: row r's output on its k-th call after the prefill.
        let mut alone: Vec<Vec<ArrayD<f32>>> = vec![vec![]; EXTRA_STEPS + 1];
        for (r, &start) in starts.iter().enumerate() {
            let prompt = ids
                .slice_axis(Axis(0), Slice::from(seq_of(r)..seq_of(r) + 1))
                .slice_axis(Axis(1), Slice::from(..start))
                .to_owned();
            let (_, mut state) = step_output(&mut s, out_name, prompt, &empty_state(&manifest, 1));
            prefilled.push(state.clone());
            for (k, outs) in alone.iter_mut().enumerate() {
                let (l, next) = step_output(&mut s, out_name, tokens(&[r], &|_| start + k), &state);
                outs.push(l);
                state = next;
            }
        }

        // One batch: every row at its own position, advancing together.
        let mut state = assemble_rows(&prefilled);
        let (mut vs_reference, mut vs_alone) = (0.0f32, 0.0f32);
        let rows = [0, 1, 2];
        for (k, alone_k) in alone.iter().enumerate() {
            let (l, next) =
                step_output(&mut s, out_name, tokens(&rows, &|r| starts[r] + k), &state);
            for r in rows {
                let t = starts[r] + k;
                let row = l.index_axis(Axis(0), r).insert_axis(Axis(0)).to_owned();
                let what = format!("{out_name} row {r} at {t} (batched call {k})");
                vs_reference = vs_reference.max(compare_within(
                    case,
                    &what,
                    &row,
                    &reference(r, t),
                    ROWS_ATOL,
                ));
                vs_alone = vs_alone.max(compare_within(
                    case,
                    &format!("{what} vs alone"),
                    &row,
                    &alone_k[r],
                    ROWS_ATOL,
                ));
            }
            state = next;
        }
        assert_eq!(
            state.cache_length,
            Some(starts.iter().map(|p| p + EXTRA_STEPS + 1).collect())
        );
        eprintln!(
            "{case} ({out_name}): rows at {starts:?} in one batch, {} calls: max |error| vs \
             reference {vs_reference:e}, vs each row alone {vs_alone:e}",
            EXTRA_STEPS + 1
        );
    }
}

#[test]
fn in_place_rows_at_different_positions_all_attention_types() {
    rows_at_different_positions("dalle_cli");
}

#[test]
fn in_place_rows_at_different_positions_rotary_shift_sandwich() {
    rows_at_different_positions("dalle_ctor");
}

#[test]
fn in_place_rows_at_different_positions_reversible() {
    rows_at_different_positions("dalle_reversible");
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
        err.contains("OpenAI dVAE file") && err.contains("not a DALLE-pytorch"),
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

/// How [`decoder_run`] builds its `OrtDecoder`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum DecoderSetup {
    /// `OrtDecoder::new`: one CPU session, state on the host.
    Plain,
    /// The host plan with row moves through host copies, as device state moves them.
    MovesThroughHost,
    /// TensorRT's shape: a prefill and a decode session (both CPU here), row moves through host
    /// copies.
    PhaseSessions,
}

/// Prefill 1 row, select it into 3 rows (and, per-row, copy a row across), feed 2 tokens after
/// the past, then one per call: the last-position logits of every call after the prefill.
fn decoder_run(kv_cache: KvCacheLayout, setup: DecoderSetup) -> Vec<ndarray::Array2<f32>> {
    use dalle::ep::{DecoderMemoryPlan, DecoderPhase};
    use dalle::generate::{DecoderStep, OrtDecoder};
    let case = "dalle_cli";
    let ids = read_npy(&fixture(case).join("input_ids.npy")).i64();
    let (batch, len) = (ids.shape()[0], ids.shape()[1]);
    let rows = 3;
    let opts = DecoderOptions {
        logits: LogitsOutput::LastImage,
        kv_cache,
    };
    let dir = tempfile::tempdir().unwrap();
    let (bundle, cfg) = export_decoder_with(case, dir.path(), opts);
    let manifest = Manifest::read_from_dir(&bundle).unwrap();
    let spec = manifest.graph(GraphRole::Decoder).unwrap();
    let session = || session_from_file(&bundle.join("decoder.onnx"));
    let through_host = DecoderMemoryPlan {
        row_moves_through_host: true,
        ..DecoderMemoryPlan::host(spec)
    };
    let layout = cfg.token_layout();
    let mut dec = match setup {
        DecoderSetup::Plain => OrtDecoder::new(session(), spec, &layout).unwrap(),
        DecoderSetup::MovesThroughHost => OrtDecoder::with_plan(
            vec![(DecoderPhase::All, session())],
            &through_host,
            spec,
            &layout,
        )
        .unwrap(),
        DecoderSetup::PhaseSessions => OrtDecoder::with_plan(
            vec![
                (DecoderPhase::Prefill, session()),
                (DecoderPhase::Decode, session()),
            ],
            &through_host,
            spec,
            &layout,
        )
        .unwrap(),
    };
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
    if dec.per_row_positions() {
        // the same row again, through copy_rows: nothing changes but the path is taken
        dec.copy_rows(&one, &[0], &mut state, &[1]).unwrap();
    }
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
    got
}

fn max_difference(a: &[ndarray::Array2<f32>], b: &[ndarray::Array2<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f32;
    for (a, b) in a.iter().zip(b) {
        assert_eq!(a.dim(), b.dim());
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    worst
}

/// The runtime's state handling of an in-place cache (buffers bound as past and present, rows
/// copied by `select_rows`, several tokens after a past on a multi-row batch) against the
/// concatenated cache, through `OrtDecoder` as generation uses it; and a clear error when the
/// cache is full.
#[test]
fn in_place_cache_through_the_runtime_matches_concat() {
    let concat = decoder_run(KvCacheLayout::Concat, DecoderSetup::Plain);
    let in_place = decoder_run(KvCacheLayout::InPlace, DecoderSetup::Plain);
    let worst = max_difference(&concat, &in_place);
    assert!(worst <= LOGITS_ATOL, "in-place vs concat: {worst:e}");
    eprintln!("runtime in-place vs concat: max |difference| {worst:e}");
}

/// What a device plan changes, run on the CPU: rows moved through host copies (as device
/// state is) give the same logits bit for bit; a prefill and a decode session (TensorRT's
/// shape: a call after an empty past goes to the first, later calls to the second, several
/// tokens after a past one at a time) give the same logits within the tolerance (feeding two
/// tokens as two calls reorders float sums).
#[test]
fn device_plans_row_moves_and_phase_sessions_match_the_host_path() {
    for kv_cache in [KvCacheLayout::Concat, KvCacheLayout::InPlace] {
        let plain = decoder_run(kv_cache, DecoderSetup::Plain);
        let moved = decoder_run(kv_cache, DecoderSetup::MovesThroughHost);
        assert_eq!(plain, moved, "{kv_cache:?}: row moves through the host");
        let phased = decoder_run(kv_cache, DecoderSetup::PhaseSessions);
        let worst = max_difference(&plain, &phased);
        assert!(
            worst <= LOGITS_ATOL,
            "{kv_cache:?} phase sessions: {worst:e}"
        );
        eprintln!("{kv_cache:?}: phase sessions vs one session: max |difference| {worst:e}");
    }
}
