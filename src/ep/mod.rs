//! Execution providers: what the user asked for (`--ep`, `--device-id`, `--trt-*`) turned into
//! the list of providers, with their settings, to register on each graph's session.
//!
//! Everything here is plain data and pure functions, unit-tested without ONNX Runtime:
//! [`EpOptions`] + a graph's [`GraphSpec`] → [`EpPlan`] ([`plan_for_graph`]), and the `auto`
//! decision ([`decide_auto`]) with the availability probe injected. [`register`] is the thin layer
//! that turns a plan into `ort` builders and probes the loaded library.
//!
//! Every provider is registered with `error_on_failure`: a provider that cannot be used is an
//! error, never a silent fall-back to the CPU.

pub mod profile;
pub mod register;

use crate::error::Result;
use dalle_bundle::attributes::precision::{
    Precision, PrecisionAttributes, Provider as BundleProvider,
};
use dalle_bundle::{GraphRole, GraphSpec};
use std::fmt;
use std::path::PathBuf;

pub use profile::{TrtProfile, trt_profile};

/// The `--ep` choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EpChoice {
    /// ONNX Runtime's default CPU provider.
    Cpu,
    /// NVIDIA CUDA (needs the GPU build: `scripts/setup-ort.sh --gpu`).
    Cuda,
    /// NVIDIA TensorRT, with CUDA for the nodes TensorRT does not take.
    Tensorrt,
    /// The best that registers: tensorrt, then cuda, then cpu.
    #[default]
    Auto,
}

impl EpChoice {
    /// True when the choice can only work with the GPU build of ONNX Runtime.
    pub fn needs_gpu(self) -> bool {
        matches!(self, EpChoice::Cuda | EpChoice::Tensorrt)
    }

    /// The provider this choice names, `None` for `auto`.
    pub fn fixed_kind(self) -> Option<ProviderKind> {
        match self {
            EpChoice::Cpu => Some(ProviderKind::Cpu),
            EpChoice::Cuda => Some(ProviderKind::Cuda),
            EpChoice::Tensorrt => Some(ProviderKind::TensorRt),
            EpChoice::Auto => None,
        }
    }
}

/// A concrete execution provider (after `auto` was resolved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProviderKind {
    Cpu,
    Cuda,
    TensorRt,
}

impl ProviderKind {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Cpu => "cpu",
            ProviderKind::Cuda => "cuda",
            ProviderKind::TensorRt => "tensorrt",
        }
    }

    /// The manifest's name for the provider (`precision.providers`).
    pub fn bundle_provider(self) -> BundleProvider {
        match self {
            ProviderKind::Cpu => BundleProvider::Cpu,
            ProviderKind::Cuda => BundleProvider::Cuda,
            ProviderKind::TensorRt => BundleProvider::Tensorrt,
        }
    }

    /// ONNX Runtime's name for the provider.
    pub fn ort_name(self) -> &'static str {
        match self {
            ProviderKind::Cpu => "CPUExecutionProvider",
            ProviderKind::Cuda => "CUDAExecutionProvider",
            ProviderKind::TensorRt => "TensorrtExecutionProvider",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The user's execution-provider options (the `dalle-ort` global flags).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpOptions {
    pub ep: EpChoice,
    /// CUDA device ordinal for CUDA and TensorRT.
    pub device_id: u32,
    /// Let TensorRT build fp16 kernels.
    pub trt_fp16: bool,
    /// Folder for TensorRT engine caches (enables the cache).
    pub trt_engine_cache: Option<PathBuf>,
    /// Folder for the TensorRT timing cache (enables it).
    pub trt_timing_cache: Option<PathBuf>,
    /// Turn off the CPU provider's memory arena: freed buffers go back to the system instead of
    /// staying reserved, which lowers peak memory of a generation (the KV state grows by one
    /// position per step) at some cost in speed.
    pub no_cpu_arena: bool,
}

