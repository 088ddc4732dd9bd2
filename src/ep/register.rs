//! Turning an [`EpPlan`] into `ort` execution providers (and a [`MemoryPlace`] into `ort`'s
//! memory info), and probing the loaded library.
//!
//! The only place that touches `ort::ep`. Providers are registered one at a time with
//! `error_on_failure()`, so a failure names the provider that failed and nothing falls back to
//! the CPU silently.

use super::{
    AutoDecision, EpChoice, EpPlan, MemoryPlace, ProviderKind, ProviderSettings, decide_auto,
};
use crate::error::{Error, Result};
use crate::ort_lib;
use dalle_bundle::GraphRole;
use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider, ExecutionProviderDispatch};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::Session;
use ort::session::builder::SessionBuilder;

/// The `ort` provider for one entry of a plan, set to fail loudly.
pub fn dispatch(settings: &ProviderSettings) -> Result<ExecutionProviderDispatch> {
    let ep = match settings {
        ProviderSettings::Cpu(c) => ep::CPU::default().with_arena_allocator(c.arena).build(),
        ProviderSettings::Cuda(c) => ep::CUDA::default()
            .with_device_id(device_id(c.device_id)?)
            .build(),
        ProviderSettings::TensorRt(t) => {
            let mut trt = ep::TensorRT::default()
                .with_device_id(device_id(t.device_id)?)
                .with_fp16(t.fp16);
            if let Some(dir) = &t.engine_cache {
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir.display());
                if let Some(prefix) = &t.engine_cache_prefix {
                    trt = trt.with_engine_cache_prefix(prefix);
                }
            }
            if let Some(dir) = &t.timing_cache {
                trt = trt
                    .with_timing_cache(true)
                    .with_timing_cache_path(dir.display());
            }
            if let Some(p) = &t.profile {
                trt = trt
                    .with_profile_min_shapes(&p.min)
                    .with_profile_opt_shapes(&p.opt)
                    .with_profile_max_shapes(&p.max);
            }
            trt.build()
        }
    };
    Ok(ep.error_on_failure())
}

/// `ort`'s description of `place`: the CPU, or CUDA device memory (ONNX Runtime's default
/// device memory type, what a CUDA session's allocator hands out).
pub fn memory_info(place: MemoryPlace) -> Result<MemoryInfo<'static>> {
    let (device, id) = match place {
        MemoryPlace::Host => (AllocationDevice::CPU, 0),
        MemoryPlace::Cuda { device_id: id } => (AllocationDevice::CUDA, device_id(id)?),
    };
    MemoryInfo::new(device, id, AllocatorType::Device, MemoryType::Default)
        .map_err(|e| Error::ort(format!("cannot describe {place} memory"), e))
}

fn device_id(id: u32) -> Result<i32> {
    i32::try_from(id).map_err(|_| Error::InvalidInput(format!("--device-id {id} is out of range")))
}

/// Registers the plan's providers on `builder`, in order.
pub fn apply(
    mut builder: SessionBuilder,
    plan: &EpPlan,
    role: GraphRole,
) -> Result<SessionBuilder> {
    for (key, value) in &plan.session_config {
        builder = builder
            .with_config_entry(*key, value.as_str())
            .map_err(|e| {
                Error::ort(
                    format!("graph `{role}`: cannot set session option {key}={value}"),
                    e,
                )
            })?;
    }
    for settings in &plan.providers {
        let provider = settings.kind();
        tracing::debug!(
            "graph {role}: registering {} with {:?}",
            provider.ort_name(),
            settings.ort_options()
        );
        builder = builder
            .with_execution_providers([dispatch(settings)?])
            .map_err(|e| Error::ProviderRegistration {
                provider: provider.name(),
                role,
                hint: gpu_hint(provider),
                cause: e.into(),
            })?;
    }
    Ok(builder)
}

/// Advice for a GPU provider that failed: install the GPU build, or the CUDA libraries.
fn gpu_hint(provider: ProviderKind) -> String {
    if provider == ProviderKind::Cpu {
        return String::new();
    }
    match ort_lib::loaded_library() {
        Some(lib) if !lib.has_gpu_providers() => format!(
            "\nhint: the loaded ONNX Runtime ({}) is the CPU build; run `{}`, or point --ort-lib / \
             ORT_DYLIB_PATH at a GPU build",
            lib.path.display(),
            ort_lib::setup_command(true)
        ),
        _ if provider == ProviderKind::TensorRt => "\nhint: the GPU build of ONNX Runtime needs \
             CUDA 13, cuDNN 9 and TensorRT 10 libraries on the loader path (LD_LIBRARY_PATH)"
            .to_string(),
        _ => "\nhint: the GPU build of ONNX Runtime needs CUDA 13 and cuDNN 9 libraries on the \
              loader path (LD_LIBRARY_PATH)"
            .to_string(),
    }
}

/// Whether the loaded library was built with `kind` (`Err` says why not, for messages).
pub fn built_with(kind: ProviderKind) -> std::result::Result<(), String> {
    let available = match kind {
        ProviderKind::Cpu => return Ok(()),
        ProviderKind::Cuda => ep::CUDA::is_available(),
        ProviderKind::TensorRt => ep::TensorRT::is_available(),
    };
    match available {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "{} is not built into the loaded ONNX Runtime library",
            kind.ort_name()
        )),
        Err(e) => Err(format!("cannot query ONNX Runtime's providers: {e}")),
    }
}

/// The CUDA/TensorRT libraries `kind` needs are on the loader path (`Err` names the missing).
fn libraries_present(kind: ProviderKind) -> std::result::Result<(), String> {
    super::libs::check(kind)
}

