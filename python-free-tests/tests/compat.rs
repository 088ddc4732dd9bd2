//! `dalle-export check` (`dalle_export::compat`): every bundle the exporter makes in its
//! TensorRT-intended layout (`--kv-cache concat`, either logits output; every family) passes
//! `--target tensorrt`, `cuda` and `cpu`; deliberately unsupported graphs fail with the node
//! named; the `in-place` layout fails TensorRT and CUDA at its `GroupQueryAttention` nodes.
//! No ONNX Runtime and no GPU: the check reads the graphs and the committed support tables.

use dalle_bundle::{DType, Dim, ModelFamily};
use dalle_export::compat::{self, Report, Severity, Target};
use dalle_export::dims;
use dalle_export::families::dalle_pytorch::decoder::{DecoderOptions, KvCacheLayout, LogitsOutput};
use dalle_export::families::dalle_pytorch::discrete_vae;
use dalle_export::families::openai_dvae::{self, Half};
use dalle_export::families::{clip, dalle_pytorch, quiet};
use dalle_export::graph::GraphBuilder;
use dalle_export::graph::ops::{ArgMax, Cast, Equal, Reshape, Shape, Where};
use python_free_tests::{fixture, test_writer};
use std::path::{Path, PathBuf};

const TARGETS: [Target; 3] = [Target::TensorRt, Target::Cuda, Target::Cpu];

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn dalle_bundle(
    checkpoint: &Path,
    extra: Option<(&Path, &Path)>,
    opts: DecoderOptions,
    out: &Path,
) -> PathBuf {
    let mut w = test_writer(out, ModelFamily::DallePytorch);
    dalle_pytorch::add_to_bundle(
        &mut w,
        dalle_pytorch::BundleOptions {
            checkpoint,
            tokenizer: extra.map(|(t, _)| t),
            vae_files: dalle_pytorch::OpenAiVaeFiles {
                encoder: None,
                decoder: None,
            },
            vqgan: dalle_pytorch::VqganFiles::default(),
            clip: extra.map(|(_, c)| c),
            decoder: opts,
            progress: quiet,
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", checkpoint.display()));
    w.commit().unwrap()
}

/// The decoder graph alone (the fixtures' checkpoints have a test-sized text vocabulary and no
/// tokenizer file; their VAEs are covered by `train_vae_bundle`).
fn decoder_bundle(case: &str, opts: DecoderOptions, out: &Path) -> PathBuf {
    let ckpt = dalle_pytorch::load(&fixture(case).join("dalle.pt")).unwrap();
    let mut w = test_writer(out, ModelFamily::DallePytorch);
    w.add_graph(dalle_pytorch::decoder_entry(&ckpt.cfg, ckpt.transformer, opts).unwrap())
        .unwrap();
    w.commit().unwrap()
}

/// A `train_vae.py` DiscreteVAE's encoder and decoder.
fn train_vae_bundle(config: &str, out: &Path) -> PathBuf {
    let (cfg, mut weights) =
        discrete_vae::load_train_vae(&fixture("discrete_vae").join(config).join("vae.pt")).unwrap();
    let mut w = test_writer(out, ModelFamily::DallePytorch);
    w.add_graph(discrete_vae::encoder_entry(&cfg, &mut weights).unwrap())
        .unwrap();
    w.add_graph(discrete_vae::decoder_entry(&cfg, &mut weights).unwrap())
        .unwrap();
    w.commit().unwrap()
}

fn clip_bundle(case: &str, out: &Path) -> PathBuf {
    let dir = fixture(case);
    let mut w = test_writer(out, ModelFamily::Clip);
    let m = clip::load(&dir).unwrap();
    clip::add_to_bundle(&mut w, &dir, m).unwrap();
    w.commit().unwrap()
}

fn dvae_bundle(out: &Path) -> PathBuf {
    let (enc, dec) = (
        fixture("dvae_small").join("encoder.pkl"),
        fixture("dvae_small").join("decoder.pkl"),
    );
    let mut w = test_writer(out, ModelFamily::OpenaiDvae);
    openai_dvae::add_to_bundle(
        &mut w,
        openai_dvae::BundleOptions {
            encoder: Some(Half::File(&enc)),
            decoder: Some(Half::File(&dec)),
            progress: quiet,
        },
    )
    .unwrap();
    w.commit().unwrap()
}

fn concat(logits: LogitsOutput) -> DecoderOptions {
    DecoderOptions {
        logits,
        kv_cache: KvCacheLayout::Concat,
    }
}

fn errors(r: &Report) -> Vec<String> {
    r.graphs
        .iter()
        .flat_map(|g| g.findings.iter())
        .filter(|f| f.severity == Severity::Error)
        .map(ToString::to_string)
        .collect()
}

/// Every family and option the exporter offers in the layout meant for TensorRT.
#[test]
fn tensorrt_layout_bundles_pass_every_target() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bundles = vec![
        dalle_bundle(
            &repo("models/shapes/dalle.pt"),
            Some((
                &repo("models/shapes/tokenizer.json"),
                &repo("models/shapes/clip"),
            )),
            concat(LogitsOutput::LastImage),
            &tmp.path().join("shapes"),
        ),
        dvae_bundle(&tmp.path().join("dvae")),
        clip_bundle("clip_small", &tmp.path().join("clip_small")),
        clip_bundle("clip_small_gelu", &tmp.path().join("clip_small_gelu")),
    ];
    for config in ["plain", "resnet"] {
        bundles.push(train_vae_bundle(config, &tmp.path().join(config)));
    }
    for case in [
        "dalle_cli",
        "dalle_ctor",
        "dalle_variants",
        "dalle_reversible",
    ] {
        for logits in [LogitsOutput::LastImage, LogitsOutput::Full] {
            bundles.push(decoder_bundle(
                case,
                concat(logits),
                &tmp.path().join(format!("{case}-{logits:?}")),
            ));
        }
    }
    for b in &bundles {
        for t in TARGETS {
            let r = compat::check_path(b, t).unwrap();
            assert!(r.passes(), "{} on {}:\n{r}", b.display(), t.name());
        }
    }
}

#[test]
fn in_place_decoder_fails_tensorrt_and_cuda_at_group_query_attention() {
    let tmp = tempfile::tempdir().unwrap();
    let b = decoder_bundle(
        "dalle_cli",
        DecoderOptions {
            logits: LogitsOutput::LastImage,
            kv_cache: KvCacheLayout::InPlace,
        },
        &tmp.path().join("inplace"),
    );
    let gqa = "/attn/GroupQueryAttention (com.microsoft::GroupQueryAttention)";
    for t in [Target::TensorRt, Target::Cuda] {
        let r = compat::check_path(&b, t).unwrap();
        let e = errors(&r);
        // One GroupQueryAttention per layer (4), each with its float32 type named.
        let at_gqa: Vec<&String> = e.iter().filter(|m| m.contains(gqa)).collect();
        assert_eq!(at_gqa.len(), 4, "{r}");
        assert!(at_gqa.iter().all(|m| m.contains("T = float")), "{r}");
        // Anything else: TensorRT shape tensors sized by `cache_length`'s values (the sparse
        // masks' position ranges).
        let rest: Vec<&String> = e.iter().filter(|m| !m.contains(gqa)).collect();
        assert!(
            rest.iter().all(|m| t == Target::TensorRt
                && m.contains("computed from the values of graph input(s) cache_length")),
            "{r}"
        );
    }
    let r = compat::check_path(&b, Target::Cpu).unwrap();
    assert!(r.passes(), "{r}");
}

/// Writes `g` as `<dir>/<name>.onnx` and checks it.
fn check_graph(g: GraphBuilder, dir: &Path, target: Target) -> Report {
    let path = dir.join(format!("{}.onnx", g.name()));
    let model = g.finish().unwrap();
    std::fs::write(&path, prost::Message::encode_to_vec(&model)).unwrap();
    compat::check_path(&path, target).unwrap()
}

/// `Equal` on two bool tensors: CUDA has the kernel, TensorRT's `Equal` takes no BOOL.
#[test]
fn bool_equal_fails_tensorrt_only_and_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let build = || {
        let mut g = GraphBuilder::new("bool_equal");
        let a = g.input("a", DType::Bool, dims!["batch", 4]).unwrap();
        let b = g.input("b", DType::Bool, dims!["batch", 4]).unwrap();
        let y = g.scoped("bad", |g| g.node1(Equal, &[a, b])).unwrap();
        g.output("y", y).unwrap();
        g
    };
    let r = check_graph(build(), tmp.path(), Target::TensorRt);
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{r}");
    assert!(e[0].contains("/bad/Equal (Equal)"), "{r}");
    assert!(e[0].contains("is bool; TensorRT's Equal takes"), "{r}");
    assert!(e[0].contains("ONNX Runtime runs it on CUDA instead"), "{r}");
    assert!(r.to_string().contains("result: FAIL"), "{r}");
    assert!(check_graph(build(), tmp.path(), Target::Cuda).passes());
}