/// CPU provider settings (registered only when they differ from ONNX Runtime's defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuSettings {
    pub arena: bool,
}

/// CUDA provider settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaSettings {
    pub device_id: u32,
}

/// TensorRT provider settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRtSettings {
    pub device_id: u32,
    pub fp16: bool,
    pub engine_cache: Option<PathBuf>,
    /// File-name prefix of this graph's engines in the shared cache folder (the graph role).
    pub engine_cache_prefix: Option<String>,
    pub timing_cache: Option<PathBuf>,
    /// Optimization profile; `None` when the graph has no dynamic input.
    pub profile: Option<TrtProfile>,
}

/// One provider to register, with its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderSettings {
    Cpu(CpuSettings),
    Cuda(CudaSettings),
    TensorRt(TensorRtSettings),
}

impl ProviderSettings {
    /// The provider these settings are for.
    pub fn kind(&self) -> ProviderKind {
        match self {
            ProviderSettings::Cpu(_) => ProviderKind::Cpu,
            ProviderSettings::Cuda(_) => ProviderKind::Cuda,
            ProviderSettings::TensorRt(_) => ProviderKind::TensorRt,
        }
    }

    /// The settings as ONNX Runtime provider-option key/value pairs (for logs and `info`).
    pub fn ort_options(&self) -> Vec<(&'static str, String)> {
        match self {
            ProviderSettings::Cpu(c) => vec![("use_arena", u8::from(c.arena).to_string())],
            ProviderSettings::Cuda(c) => vec![("device_id", c.device_id.to_string())],
            ProviderSettings::TensorRt(t) => {
                let mut o = vec![("device_id", t.device_id.to_string())];
                if t.fp16 {
                    o.push(("trt_fp16_enable", "1".to_string()));
                }
                if let Some(dir) = &t.engine_cache {
                    o.push(("trt_engine_cache_enable", "1".to_string()));
                    o.push(("trt_engine_cache_path", dir.display().to_string()));
                    if let Some(prefix) = &t.engine_cache_prefix {
                        o.push(("trt_engine_cache_prefix", prefix.clone()));
                    }
                }
                if let Some(dir) = &t.timing_cache {
                    o.push(("trt_timing_cache_enable", "1".to_string()));
                    o.push(("trt_timing_cache_path", dir.display().to_string()));
                }
                if let Some(p) = &t.profile {
                    o.push(("trt_profile_min_shapes", p.min.clone()));
                    o.push(("trt_profile_opt_shapes", p.opt.clone()));
                    o.push(("trt_profile_max_shapes", p.max.clone()));
                }
                o
            }
        }
    }
}

/// The providers to register on one graph's session, in priority order. Empty means ONNX
/// Runtime's CPU provider only, with its defaults (always there, needs no registration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpPlan {
    /// The provider the user's choice resolved to.
    pub kind: ProviderKind,
    pub providers: Vec<ProviderSettings>,
    /// ONNX Runtime session config entries (key, value) for this graph.
    pub session_config: Vec<(&'static str, String)>,
}

/// ONNX Runtime's `session.force_spinning_stop`: the intra-op pool stops spinning as soon as a
/// run ends. Set on the decoder, whose runs alternate with the engine's sampling on the same
/// cores: a spinning pool would hold a core while the candidates' tokens are drawn (measured on
/// 2 cores at batch 8: sampling took about 1.0 ms a step with spinning pools, 0.65 ms without,
/// the run itself no slower; `benches/RESULTS.md`).
pub const FORCE_SPINNING_STOP: &str = "session.force_spinning_stop";

