//! `--precision`: every family's graphs at every precision, on ONNX Runtime's CPU provider.
//!
//! - The CPU provider loads a graph exactly when its manifest says `cpu` is among its
//!   `providers` (the exporter's kernel table, `export/src/graph/precision/kernels.rs`, is
//!   checked here against the real library); a graph it cannot run fails at kernel lookup,
//!   i.e. after ONNX Runtime's own type and shape inference accepted the graph (the structural
//!   check of precisions the CPU cannot run), naming an op the manifest lists.
//! - Every graph the CPU runs is compared with the same graph exported in float32 (itself
//!   within 1e-4 of the reference: the parity tests), with the tolerances below.

use dalle_bundle::attributes::precision::{Precision, PrecisionAttributes, Provider, QuantFormat};

use dalle_bundle::io::{clip as clip_io, decoder as dec_io, dvae as dvae_io, min_dalle as md_io};
use dalle_bundle::{
    DType, Dim, DvaeAttributes, GraphRole, GraphSpec, Manifest, MinDalleAttributes, ModelFamily,
};
use dalle_export::families::dalle_pytorch as dp;
use dalle_export::families::dalle_pytorch::decoder::{DecoderOptions, KvCacheLayout};
use dalle_export::families::openai_dvae;
use dalle_export::graph::precision::{Int8Options, PrecisionPolicy};
use ndarray::{ArrayD, IxDyn};
use ort::value::{DynValue, Tensor};

use ort::session::Session;
use python_free_tests::{f32_input, fixture, i64_input, ort_env};
use std::path::{Path, PathBuf};

