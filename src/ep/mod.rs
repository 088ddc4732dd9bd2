//! Execution providers: what the user asked for (`--ep`, `--device-id`, `--trt-*`) turned into
//! the list of providers, with their settings, to register on each graph's session.
//!
//! Everything here is plain data and pure functions, unit-tested without ONNX Runtime:
//! [`EpOptions`] + a graph's [`GraphSpec`] → [`EpPlan`] ([`plan_for_graph`]); for the decoder
//! a [`DecoderPlan`] ([`plan_decoder`]): one session per [`DecoderPhase`] (prefill and decode on
//! TensorRT, [`phases`]) and where its tensors live ([`residency`]); which providers a graph
//! suits ([`suited_providers`], [`provider_for_graph`]); the default TensorRT cache folder
//! ([`cache`]); and the `auto` decision ([`decide_auto`]) with the availability probe injected.
//! [`register`] is the thin layer that turns plans into `ort` builders and memory infos and
//! probes the loaded library.
//!
//! Every provider is registered with `error_on_failure`: a provider that cannot be used is an
//! error, never a silent fall-back to the CPU.

pub mod cache;
pub mod libs;
pub mod phases;
pub mod profile;
pub mod register;
pub mod residency;

use crate::error::{Error, Result};
use dalle_bundle::attributes::precision::{
    Precision, PrecisionAttributes, Provider as BundleProvider,
};
use dalle_bundle::io::decoder::KV_CACHE_ATTRIBUTE;
use dalle_bundle::{DType, GraphRole, GraphSpec, KvCacheAttribute};
use std::fmt;
use std::path::PathBuf;

pub use phases::{DecoderPhase, Route, decoder_phases, route};
pub use profile::{TrtProfile, trt_profile, trt_profile_with};
pub use residency::{DecoderMemoryPlan, MemoryPlace, decoder_memory};

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
    /// Folder for TensorRT engine caches (default: the bundle's cache folder, [`cache`]).
    pub trt_engine_cache: Option<PathBuf>,
    /// Folder for the TensorRT timing cache (default: the bundle's cache folder).
    pub trt_timing_cache: Option<PathBuf>,
    /// No default TensorRT cache folder (only the folders given above are used).
    pub no_trt_cache: bool,
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
    /// Which calls the session takes ([`DecoderPhase::All`] for every graph but a TensorRT
    /// decoder's).
    pub phase: DecoderPhase,
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

/// Builds the plan for one graph's single session. TensorRT is followed by CUDA with the same
/// device, as the ORT docs recommend, so nodes TensorRT cannot take run on the GPU rather than
/// the CPU.
pub fn plan_for_graph(
    kind: ProviderKind,
    options: &EpOptions,
    role: GraphRole,
    spec: &GraphSpec,
) -> Result<EpPlan> {
    plan_for_phase(kind, options, role, spec, DecoderPhase::All, None)
}

/// Builds the plan for the session of `spec` that takes `phase`'s calls: the TensorRT profile
/// comes from the phase's ranges ([`phases::phase_ranges`]; `prefill_sequence`, the prompt
/// length, is the prefill's opt), the engine-cache prefix names the graph and phase. A graph
/// the provider does not suit is an error ([`suited_providers`]).
pub fn plan_for_phase(
    kind: ProviderKind,
    options: &EpOptions,
    role: GraphRole,
    spec: &GraphSpec,
    phase: DecoderPhase,
    prefill_sequence: Option<u64>,
) -> Result<EpPlan> {
    check_suited(kind, role, spec)?;
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
                    .map(|_| phase.cache_prefix(role)),
                timing_cache: options.trt_timing_cache.clone(),
                profile: trt_profile_with(
                    role,
                    spec,
                    &phases::phase_ranges(phase, role, spec, prefill_sequence)?,
                )?,
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
        phase,
        providers,
        session_config,
    })
}

/// The decoder's sessions and memory on one provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecoderPlan {
    pub kind: ProviderKind,
    /// One plan per session, in [`decoder_phases`] order.
    pub sessions: Vec<EpPlan>,
    /// Where its tensors live.
    pub memory: DecoderMemoryPlan,
}

impl DecoderPlan {
    /// The phases of its sessions.
    pub fn phases(&self) -> Vec<DecoderPhase> {
        self.sessions.iter().map(|s| s.phase).collect()
    }
}