/// The CLIP pooling before this round: `ArgMax` over int32 ids has no CUDA kernel.
#[test]
fn integer_argmax_fails_cuda_with_the_constraint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut g = GraphBuilder::new("int_argmax");
    let ids = g
        .input("input_ids", DType::I64, dims!["batch", 77])
        .unwrap();
    let y = g
        .scoped("pool", |g| {
            let k = g.node1(Cast { to: DType::I32 }, &[ids])?;
            g.node1(
                ArgMax {
                    axis: 1,
                    keepdims: true,
                },
                &[k],
            )
        })
        .unwrap();
    g.output("idx", y).unwrap();
    let r = check_graph(g, tmp.path(), Target::Cuda);
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{r}");
    assert!(e[0].contains("/pool/ArgMax (ArgMax)"), "{r}");
    assert!(e[0].contains("T = int32"), "{r}");
    assert!(e[0].contains("falls back to the CPU provider"), "{r}");
}

/// A `Reshape` sized by a graph input's values makes it a TensorRT shape tensor.
#[test]
fn value_dependent_shape_tensor_fails_tensorrt() {
    let tmp = tempfile::tempdir().unwrap();
    let build = |from_values: bool| {
        let mut g = GraphBuilder::new("shape_tensor");
        let x = g.input("x", DType::F32, dims!["batch", 6]).unwrap();
        let target = if from_values {
            g.input("target_shape", DType::I64, vec![Dim::Fixed(2)])
                .unwrap()
        } else {
            g.node1(
                Shape {
                    start: None,
                    end: None,
                },
                &[x],
            )
            .unwrap()
        };
        let y = g
            .scoped("view", |g| g.node1(Reshape, &[x, target]))
            .unwrap();
        g.output_as("y", y, dims!["batch", 6]).unwrap();
        g
    };
    let r = check_graph(build(true), tmp.path(), Target::TensorRt);
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{r}");
    assert!(e[0].contains("/view/Reshape (Reshape)"), "{r}");
    assert!(e[0].contains("graph input(s) target_shape"), "{r}");
    let r = check_graph(build(false), tmp.path(), Target::TensorRt);
    assert!(r.passes(), "{r}");
    assert!(
        r.to_string()
            .contains("1 shape tensor(s) (int64) computed from input dims only")
    );
}