/// The policies under test, with a label.
fn policies() -> Vec<(&'static str, PrecisionPolicy)> {
    let qdq = PrecisionPolicy {
        precision: Precision::Int8,
        int8: Int8Options {
            format: QuantFormat::Qdq,
            ..Int8Options::default()
        },
    };
    vec![
        ("fp32", PrecisionPolicy::new(Precision::Fp32)),
        ("fp16", PrecisionPolicy::new(Precision::Fp16)),
        ("bf16", PrecisionPolicy::new(Precision::Bf16)),
        ("int8", PrecisionPolicy::new(Precision::Int8)),
        ("int8-qdq", qdq),
    ]
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The shipped shapes model (DALLE-pytorch decoder, DiscreteVAE, CLIP) at `policy`.
fn export_shapes(dir: &Path, label: &str, policy: PrecisionPolicy, kv: KvCacheLayout) -> PathBuf {
    let out = dir.join(format!("shapes-{label}-{}", kv.name()));
    let mut w = python_free_tests::test_writer(&out, ModelFamily::DallePytorch);
    w.set_precision(policy);
    let (ckpt, tok, clip) = (
        repo("models/shapes/dalle.pt"),
        repo("models/shapes/tokenizer.json"),
        repo("models/shapes/clip"),
    );
    dp::add_to_bundle(
        &mut w,
        dp::BundleOptions {
            checkpoint: &ckpt,
            tokenizer: Some(&tok),
            vae_files: dp::OpenAiVaeFiles {
                encoder: None,
                decoder: None,
            },
            vqgan: dp::VqganFiles::default(),
            clip: Some(&clip),
            decoder: DecoderOptions {
                kv_cache: kv,
                ..DecoderOptions::default()
            },
            progress: |_| {},
        },
    )
    .unwrap_or_else(|e| panic!("{label}: {e:#}"));
    w.commit().unwrap()
}

/// OpenAI's dVAE (the small fixture) at `policy`.
fn export_openai_dvae(dir: &Path, label: &str, policy: PrecisionPolicy) -> PathBuf {
    let out = dir.join(format!("dvae-{label}"));
    let mut w = python_free_tests::test_writer(&out, ModelFamily::OpenaiDvae);
    w.set_precision(policy);
    let small = fixture("dvae_small");
    let (cfg, weights) = openai_dvae::load_encoder(&small.join("encoder.pkl")).unwrap();
    w.add_graph(openai_dvae::encoder_entry(&cfg, weights).unwrap())
        .unwrap();
    let (cfg, weights) = openai_dvae::load_decoder(&small.join("decoder.pkl")).unwrap();
    w.add_graph(openai_dvae::decoder_entry(&cfg, weights).unwrap())
        .unwrap();
    w.commit().unwrap()
}

/// DALL·E mini/mega (min-dalle's small fixture: text encoder, cross_kv, decoder) at `policy`.
fn export_min_dalle(
    dir: &Path,
    label: &str,
    policy: PrecisionPolicy,
    kv: KvCacheLayout,
) -> PathBuf {
    let out = dir.join(format!("min-dalle-{label}-{}", kv.name()));
    let mut w = python_free_tests::test_writer(&out, ModelFamily::MinDalle);
    w.set_precision(policy);
    python_free_tests::add_min_dalle_small(&mut w, kv);
    w.commit().unwrap()
}

fn load(path: &Path) -> Result<Session, String> {
    let env = ort_env();
    Session::builder(&env)
        .and_then(|mut b| b.commit_from_file(path))
        .map_err(|e| e.to_string())
}

/// Every bundle of the test, by (label, kind).
fn bundles(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (label, policy) in policies() {
        for kv in [KvCacheLayout::Concat, KvCacheLayout::InPlace] {
            out.push((
                format!("shapes {label} {}", kv.name()),
                export_shapes(dir, label, policy, kv),
            ));
        }
        out.push((
            format!("openai-dvae {label}"),
            export_openai_dvae(dir, label, policy),
        ));
        for kv in [KvCacheLayout::Concat, KvCacheLayout::InPlace] {
            out.push((
                format!("min-dalle {label} {}", kv.name()),
                export_min_dalle(dir, label, policy, kv),
            ));
        }
    }
    out
}

#[test]
fn cpu_loads_exactly_the_graphs_the_manifest_says_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = Vec::new();
    let mut wrong = Vec::new();
    for (what, bundle) in bundles(dir.path()) {
        let manifest = Manifest::read_from_dir(&bundle).unwrap();
        for (role, spec) in &manifest.graphs {
            let p = PrecisionAttributes::from_spec(spec)
                .unwrap()
                .unwrap_or_else(|| panic!("{what} {role}: no precision attribute"));
            let loaded = load(&bundle.join(&spec.file));
            let cpu = p.providers.contains(&Provider::Cpu);
            table.push(format!(
                "{what} {role}: providers {:?}, cpu missing {:?}",
                p.providers, p.cpu_missing_kernels
            ));
            match loaded {
                Ok(_) if !cpu => wrong.push(format!(
                    "{what} {role}: loads on the CPU but the manifest says {p:?}"
                )),
                Ok(_) => {}
                Err(e) if cpu => wrong.push(format!(
                    "{what} {role}: the manifest says cpu, ORT says {e}"
                )),
                Err(e) => {
                    if !e.contains("Could not find an implementation") {
                        wrong.push(format!(
                            "{what} {role}: failed before kernel lookup (a type error?): {e}"
                        ));
                    } else if !p
                        .cpu_missing_kernels
                        .iter()
                        .any(|k| e.contains(&format!("for {}(", k.split('(').next().unwrap_or(k))))
                    {
                        wrong.push(format!(
                            "{what} {role}: ORT's missing kernel is not listed in {:?}: {e}",
                            p.cpu_missing_kernels
                        ));
                    }
                    assert!(p.verified_on.is_empty());
                }
            }
        }
    }
    eprintln!("{}", table.join("\n"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Inputs of one graph, built from the manifest: the same for every precision (float inputs
/// stay float32 at every precision; only decoder state follows the compute type).
fn inputs_for(manifest: &Manifest, role: GraphRole, spec: &GraphSpec) -> Vec<(String, DynValue)> {
    let f32v = |shape: &[usize], f: &dyn Fn(usize) -> f32| {
        let n: usize = shape.iter().product();
        f32_input(ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(f).collect()).unwrap())
    };
    let i64v =
        |shape: &[usize], v: Vec<i64>| i64_input(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap());
    if manifest.family == ModelFamily::MinDalle {
        return min_dalle_inputs(role, spec);
    }
    match role {
        GraphRole::Decoder => {
            let l = manifest.token_layout.as_ref().unwrap();
            let mut ids = vec![l.bos_id as i64];
            ids.extend((0..l.text_length).map(|i| {
                if i < 4 {
                    1 + i as i64
                } else {
                    (l.pad_id_base + i) as i64
                }
            }));
            ids.extend(
                (0..5).map(|c| (l.image_token_offset + (c * 7) % l.image_vocab_size) as i64),
            );
            let mut out = vec![(dec_io::INPUT_IDS.to_string(), i64v(&[1, ids.len()], ids))];
            for t in spec.inputs.iter().filter(|t| t.name.starts_with("past_")) {
                let shape: Vec<usize> = t
                    .dims
                    .iter()
                    .enumerate()
                    .map(|(i, d)| match d {
                        Dim::Fixed(n) => *n as usize,
                        _ if i == 0 => 1,
                        _ => 0,
                    })
                    .collect();
                out.push((t.name.clone(), zeros(t.dtype, &shape)));
            }
            if spec.input(dec_io::CACHE_LENGTH).is_some() {
                out.push((dec_io::CACHE_LENGTH.to_string(), i64v(&[1], vec![0])));
            }
            out
        }
        GraphRole::DvaeDecoder => {
            let vocab = DvaeAttributes::from_spec(spec).unwrap().vocab_size as i64;
            let g = manifest
                .token_layout
                .as_ref()
                .map_or(8, |l| l.image_grid as usize);
            let codes = (0..g * g).map(|i| (i as i64 * 131 + 7) % vocab).collect();
            vec![(dvae_io::IMAGE_TOKENS.to_string(), i64v(&[1, g, g], codes))]
        }
        GraphRole::DvaeEncoder => {
            let a = DvaeAttributes::from_spec(spec).unwrap();
            let side = a.image_size.unwrap_or(64) as usize;
            vec![(
                dvae_io::PIXELS.to_string(),
                f32v(&[1, 3, side, side], &|i| {
                    ((i % side) as f32 / side as f32 + (i / 97 % 5) as f32 * 0.1) % 1.0
                }),
            )]
        }
        GraphRole::ClipText => {
            let c = manifest.clip.as_ref().unwrap();
            let n = c.context_length as usize;
            let mut ids = vec![c.pad_id as i64; n];
            ids[..5].copy_from_slice(&[c.bos_id as i64, 5, 6, 7, c.eos_id as i64]);
            vec![(clip_io::INPUT_IDS.to_string(), i64v(&[1, n], ids))]
        }
        GraphRole::ClipImage => {
            let s = manifest.clip.as_ref().unwrap().image_size as usize;
            vec![(
                clip_io::PIXEL_VALUES.to_string(),
                f32v(&[1, 3, s, s], &|i| ((i * 37 % 101) as f32 / 50.0) - 1.0),
            )]
        }
        GraphRole::TextEncoder | GraphRole::CrossKv => {
            unreachable!("only min-dalle bundles have {role}")
        }
    }
}

/// The shape of input `t` with batch 1 and empty concatenated caches (symbolic dims 0).
fn first_call_shape(t: &dalle_bundle::TensorSpec) -> Vec<usize> {
    t.dims
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Fixed(n) => *n as usize,
            _ if i == 0 => 1,
            _ => 0,
        })
        .collect()
}

/// Inputs of a min-dalle graph: a padded text row, encoder states, and for the decoder its
/// start token and four codes after an empty cache with deterministic cross-attention state
/// (in the input's dtype: the compute type, constant state being state).
fn min_dalle_inputs(role: GraphRole, spec: &GraphSpec) -> Vec<(String, DynValue)> {
    let i64v =
        |shape: &[usize], v: Vec<i64>| i64_input(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap());
    let text_ids = |len: usize| {
        let mut ids = vec![1i64; len];
        ids[..5].copy_from_slice(&[0, 17, 230, 5, 2]);
        i64v(&[1, len], ids)
    };
    let wave = |i: usize| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 0.7;
    let mut out = Vec::new();
    for t in &spec.inputs {
        let shape = first_call_shape(t);
        let value = match t.name.as_str() {
            md_io::INPUT_IDS if role != GraphRole::Decoder => text_ids(shape[1]),
            dec_io::INPUT_IDS => {
                let a = MinDalleAttributes::from_spec(spec).unwrap();
                let codes = (0..4).map(|c| (c * 61 + 3) % a.image_codes as i64);
                i64v(
                    &[1, 5],
                    std::iter::once(a.start_token as i64).chain(codes).collect(),
                )
            }
            dec_io::CACHE_LENGTH => i64v(&[1], vec![0]),
            // Text positions 0..5 attended, the pads masked (min-dalle's −1e12).
            md_io::CROSS_ATTENTION_BIAS => floats(t.dtype, &shape, &|i| {
                if i % shape[3] < 5 { 0.0 } else { -1e12 }
            }),
            _ => floats(t.dtype, &shape, &wave),
        };
        out.push((t.name.clone(), value));
    }
    out
}

/// A float tensor of `dtype` with values `f(i)`, saturated into the type's finite range.
fn floats(dtype: DType, shape: &[usize], f: &dyn Fn(usize) -> f32) -> DynValue {
    let n: usize = shape.iter().product();
    let shape = shape.to_vec();
    match dtype {
        DType::F32 => {
            f32_input(ArrayD::from_shape_vec(IxDyn(&shape), (0..n).map(f).collect()).unwrap())
        }
        DType::F16 => {
            let v = (0..n).map(|i| half::f16::from_f32(f(i).clamp(-65504.0, 65504.0)));
            Tensor::from_array((shape, v.collect::<Vec<_>>()))
                .unwrap()
                .into_dyn()
        }
        DType::BF16 => {
            let v = (0..n).map(|i| half::bf16::from_f32(f(i)));
            Tensor::from_array((shape, v.collect::<Vec<_>>()))
                .unwrap()
                .into_dyn()
        }
        other => panic!("float input of {other}"),
    }
}

fn zeros(dtype: DType, shape: &[usize]) -> DynValue {
    let n: usize = shape.iter().product();
    match dtype {
        DType::F32 => f32_input(ArrayD::zeros(IxDyn(shape))),
        DType::F16 => Tensor::from_array((shape.to_vec(), vec![half::f16::ZERO; n]))
            .unwrap()
            .into_dyn(),
        DType::BF16 => Tensor::from_array((shape.to_vec(), vec![half::bf16::ZERO; n]))
            .unwrap()
            .into_dyn(),
        other => panic!("state of {other}"),
    }
}

/// The graph's first output as float32 values (float16 ones — `cross_kv`'s constant state in a
/// float16 bundle — and int64 ones widened, the latter for token agreement).
fn first_output(s: &mut Session, inputs: Vec<(String, DynValue)>) -> (Vec<f32>, bool) {
    let name = s.outputs()[0].name().to_string();
    let out = s.run(inputs).unwrap();
    let v = &out[name.as_str()];
    if let Ok(a) = v.try_extract_array::<half::f16>() {
        return (a.iter().map(|x| x.to_f32()).collect(), true);
    }
    match v.try_extract_array::<f32>() {
        Ok(a) => (a.iter().copied().collect(), true),
        Err(_) => (
            v.try_extract_array::<i64>()
                .unwrap()
                .iter()
                .map(|&x| x as f32)
                .collect(),
            false,
        ),
    }
}

/// Max |error| / max |reference|, mean |error| / mean |reference| for floats; for tokens, the
/// fraction that differ.
fn errors(got: &[f32], want: &[f32], float: bool) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    assert!(got.iter().all(|x| x.is_finite()), "non-finite output");
    if !float {
        let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
        let f = differ as f32 / got.len() as f32;
        return (f, f);
    }
    let scale_max = want.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
    let scale_mean = want.iter().map(|x| x.abs()).sum::<f32>() / want.len() as f32;
    let max = got
        .iter()
        .zip(want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    let mean = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / got.len() as f32;
    (max / scale_max, mean / scale_mean.max(1e-6))
}

/// Relative errors against float32 that each runnable precision must stay within, per graph
/// kind: `(max |err| / max |ref|, mean |err| / mean |ref|)`, or for token outputs the
/// fraction of tokens that may differ (both entries).
///
/// Derivation. float16 rounds each stored weight and activation with relative error ≤ 2⁻¹¹
/// (4.9e-4), and LayerNorm, Softmax and the outputs stay float32, so an output is off by a few
/// of those roundings: observed 2e-4..6e-4 on every graph (min-dalle's three, whose constant
/// cross-attention state is float16 too: 3.3e-4..4.4e-4); the bound 2e-3 is four roundings.
/// int8 rounds each weight to within half a step of max|w|/127 (per block of 32 for
/// MatMulNBits, per output channel for QDQ: coarser), i.e. ≤ 0.4% of the block's largest
/// weight, while activations stay float32; summed over K inputs the errors partly cancel:
/// observed 7e-3..8e-3 (MatMulNBits) and 9e-3..1.4e-2 (QDQ) (min-dalle's decoder, where only
/// `lm_head` is large enough to quantize: 4.9e-3 and 7.1e-3); the bound 3e-2 is twice the
/// worst. Convolutions are not quantized (the dVAEs are unchanged at int8: error 0). Tokens
/// (the dVAE encoder's argmax) flip only where two logits are closer than the error: none
/// observed; the bound allows 2%.
fn tolerance(precision: Precision, float: bool) -> (f32, f32) {
    match (precision, float) {
        (_, false) => (0.02, 0.02),
        (Precision::Fp16, true) => (2e-3, 2e-3),
        (Precision::Int8, true) => (3e-2, 3e-2),
        (Precision::Fp32, true) => (0.0, 0.0),
        // The CPU provider cannot run bfloat16: never reached (`verified_on` is empty).
        (Precision::Bf16, true) => (0.0, 0.0),
    }
}

#[test]
fn graphs_the_cpu_runs_match_float32_within_the_stated_tolerances() {
    let dir = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    let mut refs: std::collections::HashMap<String, (PathBuf, Manifest)> = Default::default();
    for (label, policy) in policies() {
        for (kind, bundle) in [
            (
                "shapes concat",
                export_shapes(dir.path(), label, policy, KvCacheLayout::Concat),
            ),
            (
                "shapes in-place",
                export_shapes(dir.path(), label, policy, KvCacheLayout::InPlace),
            ),
            ("openai-dvae", export_openai_dvae(dir.path(), label, policy)),
            (
                "min-dalle concat",
                export_min_dalle(dir.path(), label, policy, KvCacheLayout::Concat),
            ),
            (
                "min-dalle in-place",
                export_min_dalle(dir.path(), label, policy, KvCacheLayout::InPlace),
            ),
        ] {
            let manifest = Manifest::read_from_dir(&bundle).unwrap();
            if label == "fp32" {
                refs.insert(kind.to_string(), (bundle.clone(), manifest.clone()));
            }
            let (ref_dir, ref_manifest) = &refs[kind];
            for (role, spec) in &manifest.graphs {
                let p = PrecisionAttributes::from_spec(spec).unwrap().unwrap();
                if !p.verified_on.contains(&Provider::Cpu) {
                    continue;
                }
                let mut s = python_free_tests::session_from_file(&bundle.join(&spec.file));
                let ref_spec = ref_manifest.graph(*role).unwrap();
                let mut r = python_free_tests::session_from_file(&ref_dir.join(&ref_spec.file));
                let (got, float) = first_output(&mut s, inputs_for(&manifest, *role, spec));
                let (want, _) = first_output(&mut r, inputs_for(ref_manifest, *role, ref_spec));
                let (max, mean) = errors(&got, &want, float);
                let (tmax, tmean) = tolerance(p.precision, float);
                report.push(format!("{label} {kind} {role}: max {max:.2e} mean {mean:.2e} (bounds {tmax:.0e} {tmean:.0e})"));
                assert!(max <= tmax && mean <= tmean, "{}", report.join("\n"));
            }
        }
    }
    eprintln!("{}", report.join("\n"));
}