/// The decoder's plan on `kind`: its sessions ([`plan_for_phase`] per [`decoder_phases`]) and
/// its memory ([`decoder_memory`]). `prefill_sequence` is the prompt length (BOS + text).
pub fn plan_decoder(
    kind: ProviderKind,
    options: &EpOptions,
    spec: &GraphSpec,
    prefill_sequence: Option<u64>,
) -> Result<DecoderPlan> {
    let sessions = decoder_phases(kind)
        .iter()
        .map(|&phase| {
            plan_for_phase(
                kind,
                options,
                GraphRole::Decoder,
                spec,
                phase,
                prefill_sequence,
            )
        })
        .collect::<Result<_>>()?;
    Ok(DecoderPlan {
        kind,
        sessions,
        memory: decoder_memory(kind, options.device_id, spec),
    })
}

/// The dtype of a decoder's KV state (its first `past_key_values.*` input), if it has one.
fn kv_dtype(spec: &GraphSpec) -> Option<DType> {
    spec.inputs
        .iter()
        .find(|t| t.name.starts_with("past_key_values."))
        .map(|t| t.dtype)
}

/// The providers a graph can run on. Every graph runs everywhere except a decoder exported with
/// `--kv-cache in-place` in float32: its attention, `com.microsoft.GroupQueryAttention`, has its
/// only float32 kernel on the CPU (CUDA's takes fp16/bf16, and TensorRT's parser does not take
/// contrib ops), so on a GPU every layer would fall back to the CPU with the caches copied
/// across each step. An fp16/bf16 in-place decoder suits every provider.
pub fn suited_providers(role: GraphRole, spec: &GraphSpec) -> Result<Vec<ProviderKind>> {
    let all = vec![
        ProviderKind::Cpu,
        ProviderKind::Cuda,
        ProviderKind::TensorRt,
    ];
    if role != GraphRole::Decoder {
        return Ok(all);
    }
    let layout = KvCacheAttribute::from_spec(spec).map_err(|e| Error::EpPlan {
        role,
        message: format!("{KV_CACHE_ATTRIBUTE}: {e}"),
    })?;
    if layout.in_place() && kv_dtype(spec).is_none_or(|d| d == DType::F32) {
        return Ok(vec![ProviderKind::Cpu]);
    }
    Ok(all)
}

/// [`suited_providers`] as an error for `kind`.
fn check_suited(kind: ProviderKind, role: GraphRole, spec: &GraphSpec) -> Result<()> {
    if suited_providers(role, spec)?.contains(&kind) {
        return Ok(());
    }
    Err(Error::EpPlan {
        role,
        message: format!(
            "this decoder was exported with --kv-cache in-place in float32, whose attention \
             (GroupQueryAttention) has no {kind} kernel; run it with --ep cpu, or export with \
             --kv-cache concat (the default) for GPUs"
        ),
    })
}

/// The provider a graph's sessions use: the bundle's (`decided`), or — when the user chose
/// `auto` and the graph does not suit it — the CPU, with a note saying why. A provider named
/// with `--ep` that the graph does not suit is an error.
pub fn provider_for_graph(
    decided: ProviderKind,
    choice: EpChoice,
    role: GraphRole,
    spec: &GraphSpec,
) -> Result<(ProviderKind, Option<String>)> {
    if suited_providers(role, spec)?.contains(&decided) {
        return Ok((decided, provider_caveat(decided, role, spec)));
    }
    if choice != EpChoice::Auto {
        check_suited(decided, role, spec)?;
    }
    Ok((
        ProviderKind::Cpu,
        Some(format!(
            "--ep auto: graph `{role}` runs on the cpu, not {decided}: it was exported with \
             --kv-cache in-place in float32, whose attention only has a CPU kernel (export with \
             --kv-cache concat for GPUs)"
        )),
    ))
}