/// `Where` over bool values: TensorRT takes it, CUDA's `Where` has no bool kernel.
#[test]
fn bool_where_fails_cuda_only() {
    let tmp = tempfile::tempdir().unwrap();
    let build = || {
        let mut g = GraphBuilder::new("bool_where");
        let c = g.input("c", DType::Bool, dims![4]).unwrap();
        let a = g.input("a", DType::Bool, dims![4]).unwrap();
        let y = g.node1(Where, &[c, a, c]).unwrap();
        g.output("y", y).unwrap();
        g
    };
    assert!(check_graph(build(), tmp.path(), Target::TensorRt).passes());
    let r = check_graph(build(), tmp.path(), Target::Cuda);
    assert_eq!(errors(&r).len(), 1, "{r}");
}

#[test]
fn a_missing_bundle_is_an_error() {
    let e = compat::check_path(Path::new("/nonexistent/bundle"), Target::Cpu).unwrap_err();
    assert!(e.to_string().contains("not a bundle directory"), "{e}");
}

/// A min-dalle bundle (the small fixture: text encoder, cross_kv, decoder) in `kv_cache`.
fn min_dalle_bundle(kv_cache: KvCacheLayout, out: &Path) -> PathBuf {
    let mut w = test_writer(out, ModelFamily::MinDalle);
    python_free_tests::add_min_dalle_small(&mut w, kv_cache);
    w.commit().unwrap()
}

/// min-dalle: the concat layout passes every target; in place, the decoder's self-attention
/// (`GroupQueryAttention`, float32) fails TensorRT and CUDA and nothing else does, the CPU
/// takes it.
#[test]
fn min_dalle_concat_passes_every_target_and_in_place_fails_gpus_at_gqa() {
    let tmp = tempfile::tempdir().unwrap();
    let concat = min_dalle_bundle(KvCacheLayout::Concat, &tmp.path().join("concat"));
    for t in TARGETS {
        let r = compat::check_path(&concat, t).unwrap();
        assert!(r.passes(), "concat on {}:\n{r}", t.name());
    }
    let in_place = min_dalle_bundle(KvCacheLayout::InPlace, &tmp.path().join("in-place"));
    let gqa = "(com.microsoft::GroupQueryAttention)";
    for t in [Target::TensorRt, Target::Cuda] {
        let r = compat::check_path(&in_place, t).unwrap();
        let e = errors(&r);
        // One per decoder layer (2), float32 named, all in decoder.onnx.
        assert_eq!(e.len(), 2, "{r}");
        assert!(
            e.iter().all(|m| m.contains(gqa) && m.contains("T = float")),
            "{r}"
        );
        for g in &r.graphs {
            let errs = g
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            assert_eq!(errs > 0, g.name.starts_with("decoder.onnx"), "{r}");
        }
    }
    let r = compat::check_path(&in_place, Target::Cpu).unwrap();
    assert!(r.passes(), "{r}");
}