/// Whether `kind` registers on a scratch session (loads its provider library and CUDA).
pub fn probe(
    env: &Environment,
    kind: ProviderKind,
    device: u32,
) -> std::result::Result<(), String> {
    built_with(kind)?;
    libraries_present(kind)?;
    let mut builder = Session::builder(env).map_err(|e| e.to_string())?;
    let id = i32::try_from(device).map_err(|_| format!("device id {device} is out of range"))?;
    let registered = match kind {
        ProviderKind::Cpu => Ok(()),
        ProviderKind::Cuda => ep::CUDA::default()
            .with_device_id(id)
            .register(&mut builder),
        ProviderKind::TensorRt => ep::TensorRT::default()
            .with_device_id(id)
            .register(&mut builder),
    };
    registered.map_err(|e| e.to_string())
}

/// Resolves `--ep`: a named GPU provider must at least be built into the loaded library (a clear
/// error now rather than at the first session); `auto` probes tensorrt, then cuda, and logs what
/// it chose and why.
pub fn resolve(env: &Environment, choice: EpChoice, device: u32) -> Result<AutoDecision> {
    if let Some(kind) = choice.fixed_kind() {
        if let Err(why) = built_with(kind) {
            let library = ort_lib::loaded_library()
                .map(|l| l.path.display().to_string())
                .unwrap_or_else(|| "?".to_string());
            return Err(Error::InvalidInput(format!(
                "--ep {kind}: {why} ({library}); run `{}` to install the GPU build, or choose \
                 --ep cpu",
                ort_lib::setup_command(true)
            )));
        }
        if let Err(why) = libraries_present(kind) {
            return Err(Error::InvalidInput(format!("--ep {kind}: {why}")));
        }
        return Ok(AutoDecision {
            kind,
            reasons: vec![format!("{kind}: requested with --ep")],
        });
    }
    let decision = decide_auto(|kind| probe(env, kind, device));
    tracing::info!(
        "--ep auto chose {} ({})",
        decision.kind,
        decision.reasons.join("; ")
    );
    if decision.kind == ProviderKind::Cpu
        && ort_lib::loaded_library().is_some_and(|l| l.has_gpu_providers())
    {
        tracing::warn!(
            "--ep auto: the GPU build of ONNX Runtime is loaded but no GPU provider registers, \
             running on the CPU ({})",
            decision.reasons.join("; ")
        );
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ep::{CpuSettings, CudaSettings, TensorRtSettings, TrtProfile};

    #[test]
    fn dispatch_builds_both_gpu_providers() {
        // Building the `ort` structs needs no library; registering would.
        let cuda = dispatch(&ProviderSettings::Cuda(CudaSettings { device_id: 1 })).unwrap();
        assert_eq!(cuda.name(), "CUDAExecutionProvider");
        let trt = dispatch(&ProviderSettings::TensorRt(TensorRtSettings {
            device_id: 0,
            fp16: true,
            engine_cache: Some("/tmp/e".into()),
            engine_cache_prefix: Some("decoder".into()),
            timing_cache: Some("/tmp/t".into()),
            profile: Some(TrtProfile {
                min: "x:1".into(),
                opt: "x:2".into(),
                max: "x:4".into(),
            }),
        }))
        .unwrap();
        assert_eq!(trt.name(), "TensorrtExecutionProvider");
        let cpu = dispatch(&ProviderSettings::Cpu(CpuSettings { arena: false })).unwrap();
        assert_eq!(cpu.name(), "CPUExecutionProvider");
    }

    /// Needs the real CPU library (`scripts/setup-ort.sh`, which the test command runs first);
    /// fails without it. On the GPU build the premise does not hold and it says so.
    #[test]
    fn gpu_providers_on_the_cpu_build_are_a_clear_error() {
        let roots = ort_lib::default_search_roots();
        let library = ort_lib::locate(None, std::env::var_os(ort_lib::ENV_VAR), &roots, false)
            .unwrap_or_else(|e| panic!("ONNX Runtime is required for this test: {e}"));
        if library.has_gpu_providers() {
            eprintln!("SKIP: {} is the GPU build", library.path.display());
            return;
        }
        let env = ort_lib::init(&library).unwrap();
        for choice in [EpChoice::Cuda, EpChoice::Tensorrt] {
            let err = resolve(&env, choice, 0).unwrap_err().to_string();
            assert!(err.contains("not built into"), "{err}");
            assert!(err.contains("scripts/setup-ort.sh --gpu"), "{err}");
        }
        let auto = resolve(&env, EpChoice::Auto, 0).unwrap();
        assert_eq!(auto.kind, ProviderKind::Cpu);
        assert_eq!(auto.reasons.len(), 3, "{:?}", auto.reasons);
        // Registering CUDA by hand on a session must fail loudly, not fall back to the CPU.
        let plan = EpPlan {
            kind: ProviderKind::Cuda,
            phase: crate::ep::DecoderPhase::All,
            providers: vec![ProviderSettings::Cuda(CudaSettings { device_id: 0 })],
            session_config: vec![],
        };
        let builder = Session::builder(&env).unwrap();
        let Err(err) = apply(builder, &plan, GraphRole::DvaeDecoder) else {
            panic!("CUDA registered on the CPU build");
        };
        let msg = err.to_string();
        assert!(msg.contains("cuda execution provider"), "{msg}");
        assert!(msg.contains("setup-ort.sh --gpu"), "{msg}");
    }

    #[test]
    fn huge_device_ids_are_rejected() {
        let Err(err) = dispatch(&ProviderSettings::Cuda(CudaSettings {
            device_id: u32::MAX,
        })) else {
            panic!("device id u32::MAX must be rejected");
        };
        assert!(err.to_string().contains("--device-id"), "{err}");
    }
}