/// A warning for a graph that runs on `kind` but not well: an fp16/bf16 in-place decoder's
/// GroupQueryAttention is a contrib op TensorRT does not take, so on TensorRT each layer's
/// attention runs on CUDA between TensorRT engines.
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
    let in_place = KvCacheAttribute::from_spec(spec).is_ok_and(|kv| kv.in_place());
    (role == GraphRole::Decoder && in_place && kind == ProviderKind::TensorRt).then(|| {
        "this bundle's decoder was exported with --kv-cache in-place: its attention \
         (GroupQueryAttention) is not a TensorRT op and runs on CUDA between TensorRT engines \
         (--ep cuda runs it without the split)"
            .to_string()
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
    use dalle_bundle::io::decoder::KV_IN_PLACE;
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
            no_trt_cache: false,
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

    fn in_place_decoder(dtype: DType) -> GraphSpec {
        let mut spec = decoder_spec();
        spec.inputs[1] = TensorSpec::new(
            "past_key_values.0.key",
            dtype,
            vec![Dim::sym("batch"), 6.into(), 80.into(), 32.into()],
        );
        spec.attributes
            .insert(attr::KV_CACHE.into(), serde_json::json!(KV_IN_PLACE));
        spec.attributes
            .insert(attr::KV_CAPACITY.into(), serde_json::json!(80));
        spec
    }

    #[test]
    fn float32_in_place_decoders_are_never_planned_onto_gpu_providers() {
        let spec = in_place_decoder(DType::F32);
        assert_eq!(
            suited_providers(GraphRole::Decoder, &spec).unwrap(),
            vec![ProviderKind::Cpu]
        );
        for kind in [ProviderKind::Cuda, ProviderKind::TensorRt] {
            let e = plan_for_graph(kind, &options(EpChoice::Cuda), GraphRole::Decoder, &spec)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--kv-cache concat") && e.contains("--ep cpu"),
                "{e}"
            );
            let e = plan_decoder(kind, &options(EpChoice::Tensorrt), &spec, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(kind.name()), "{e}");
            // named with --ep: an error; auto: the CPU, said so
            let choice = if kind == ProviderKind::Cuda {
                EpChoice::Cuda
            } else {
                EpChoice::Tensorrt
            };
            assert!(provider_for_graph(kind, choice, GraphRole::Decoder, &spec).is_err());
            let (chosen, note) =
                provider_for_graph(kind, EpChoice::Auto, GraphRole::Decoder, &spec).unwrap();
            assert_eq!(chosen, ProviderKind::Cpu);
            assert!(note.unwrap().contains("--ep auto"));
        }
        let (chosen, note) =
            provider_for_graph(ProviderKind::Cpu, EpChoice::Cpu, GraphRole::Decoder, &spec)
                .unwrap();
        assert_eq!((chosen, note), (ProviderKind::Cpu, None));
        // the other graphs of such a bundle still go to the GPU
        let (chosen, _) = provider_for_graph(
            ProviderKind::TensorRt,
            EpChoice::Auto,
            GraphRole::DvaeDecoder,
            &spec,
        )
        .unwrap();
        assert_eq!(chosen, ProviderKind::TensorRt);
    }

    #[test]
    fn half_precision_in_place_and_concat_decoders_suit_every_provider() {
        for spec in [
            in_place_decoder(DType::F16),
            in_place_decoder(DType::BF16),
            decoder_spec(),
        ] {
            assert_eq!(
                suited_providers(GraphRole::Decoder, &spec).unwrap().len(),
                3
            );
            let plan =
                plan_decoder(ProviderKind::Cuda, &options(EpChoice::Cuda), &spec, None).unwrap();
            assert_eq!(plan.phases(), vec![DecoderPhase::All]);
        }
        // in place on TensorRT works, split around the attention: said so
        let note = provider_caveat(
            ProviderKind::TensorRt,
            GraphRole::Decoder,
            &in_place_decoder(DType::F16),
        )
        .unwrap();
        assert!(note.contains("--ep cuda"), "{note}");
        let (_, note) = provider_for_graph(
            ProviderKind::Cuda,
            EpChoice::Auto,
            GraphRole::Decoder,
            &in_place_decoder(DType::F16),
        )
        .unwrap();
        assert_eq!(note, None);
        assert_eq!(
            provider_caveat(ProviderKind::TensorRt, GraphRole::Decoder, &decoder_spec()),
            None
        );
        let mut bad = decoder_spec();
        bad.attributes
            .insert(attr::KV_CACHE.into(), serde_json::json!("sideways"));
        let e = suited_providers(GraphRole::Decoder, &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("kv_cache"), "{e}");
    }

    /// A concatenated-cache decoder with the shipped model's ranges.
    fn decoder_spec() -> GraphSpec {
        let mut dim_ranges = BTreeMap::new();
        dim_ranges.insert("batch".to_string(), DimRange::new(1, 8, 64));
        dim_ranges.insert("sequence".to_string(), DimRange::new(1, 1, 80));
        dim_ranges.insert("past_sequence_length".to_string(), DimRange::new(0, 79, 79));
        GraphSpec {
            file: "decoder.onnx".into(),
            external_data: None,
            inputs: vec![
                TensorSpec::new(
                    "input_ids",
                    DType::I64,
                    vec![Dim::sym("batch"), Dim::sym("sequence")],
                ),
                TensorSpec::new(
                    "past_key_values.0.key",
                    DType::F32,
                    vec![
                        Dim::sym("batch"),
                        6.into(),
                        Dim::sym("past_sequence_length"),
                        32.into(),
                    ],
                ),
            ],
            outputs: vec![TensorSpec::new(
                "image_logits",
                DType::F32,
                vec![Dim::sym("batch"), 64.into()],
            )],
            dim_ranges,
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn tensorrt_decoders_get_a_prefill_and_a_decode_session_with_their_own_profiles() {
        let plan = plan_decoder(
            ProviderKind::TensorRt,
            &options(EpChoice::Tensorrt),
            &decoder_spec(),
            Some(17),
        )
        .unwrap();
        assert_eq!(
            plan.phases(),
            vec![DecoderPhase::Prefill, DecoderPhase::Decode]
        );
        assert_eq!(plan.memory.state, MemoryPlace::Cuda { device_id: 3 });
        let trt = |p: &EpPlan| match &p.providers[0] {
            ProviderSettings::TensorRt(t) => t.clone(),
            other => panic!("TensorRT must come first: {other:?}"),
        };
        let prefill = trt(&plan.sessions[0]);
        assert_eq!(
            prefill.engine_cache_prefix.as_deref(),
            Some("decoder_prefill")
        );
        let p = prefill.profile.unwrap();
        assert_eq!(p.min, "input_ids:1x1,past_key_values.0.key:1x6x0x32");
        assert_eq!(p.opt, "input_ids:2x17,past_key_values.0.key:2x6x0x32");
        assert_eq!(p.max, "input_ids:64x80,past_key_values.0.key:64x6x0x32");
        let decode = trt(&plan.sessions[1]);
        assert_eq!(
            decode.engine_cache_prefix.as_deref(),
            Some("decoder_decode")
        );
        let p = decode.profile.unwrap();
        assert_eq!(p.min, "input_ids:1x1,past_key_values.0.key:1x6x1x32");
        assert_eq!(p.opt, "input_ids:8x1,past_key_values.0.key:8x6x79x32");
        assert_eq!(p.max, "input_ids:64x1,past_key_values.0.key:64x6x79x32");
        for s in &plan.sessions {
            assert_eq!(
                s.providers[1],
                ProviderSettings::Cuda(CudaSettings { device_id: 3 })
            );
            assert_eq!(
                s.session_config,
                vec![(FORCE_SPINNING_STOP, "1".to_string())]
            );
        }
        // the CPU keeps one session and the host
        let cpu = plan_decoder(
            ProviderKind::Cpu,
            &options(EpChoice::Cpu),
            &decoder_spec(),
            Some(17),
        )
        .unwrap();
        assert_eq!(cpu.phases(), vec![DecoderPhase::All]);
        assert_eq!(cpu.memory.state, MemoryPlace::Host);
    }

    /// A min-dalle bundle's `cross_kv` and concatenated-cache `decoder` (the small fixture's
    /// sizes: 4 heads × 8, 64 text positions, 256 image positions), as the exporter writes them.
    fn min_dalle_specs() -> (GraphSpec, GraphSpec) {
        let ranges = |extra: &[(&str, DimRange)]| {
            let mut r = BTreeMap::new();
            r.insert("batch".to_string(), DimRange::new(1, 2, 64));
            for (n, d) in extra {
                r.insert(n.to_string(), *d);
            }
            r
        };
        let t = |name: &str, dtype, dims: Vec<Dim>| TensorSpec::new(name, dtype, dims);
        let b = || Dim::sym("batch");
        let cross_kv = GraphSpec {
            file: "cross_kv.onnx".into(),
            external_data: None,
            inputs: vec![
                t(
                    "encoder_hidden_states",
                    DType::F32,
                    vec![b(), 64.into(), 32.into()],
                ),
                t("input_ids", DType::I64, vec![b(), 64.into()]),
            ],
            outputs: vec![t(
                "cross_key_values.0.key",
                DType::F32,
                vec![b(), 4.into(), 8.into(), 64.into()],
            )],
            dim_ranges: ranges(&[]),
            attributes: BTreeMap::new(),
        };
        let past = vec![b(), 4.into(), Dim::sym("past_sequence_length"), 8.into()];
        let decoder = GraphSpec {
            file: "decoder.onnx".into(),
            external_data: None,
            inputs: vec![
                t("input_ids", DType::I64, vec![b(), Dim::sym("sequence")]),
                t("past_key_values.0.key", DType::F32, past),
                t(
                    "cross_key_values.0.key",
                    DType::F32,
                    vec![b(), 4.into(), 8.into(), 64.into()],
                ),
                t(
                    "cross_attention_bias",
                    DType::F32,
                    vec![b(), 1.into(), 1.into(), 64.into()],
                ),
            ],
            outputs: vec![t("image_logits", DType::F32, vec![b(), 256.into()])],
            dim_ranges: ranges(&[
                ("sequence", DimRange::new(1, 1, 256)),
                ("past_sequence_length", DimRange::new(0, 255, 255)),
            ]),
            attributes: BTreeMap::new(),
        };
        (cross_kv, decoder)
    }

    #[test]
    fn min_dalle_plans_cover_cross_kv_and_the_constant_state_on_tensorrt() {
        let (cross_kv, decoder) = min_dalle_specs();
        let opts = options(EpChoice::Tensorrt);
        // cross_kv: one TensorRT session over the batch range.
        let plan =
            plan_for_graph(ProviderKind::TensorRt, &opts, GraphRole::CrossKv, &cross_kv).unwrap();
        let ProviderSettings::TensorRt(trt) = &plan.providers[0] else {
            panic!("TensorRT must come first: {plan:?}");
        };
        assert_eq!(trt.engine_cache_prefix.as_deref(), Some("cross_kv"));
        let p = trt.profile.as_ref().unwrap();
        assert_eq!(p.min, "encoder_hidden_states:1x64x32,input_ids:1x64");
        assert_eq!(p.opt, "encoder_hidden_states:2x64x32,input_ids:2x64");
        assert_eq!(p.max, "encoder_hidden_states:64x64x32,input_ids:64x64");
        // The decoder: a prefill session for the start token alone (sequence opt 1, the
        // bundle's prefill length for min-dalle) and a decode session; the constant state is in
        // both profiles at the batch's range, and lives on the device with the caches.
        let plan = plan_decoder(ProviderKind::TensorRt, &opts, &decoder, Some(1)).unwrap();
        assert_eq!(
            plan.phases(),
            vec![DecoderPhase::Prefill, DecoderPhase::Decode]
        );
        let trt = |p: &EpPlan| match &p.providers[0] {
            ProviderSettings::TensorRt(t) => t.profile.clone().unwrap(),
            other => panic!("TensorRT must come first: {other:?}"),
        };
        let prefill = trt(&plan.sessions[0]);
        assert_eq!(
            prefill.opt,
            "input_ids:2x1,past_key_values.0.key:2x4x0x8,cross_key_values.0.key:2x4x8x64,\
             cross_attention_bias:2x1x1x64"
        );
        let decode = trt(&plan.sessions[1]);
        assert_eq!(
            decode.min,
            "input_ids:1x1,past_key_values.0.key:1x4x1x8,cross_key_values.0.key:1x4x8x64,\
             cross_attention_bias:1x1x1x64"
        );
        assert_eq!(
            decode.max,
            "input_ids:64x1,past_key_values.0.key:64x4x255x8,cross_key_values.0.key:64x4x8x64,\
             cross_attention_bias:64x1x1x64"
        );
        assert_eq!(plan.memory.state, MemoryPlace::Cuda { device_id: 3 });
        assert_eq!(plan.memory.constant_state, Some(plan.memory.state));
        // Every graph of the bundle suits every provider (concat: standard ONNX only).
        for (role, spec) in [
            (GraphRole::CrossKv, &cross_kv),
            (GraphRole::Decoder, &decoder),
        ] {
            assert_eq!(suited_providers(role, spec).unwrap().len(), 3);
        }
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