/// Builds the plan for one graph. TensorRT is followed by CUDA with the same device, as the ORT
/// docs recommend, so nodes TensorRT cannot take run on the GPU rather than the CPU.
pub fn plan_for_graph(
    kind: ProviderKind,
    options: &EpOptions,
    role: GraphRole,
    spec: &GraphSpec,
) -> Result<EpPlan> {
    refuse_unsuited(kind, role, spec)?;
    let cuda = CudaSettings {
        device_id: options.device_id,
    };
    let providers = match kind {
        ProviderKind::Cpu if options.no_cpu_arena => {
            vec![ProviderSettings::Cpu(CpuSettings { arena: false })]
        }
        ProviderKind::Cpu => vec![],
        ProviderKind::Cuda => vec![ProviderSettings::Cuda(cuda)],
        ProviderKind::TensorRt => vec![
            ProviderSettings::TensorRt(TensorRtSettings {
                device_id: options.device_id,
                fp16: options.trt_fp16,
                engine_cache: options.trt_engine_cache.clone(),
                engine_cache_prefix: options
                    .trt_engine_cache
                    .as_ref()
                    .map(|_| role.name().to_string()),
                timing_cache: options.trt_timing_cache.clone(),
                profile: trt_profile(role, spec)?,
            }),
            ProviderSettings::Cuda(cuda),
        ],
    };
    let session_config = match role {
        GraphRole::Decoder => vec![(FORCE_SPINNING_STOP, "1".to_string())],
        _ => vec![],
    };
    Ok(EpPlan {
        kind,
        providers,
        session_config,
    })
}

/// A warning for a graph that will not run well on `kind`: a decoder exported with
/// `--kv-cache in-place` uses `com.microsoft.GroupQueryAttention`, whose float32 kernel is the
/// CPU one (CUDA's takes fp16/bf16 and TensorRT's parser does not take it), so on a GPU provider
/// its attention falls back to the CPU with a copy of every cache each step.
pub fn provider_caveat(kind: ProviderKind, role: GraphRole, spec: &GraphSpec) -> Option<String> {
    if let Ok(Some(p)) = PrecisionAttributes::from_spec(spec)
        && p.suits(kind.bundle_provider()) == Some(false)
        && kind != ProviderKind::Cpu
    {
        return Some(format!(
            "graph `{role}` ({} precision) suits {}, not {kind}: ONNX Runtime runs the nodes {kind} \
             has no kernel for on the CPU, with copies in between{}",
            p.precision,
            list(&p.providers),
            if p.precision == Precision::Fp32
                && kind == ProviderKind::Cuda
                && role == GraphRole::Decoder
            {
                "; a float16/bfloat16 export (--precision fp16) has CUDA attention kernels"
            } else {
                ""
            }
        ));
    }
    // A malformed layout is reported where the decoder is opened; here it is just not in place.
    let in_place = dalle_bundle::KvCacheAttribute::from_spec(spec).is_ok_and(|kv| kv.in_place());
    (role == GraphRole::Decoder && in_place && kind != ProviderKind::Cpu).then(|| {
        format!(
            "this bundle's decoder was exported with --kv-cache in-place, whose float32 \
             attention (GroupQueryAttention) only runs on the CPU provider: on {kind} it falls \
             back to the CPU every step; export with --kv-cache concat (the default) for GPUs"
        )
    })
}

/// Refuses the CPU provider for a graph whose manifest says the CPU has no kernel for some of
/// its nodes at their dtypes (a float16/bfloat16 export): ONNX Runtime would fail to create the
/// session with a less helpful message. GPU mismatches are warnings ([`provider_caveat`]).
pub fn refuse_unsuited(kind: ProviderKind, role: GraphRole, spec: &GraphSpec) -> Result<()> {
    let precision = PrecisionAttributes::from_spec(spec)
        .map_err(|e| crate::error::Error::InvalidInput(format!("graph `{role}`: {e}")))?;
    match precision {
        Some(p) if kind == ProviderKind::Cpu && p.suits(BundleProvider::Cpu) == Some(false) => {
            Err(crate::error::Error::InvalidInput(format!(
                "graph `{role}` was exported with --precision {}, which ONNX Runtime's CPU \
                 provider has no kernels for ({}); it suits {}: run it with --ep {}, or export \
                 with --precision fp32 or int8 for the CPU",
                p.precision,
                p.cpu_missing_kernels.join(", "),
                list(&p.providers),
                p.providers.first().map_or("cuda", |p| p.name())
            )))
        }
        _ => Ok(()),
    }
}

