//! State handling between decoder steps, with next to no model compute: the committed tiny
//! DALLE-pytorch fixture (`python-free-tests/fixtures/dalle_cli`: dim 32, 4 layers with all four
//! attention types, 72 positions) is exported twice, `--kv-cache concat` and `--kv-cache
//! in-place`, and stepped through [`dalle::generate::OrtDecoder`] exactly as generation does.
//! Its kernels are small, so a step is mostly the fixed per-step work around the model's
//! compute: ONNX Runtime's per-node dispatch, building and binding the ids, binding the state
//! (concat: every past and a new present per step; in-place: nothing after the first step),
//! taking the presents back, and copying the last logits out. Also times `select_rows` (the one
//! host copy of the state, a prefilled row broadcast to 8).
//!
//! `cargo bench --bench state`

use criterion::{Criterion, criterion_group, criterion_main};
use dalle::generate::{DecoderStep, OrtDecoder, OrtState};
use dalle_bundle::{GraphRole, Manifest, TokenLayout};
use dalle_export::families::dalle_pytorch as dp;
use dalle_export::families::dalle_pytorch::decoder::{DecoderOptions, KvCacheLayout};
use ndarray::Array2;
use ort::session::Session;
use std::path::Path;
use std::time::{Duration, Instant};

const ROWS: usize = 8;

/// Exports the fixture's decoder with `kv_cache`; returns the session, its manifest entry and
/// the token layout.
fn decoder(
    env: &ort::environment::Environment,
    dir: &Path,
    kv_cache: KvCacheLayout,
) -> (Session, dalle_bundle::GraphSpec, TokenLayout) {
    use dalle_export::bundle_writer::{BundleWriter, ExternalDataPolicy};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ckpt = match dp::load(&root.join("python-free-tests/fixtures/dalle_cli/dalle.pt")) {
        Ok(c) => c,
        Err(e) => panic!("fixture checkpoint: {e}"),
    };
    let cfg = ckpt.cfg.clone();
    let prov = dalle_bundle::Provenance {
        exporter: "bench".into(),
        sources: vec![],
        notes: vec![],
    };
    let out = dir.join(kv_cache.name());
    let committed = BundleWriter::create(
        &out,
        dalle_bundle::ModelFamily::DallePytorch,
        prov,
        false,
        ExternalDataPolicy::default(),
    )
    .and_then(|mut w| {
        let opts = DecoderOptions {
            kv_cache,
            ..Default::default()
        };
        w.add_graph(dp::decoder_entry(&cfg, ckpt.transformer, opts)?)?;
        w.commit()
    });
    let bundle = match committed {
        Ok(b) => b,
        Err(e) => panic!("export: {e}"),
    };
    let spec = match Manifest::read_from_dir(&bundle)
        .and_then(|m| Ok(m.graph(GraphRole::Decoder)?.clone()))
    {
        Ok(s) => s,
        Err(e) => panic!("manifest: {e}"),
    };
    let session =
        Session::builder(env).and_then(|mut b| b.commit_from_file(bundle.join("decoder.onnx")));
    match session {
        Ok(s) => (s, spec, cfg.token_layout()),
        Err(e) => panic!("session: {e}"),
    }
}

/// A prefilled text row broadcast to [`ROWS`] rows.
fn fresh_state(dec: &mut OrtDecoder, text_len: usize) -> OrtState {
    let mut logits = Array2::zeros((0, 0));
    let prompt = Array2::from_elem((1, text_len), 1i64);
    let mut one = dec.empty_state(1).unwrap_or_else(|e| panic!("{e}"));
    dec.step(prompt.view(), &mut one, &mut logits)
        .unwrap_or_else(|e| panic!("prefill: {e}"));
    dec.select_rows(&one, &[0; ROWS])
        .unwrap_or_else(|e| panic!("broadcast: {e}"))
}

fn bench(c: &mut Criterion) {
    let env = match dalle::ort_lib::load(None, false) {
        Ok(env) => env,
        Err(e) => panic!("ONNX Runtime: {e}"),
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let mut group = c.benchmark_group("decoder_state");
    for kv_cache in [KvCacheLayout::Concat, KvCacheLayout::InPlace] {
        let (session, spec, layout) = decoder(&env, dir.path(), kv_cache);
        let mut dec =
            OrtDecoder::new(session, &spec, &layout).unwrap_or_else(|e| panic!("decoder: {e}"));
        let text_len = (layout.text_length + 1) as usize;
        let capacity = text_len + (layout.image_length() - 1) as usize;
        let image_id = layout.image_token_offset as i64;
        let ids = Array2::from_elem((ROWS, 1), image_id);
        let mut logits = Array2::zeros((0, 0));

        // Steady-state steps: a state is refilled (untimed) when it is full.
        let mut state = fresh_state(&mut dec, text_len);
        group.bench_function(format!("step_{ROWS}_rows/{}", kv_cache.name()), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if state.past_length() >= capacity {
                        state = fresh_state(&mut dec, text_len);
                        dec.step(ids.view(), &mut state, &mut logits)
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                    let t = Instant::now();
                    dec.step(ids.view(), &mut state, &mut logits)
                        .unwrap_or_else(|e| panic!("step: {e}"));
                    total += t.elapsed();
                }
                total
            })
        });

        let mut one = dec.empty_state(1).unwrap_or_else(|e| panic!("{e}"));
        let prompt = Array2::from_elem((1, text_len), 1i64);
        dec.step(prompt.view(), &mut one, &mut logits)
            .unwrap_or_else(|e| panic!("prefill: {e}"));
        group.bench_function(
            format!("select_rows_1_to_{ROWS}/{}", kv_cache.name()),
            |b| {
                b.iter(|| {
                    dec.select_rows(&one, &[0; ROWS])
                        .unwrap_or_else(|e| panic!("broadcast: {e}"))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
