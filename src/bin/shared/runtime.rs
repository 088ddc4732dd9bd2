//! The options every program that runs a bundle takes, spelled the same way in `dalle-ort` and
//! `shapes-eval`: the ONNX Runtime library, the execution provider and its settings, `-v`, and
//! the `--seed` value (`-1` = random, as in min-dalle and AUTOMATIC1111).

#![allow(dead_code)] // shared by the binaries; each uses a part

use anyhow::Result;
use clap::Args;
use dalle::ep::{EpChoice, EpOptions};
use std::path::PathBuf;

/// ONNX Runtime, execution provider and logging flags (global: accepted after the subcommand).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Execution provider")]
pub struct RuntimeArgs {
    /// ONNX Runtime library to load (default: $ORT_DYLIB_PATH, then .onnxruntime/{gpu,cpu}/
    /// from `scripts/setup-ort.sh` near the current directory or the executable)
    #[arg(long, global = true, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,

    /// Execution provider; `auto` tries tensorrt, then cuda, then uses the cpu
    #[arg(long, global = true, value_enum, default_value_t = EpChoice::Auto)]
    pub ep: EpChoice,

    /// CUDA device for the cuda and tensorrt providers
    #[arg(long, global = true, default_value_t = 0, value_name = "N")]
    pub device_id: u32,

    /// Let TensorRT use fp16 kernels
    #[arg(long, global = true)]
    pub trt_fp16: bool,

    /// Folder for TensorRT engine caches (default: the bundle's folder under
    /// $XDG_CACHE_HOME/dalle/tensorrt, or ~/.cache/dalle/tensorrt)
    #[arg(long, global = true, value_name = "DIR")]
    pub trt_engine_cache: Option<PathBuf>,

    /// Folder for the TensorRT timing cache (default: the same folder as the engines)
    #[arg(long, global = true, value_name = "DIR")]
    pub trt_timing_cache: Option<PathBuf>,

    /// No default TensorRT cache folder: engines are rebuilt at every start unless
    /// --trt-engine-cache is given
    #[arg(long, global = true)]
    pub no_trt_cache: bool,

    /// Turn off the CPU provider's memory arena (lower peak memory, somewhat slower steps)
    #[arg(long, global = true)]
    pub no_cpu_arena: bool,

    /// More logging: -v info, -vv debug, -vvv trace (with timestamps and module paths);
    /// RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Logging")]
    pub verbose: u8,
}

impl RuntimeArgs {
    /// The execution-provider settings.
    pub fn ep_options(&self) -> EpOptions {
        EpOptions {
            ep: self.ep,
            device_id: self.device_id,
            trt_fp16: self.trt_fp16,
            trt_engine_cache: self.trt_engine_cache.clone(),
            trt_timing_cache: self.trt_timing_cache.clone(),
            no_trt_cache: self.no_trt_cache,
            no_cpu_arena: self.no_cpu_arena,
        }
    }

    /// Loads ONNX Runtime (`--ort-lib`, `$ORT_DYLIB_PATH`, `.onnxruntime/`).
    pub fn load_ort(&self) -> Result<()> {
        dalle::ort_lib::load(self.ort_lib.as_deref(), self.ep.needs_gpu())?;
        Ok(())
    }
}

/// A `--seed` value: a number in `[0, 2^64)`, or `-1` for a random one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seed {
    Random,
    Fixed(u64),
}

impl Seed {
    /// The seed to use: a fixed one, or one drawn now (the caller records it).
    pub fn resolve(seed: Option<Seed>) -> u64 {
        match seed {
            Some(Seed::Fixed(s)) => s,
            None | Some(Seed::Random) => dalle::engine::random_seed(),
        }
    }
}

/// clap's parser for [`Seed`].
pub fn parse_seed(s: &str) -> Result<Seed, String> {
    if s.trim() == "-1" {
        return Ok(Seed::Random);
    }
    s.trim()
        .parse()
        .map(Seed::Fixed)
        .map_err(|_| format!("{s:?} is not a seed: give a number in [0, 2^64), or -1 for random"))
}