fn list(providers: &[BundleProvider]) -> String {
    if providers.is_empty() {
        return "no provider".into();
    }
    providers
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `auto` chose, and why the better providers were passed over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoDecision {
    pub kind: ProviderKind,
    /// One line per provider tried, best first.
    pub reasons: Vec<String>,
}

/// The `auto` order: tensorrt, then cuda; the CPU provider is always there. `probe` says whether
/// a provider can be registered (`Err` carries why not).
pub fn decide_auto(
    mut probe: impl FnMut(ProviderKind) -> std::result::Result<(), String>,
) -> AutoDecision {
    let mut reasons = Vec::new();
    for kind in [ProviderKind::TensorRt, ProviderKind::Cuda] {
        match probe(kind) {
            Ok(()) => {
                reasons.push(format!("{kind}: registers"));
                return AutoDecision { kind, reasons };
            }
            Err(why) => reasons.push(format!("{kind}: not usable ({why})")),
        }
    }
    reasons.push("cpu: always available".to_string());
    AutoDecision {
        kind: ProviderKind::Cpu,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dalle_bundle::attributes::decoder as attr;
    use dalle_bundle::io::decoder::{KV_CONCAT, KV_IN_PLACE};
    use dalle_bundle::{DType, Dim, DimRange, TensorSpec};
    use std::collections::BTreeMap;

    fn encoder_spec() -> GraphSpec {
        let mut dim_ranges = BTreeMap::new();
        dim_ranges.insert("batch".to_string(), DimRange::new(1, 2, 8));
        dim_ranges.insert("height".to_string(), DimRange::new(64, 256, 512));
        dim_ranges.insert("width".to_string(), DimRange::new(64, 256, 512));
        GraphSpec {
            file: "dvae_encoder.onnx".into(),
            external_data: None,
            inputs: vec![TensorSpec::new(
                "pixels",
                DType::F32,
                vec![
                    Dim::sym("batch"),
                    3.into(),
                    Dim::sym("height"),
                    Dim::sym("width"),
                ],
            )],
            outputs: vec![],
            dim_ranges,
            attributes: BTreeMap::new(),
        }
    }

    fn options(ep: EpChoice) -> EpOptions {
        EpOptions {
            ep,
            device_id: 3,
            trt_fp16: true,
            trt_engine_cache: Some("/cache/engines".into()),
            trt_timing_cache: Some("/cache/timing".into()),
            no_cpu_arena: false,
        }
    }

    #[test]
    fn only_the_decoder_stops_spinning_after_each_run() {
        let spec = |role| GraphSpec {
            file: format!("{role}.onnx"),
            external_data: None,
            inputs: vec![],
            outputs: vec![],
            dim_ranges: BTreeMap::new(),
            attributes: BTreeMap::new(),
        };
        let opts = EpOptions::default();
        for kind in [ProviderKind::Cpu, ProviderKind::Cuda] {
            let d = plan_for_graph(kind, &opts, GraphRole::Decoder, &spec("decoder")).unwrap();
            assert_eq!(
                d.session_config,
                vec![(FORCE_SPINNING_STOP, "1".to_string())]
            );
            let v = plan_for_graph(kind, &opts, GraphRole::DvaeDecoder, &spec("dvae")).unwrap();
            assert!(v.session_config.is_empty());
        }
    }

    #[test]
    fn cpu_without_arena_registers_the_cpu_provider_with_use_arena_0() {
        let opts = EpOptions {
            no_cpu_arena: true,
            ..options(EpChoice::Cpu)
        };
        let plan = plan_for_graph(
            ProviderKind::Cpu,
            &opts,
            GraphRole::Decoder,
            &encoder_spec(),
        )
        .unwrap();
        assert_eq!(
            plan.providers,
            vec![ProviderSettings::Cpu(CpuSettings { arena: false })]
        );
        assert_eq!(plan.providers[0].kind(), ProviderKind::Cpu);
        assert_eq!(
            plan.providers[0].ort_options(),
            vec![("use_arena", "0".to_string())]
        );
        // the GPU providers ignore the CPU setting
        let plan = plan_for_graph(
            ProviderKind::Cuda,
            &opts,
            GraphRole::Decoder,
            &encoder_spec(),
        )
        .unwrap();
        assert_eq!(plan.providers.len(), 1);
        assert_eq!(plan.providers[0].kind(), ProviderKind::Cuda);
    }

    #[test]
    fn cpu_registers_nothing() {
        let plan = plan_for_graph(
            ProviderKind::Cpu,
            &options(EpChoice::Cpu),
            GraphRole::DvaeEncoder,
            &encoder_spec(),
        )
        .unwrap();
        assert!(plan.providers.is_empty());
    }

    #[test]
    fn cuda_gets_the_device_id() {
        let plan = plan_for_graph(
            ProviderKind::Cuda,
            &options(EpChoice::Cuda),
            GraphRole::DvaeEncoder,
            &encoder_spec(),
        )
        .unwrap();
        assert_eq!(
            plan.providers,
            vec![ProviderSettings::Cuda(CudaSettings { device_id: 3 })]
        );
    }

    #[test]
    fn tensorrt_settings_and_cuda_after_it() {
        let plan = plan_for_graph(
            ProviderKind::TensorRt,
            &options(EpChoice::Tensorrt),
            GraphRole::DvaeEncoder,
            &encoder_spec(),
        )
        .unwrap();
        assert_eq!(plan.providers.len(), 2);
        let ProviderSettings::TensorRt(trt) = &plan.providers[0] else {
            panic!("TensorRT must come first: {plan:?}");
        };
        assert_eq!(trt.device_id, 3);
        assert!(trt.fp16);
        assert_eq!(trt.engine_cache.as_deref(), Some("/cache/engines".as_ref()));
        assert_eq!(trt.engine_cache_prefix.as_deref(), Some("dvae_encoder"));
        assert_eq!(trt.timing_cache.as_deref(), Some("/cache/timing".as_ref()));
        let profile = trt.profile.as_ref().unwrap();
        assert_eq!(profile.min, "pixels:1x3x64x64");
        assert_eq!(profile.opt, "pixels:2x3x256x256");
        assert_eq!(profile.max, "pixels:8x3x512x512");
        assert_eq!(
            plan.providers[1],
            ProviderSettings::Cuda(CudaSettings { device_id: 3 })
        );

        let opts = plan.providers[0].ort_options();
        let get = |k: &str| {
            opts.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("trt_fp16_enable"), Some("1"));
        assert_eq!(get("trt_engine_cache_enable"), Some("1"));
        assert_eq!(get("trt_engine_cache_path"), Some("/cache/engines"));
        assert_eq!(get("trt_timing_cache_path"), Some("/cache/timing"));
        assert_eq!(get("trt_profile_max_shapes"), Some("pixels:8x3x512x512"));
    }

    #[test]
    fn tensorrt_without_caches_or_fp16_sets_none() {
        let opts = EpOptions {
            ep: EpChoice::Tensorrt,
            ..EpOptions::default()
        };
        let plan = plan_for_graph(
            ProviderKind::TensorRt,
            &opts,
            GraphRole::DvaeEncoder,
            &encoder_spec(),
        )
        .unwrap();
        let keys: Vec<_> = plan.providers[0]
            .ort_options()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            vec![
                "device_id",
                "trt_profile_min_shapes",
                "trt_profile_opt_shapes",
                "trt_profile_max_shapes"
            ]
        );
    }

    #[test]
    fn in_place_decoders_are_flagged_on_gpu_providers_only() {
        let mut spec = encoder_spec();
        spec.attributes
            .insert(attr::KV_CACHE.into(), serde_json::json!(KV_IN_PLACE));
        spec.attributes
            .insert(attr::KV_CAPACITY.into(), serde_json::json!(8));
        for kind in [ProviderKind::Cuda, ProviderKind::TensorRt] {
            let note = provider_caveat(kind, GraphRole::Decoder, &spec).unwrap();
            assert!(note.contains("--kv-cache concat"), "{note}");
        }
        assert_eq!(
            provider_caveat(ProviderKind::Cpu, GraphRole::Decoder, &spec),
            None
        );
        assert_eq!(
            provider_caveat(ProviderKind::Cuda, GraphRole::DvaeDecoder, &spec),
            None
        );
        spec.attributes
            .insert(attr::KV_CACHE.into(), serde_json::json!(KV_CONCAT));
        assert_eq!(
            provider_caveat(ProviderKind::Cuda, GraphRole::Decoder, &spec),
            None
        );
    }

    #[test]
    fn graphs_the_cpu_has_no_kernels_for_are_refused_there_and_gpu_mismatches_warned() {
        use dalle_bundle::attributes::precision::{Precision, PrecisionAttributes};
        let mut spec = encoder_spec();
        PrecisionAttributes {
            precision: Precision::Bf16,
            compute: DType::BF16,
            kept_float32: vec![],
            quantization: None,
            providers: vec![BundleProvider::Cuda],
            verified_on: vec![],
            cpu_missing_kernels: vec!["Add(bfloat16)".into()],
        }
        .insert_into(&mut spec.attributes);
        let err = plan_for_graph(
            ProviderKind::Cpu,
            &options(EpChoice::Cpu),
            GraphRole::DvaeEncoder,
            &spec,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--precision bf16")
                && err.contains("Add(bfloat16)")
                && err.contains("--ep cuda"),
            "{err}"
        );
        assert!(
            plan_for_graph(
                ProviderKind::Cuda,
                &options(EpChoice::Cuda),
                GraphRole::DvaeEncoder,
                &spec
            )
            .is_ok()
        );
        let note = provider_caveat(ProviderKind::TensorRt, GraphRole::DvaeEncoder, &spec).unwrap();
        assert!(note.contains("suits cuda, not tensorrt"), "{note}");
        assert_eq!(
            provider_caveat(ProviderKind::Cuda, GraphRole::DvaeEncoder, &spec),
            None
        );
    }

    #[test]
    fn auto_prefers_tensorrt_then_cuda_then_cpu() {
        let all = decide_auto(|_| Ok(()));
        assert_eq!(all.kind, ProviderKind::TensorRt);

        let no_trt = decide_auto(|k| match k {
            ProviderKind::TensorRt => Err("libnvinfer.so.10 missing".into()),
            _ => Ok(()),
        });
        assert_eq!(no_trt.kind, ProviderKind::Cuda);
        assert!(
            no_trt.reasons[0].contains("libnvinfer"),
            "{:?}",
            no_trt.reasons
        );

        let mut probed = vec![];
        let none = decide_auto(|k| {
            probed.push(k);
            Err("not built into this ONNX Runtime".into())
        });
        assert_eq!(none.kind, ProviderKind::Cpu);
        assert_eq!(probed, vec![ProviderKind::TensorRt, ProviderKind::Cuda]);
        assert_eq!(none.reasons.len(), 3);
    }

    #[test]
    fn choices_know_whether_they_need_the_gpu_build() {
        assert!(EpChoice::Cuda.needs_gpu());
        assert!(EpChoice::Tensorrt.needs_gpu());
        assert!(!EpChoice::Cpu.needs_gpu());
        assert!(!EpChoice::Auto.needs_gpu());
        assert_eq!(EpChoice::Auto.fixed_kind(), None);
    }
}
