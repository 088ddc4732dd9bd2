//! Sampling cost per image token, without ONNX Runtime: the filter chain and the draw over one
//! row of image-vocabulary logits (8192 codes, what the decoder's `image_logits` gives), with
//! and without guidance. This is the host work added to every decoder step per candidate.
//!
//! `cargo bench --bench sampling`

use criterion::{Criterion, criterion_group, criterion_main};
use dalle::sampling::{CandidateRng, ImageTokenSampler, SamplingParams};
use dalle_bundle::TokenLayout;
use std::hint::black_box;

fn layout() -> TokenLayout {
    TokenLayout {
        text_length: 256,
        text_vocab_size: 49408,
        bos_id: 0,
        pad_id_base: 49408,
        image_grid: 32,
        image_vocab_size: 8192,
        image_token_offset: 49664,
        total_vocab_size: 57856,
    }
}

/// One row of image logits.
fn row(salt: f32) -> Vec<f32> {
    (0..8192)
        .map(|i| ((i as f32 * 0.618 + salt).sin() * 4.0).fract() * 3.0)
        .collect()
}

/// A row spread as a decoder's logits can be (tens of units): most weights `exp(l − max)` are
/// tiny, many subnormal in float32.
fn wide_row() -> Vec<f32> {
    (0..8192)
        .map(|i| ((i as f32 * 0.618).sin() * 43758.547).fract() * 120.0 - 60.0)
        .collect()
}

fn bench(c: &mut Criterion) {
    let layout = layout();
    let cond = row(0.0);
    let uncond = row(1.0);
    let wide = wide_row();
    let cases = [
        ("plain", SamplingParams::default()),
        (
            // generate.py's default, `filter_thres` 0.9: k = 10% of the whole vocabulary
            "filter_thres_0.9_k_5785",
            SamplingParams {
                top_k: Some(5785),
                ..SamplingParams::default()
            },
        ),
        (
            "top_k_128",
            SamplingParams {
                top_k: Some(128),
                ..SamplingParams::default()
            },
        ),
        (
            "top_k_128_top_p_0.9_t0.8",
            SamplingParams {
                top_k: Some(128),
                top_p: Some(0.9),
                temperature: 0.8,
                ..SamplingParams::default()
            },
        ),
        (
            "cfg_3_top_k_128",
            SamplingParams {
                top_k: Some(128),
                cond_scale: 3.0,
                ..SamplingParams::default()
            },
        ),
    ];
    let mut group = c.benchmark_group("sample_image_token");
    for (name, params) in cases {
        let Ok(sampler) = ImageTokenSampler::new(&params, &layout) else {
            continue;
        };
        let uncond = sampler.guided().then_some(uncond.as_slice());
        let mut rng = CandidateRng::new(7, 0);
        let mut scratch = dalle::sampling::SampleScratch::default();
        if let Err(e) = sampler.sample(&cond, uncond, &mut rng, &mut scratch) {
            panic!("{name}: sampling fails, nothing to time: {e}");
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                sampler
                    .sample(black_box(&cond), uncond, &mut rng, &mut scratch)
                    .ok()
            })
        });
    }
    let k = SamplingParams {
        top_k: Some(5785),
        ..SamplingParams::default()
    };
    if let Ok(sampler) = ImageTokenSampler::new(&k, &layout) {
        let mut rng = CandidateRng::new(7, 0);
        let mut scratch = dalle::sampling::SampleScratch::default();
        group.bench_function("filter_thres_0.9_k_5785_wide_logits", |b| {
            b.iter(|| {
                sampler
                    .sample(black_box(&wide), None, &mut rng, &mut scratch)
                    .ok()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
