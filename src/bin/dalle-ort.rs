//! `dalle-ort`: the command-line front end of the runtime.
//!
//! Global options pick the ONNX Runtime library and execution provider; subcommands work on one
//! bundle (`--model DIR`). Errors print with their whole chain and exit non-zero.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use dalle::ep::{EpChoice, EpOptions};
use dalle::{Bundle, dvae, npy, ort_lib, preprocess};
use dalle_bundle::{GraphRole, Manifest};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[path = "dalle-ort/generate.rs"]
mod generate;
use generate::GenerateArgs;

#[path = "dalle-ort/serve.rs"]
mod serve;

#[derive(Parser)]
#[command(
    name = "dalle-ort",
    version,
    about = "Run exported DALL·E-1 bundles with ONNX Runtime"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// ONNX Runtime library to load (default: $ORT_DYLIB_PATH, then .onnxruntime/{gpu,cpu}/
    /// from `scripts/setup-ort.sh` near the current directory or the executable)
    #[arg(long, global = true, value_name = "PATH")]
    ort_lib: Option<PathBuf>,

    /// Execution provider; `auto` tries tensorrt, then cuda, then uses the cpu
    #[arg(long, global = true, value_enum, default_value_t = EpChoice::Auto)]
    ep: EpChoice,

    /// CUDA device for the cuda and tensorrt providers
    #[arg(long, global = true, default_value_t = 0, value_name = "N")]
    device_id: u32,

    /// Let TensorRT use fp16 kernels
    #[arg(long, global = true)]
    trt_fp16: bool,

    /// Folder for TensorRT engine caches (enables them)
    #[arg(long, global = true, value_name = "DIR")]
    trt_engine_cache: Option<PathBuf>,

    /// Folder for the TensorRT timing cache (enables it)
    #[arg(long, global = true, value_name = "DIR")]
    trt_timing_cache: Option<PathBuf>,

    /// Turn off the CPU provider's memory arena (lower peak memory, somewhat slower steps)
    #[arg(long, global = true)]
    no_cpu_arena: bool,

    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// The bundle a subcommand works on.
#[derive(Args)]
struct BundleArg {
    /// Bundle directory (holds manifest.json)
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Show a bundle's manifest and each graph's real inputs/outputs (fails on any mismatch)
    Info {
        #[command(flatten)]
        bundle: BundleArg,
    },
    /// Encode an image (PNG or JPEG) into dVAE image tokens (.npy, int64 [1, h, w])
    Encode {
        #[command(flatten)]
        bundle: BundleArg,
        /// Input image; resized so its shortest side fits the encoder, then centre-cropped
        image: PathBuf,
        /// Output .npy file
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Decode dVAE image tokens (.npy, int64/int32 [h, w] or [batch, h, w]) into PNG images
    Decode {
        #[command(flatten)]
        bundle: BundleArg,
        /// Input .npy file of token ids
        tokens: PathBuf,
        /// Output PNG; with several images, `NAME_0.png`, `NAME_1.png`, ...
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Generate images from a text prompt (transformer decoder + dVAE): one PNG per candidate,
    /// a grid and a JSON sidecar in the output folder
    Generate(GenerateArgs),
    /// Score how well images (PNG or JPEG) match a text prompt with the bundle's CLIP:
    /// exp(logit_scale) · cosine, one line per image in the order given
    ClipScore {
        #[command(flatten)]
        bundle: BundleArg,
        /// The text prompt
        prompt: String,
        /// Images to score
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Serve text-to-image generation over HTTP: an OpenAI-compatible Images API with
    /// continuous batching, streamed previews (SSE), /health, /ready and /metrics
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.global.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    // ONNX Runtime's own info logs (session option dumps) only from -vv on.
    let level = match verbose {
        0 => "warn",
        1 => "info,ort=warn",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    let options = EpOptions {
        ep: g.ep,
        device_id: g.device_id,
        trt_fp16: g.trt_fp16,
        trt_engine_cache: g.trt_engine_cache.clone(),
        trt_timing_cache: g.trt_timing_cache.clone(),
        no_cpu_arena: g.no_cpu_arena,
    };
    match cli.command {
        Command::Info { bundle } => {
            let mut bundle = open(&bundle.model, options)?;
            print_manifest(bundle.dir(), bundle.manifest());
            load_ort(g)?;
            print_sessions(&mut bundle)
        }
        Command::Encode {
            bundle,
            image,
            output,
        } => {
            let mut bundle = open(&bundle.model, options)?;
            bundle.manifest().graph(GraphRole::DvaeEncoder)?;
            let picture = preprocess::load_image(&image)?;
            load_ort(g)?;
            let tokens = dvae::encode(&mut bundle, &picture)
                .with_context(|| format!("encoding {}", image.display()))?;
            npy::write_tokens(&output, &tokens)?;
            let s = tokens.shape();
            println!(
                "wrote {} (int64 [{}, {}, {}])",
                output.display(),
                s[0],
                s[1],
                s[2]
            );
            Ok(())
        }
        Command::Decode {
            bundle,
            tokens,
            output,
        } => {
            let mut bundle = open(&bundle.model, options)?;
            bundle.manifest().graph(GraphRole::DvaeDecoder)?;
            let ids = npy::read_tokens(&tokens)?;
            load_ort(g)?;
            let images = dvae::decode(&mut bundle, &ids)
                .with_context(|| format!("decoding {}", tokens.display()))?;
            for (image, path) in images.iter().zip(dvae::output_paths(&output, images.len())) {
                preprocess::save_png(image, &path)?;
                println!(
                    "wrote {} ({}x{})",
                    path.display(),
                    image.width(),
                    image.height()
                );
            }
            Ok(())
        }
        Command::Generate(args) => generate::run(g, options, args),
        Command::ClipScore {
            bundle,
            prompt,
            images,
        } => clip_score(g, options, &bundle.model, &prompt, &images),
        Command::Serve(args) => serve::run(g, options, args),
    }
}

fn clip_score(
    g: &Global,
    options: EpOptions,
    model: &Path,
    prompt: &str,
    images: &[PathBuf],
) -> Result<()> {
    let mut bundle = open(model, options)?;
    dalle::clip::info(&bundle)?;
    load_ort(g)?;
    for path in images {
        let picture = preprocess::load_image(path)?;
        let pixels = preprocess::to_chw_tensor(&picture);
        let s = dalle::clip::score(&mut bundle, prompt, pixels.view())
            .with_context(|| format!("scoring {}", path.display()))?;
        let score = s
            .first()
            .copied()
            .with_context(|| format!("no score for {}", path.display()))?;
        println!("{score:.4}\t{}", path.display());
    }
    Ok(())
}

fn open(model: &Path, options: EpOptions) -> Result<Bundle> {
    Bundle::open(model, options).with_context(|| format!("opening bundle {}", model.display()))
}

fn load_ort(g: &Global) -> Result<()> {
    ort_lib::load(g.ort_lib.as_deref(), g.ep.needs_gpu())?;
    Ok(())
}

fn print_manifest(dir: &Path, m: &Manifest) {
    println!("bundle:     {}", dir.display());
    println!("family:     {}", m.family);
    println!("format:     {}", m.format_version);
    println!("exporter:   {}", m.provenance.exporter);
    for source in &m.provenance.sources {
        println!(
            "source:     {} {} ({} bytes, sha256 {})",
            source.role, source.file_name, source.bytes, source.sha256
        );
    }
    for note in &m.provenance.notes {
        println!("note:       {note}");
    }
    if let Some(t) = &m.token_layout {
        println!(
            "tokens:     text {} (vocab {}), image {}x{} (vocab {}, offset {}), total vocab {}",
            t.text_length,
            t.text_vocab_size,
            t.image_grid,
            t.image_grid,
            t.image_vocab_size,
            t.image_token_offset,
            t.total_vocab_size
        );
    }
    if let Some(tok) = &m.tokenizer {
        println!("tokenizer:  {tok}");
    }
    if let Some(c) = &m.clip {
        println!(
            "clip:       {} (context {}, pad {}), image {} px, logit_scale {:.4}, projection {}",
            c.tokenizer, c.context_length, c.pad_id, c.image_size, c.logit_scale, c.projection_dim
        );
    }
    for (role, spec) in &m.graphs {
        println!("graph {role}: {}", spec.file);
        if let Some(data) = &spec.external_data {
            println!("  external data: {data}");
        }
        for t in &spec.inputs {
            println!("  in  {t}");
        }
        for t in &spec.outputs {
            println!("  out {t}");
        }
        for (name, r) in &spec.dim_ranges {
            println!("  dim {name}: min {} opt {} max {}", r.min, r.opt, r.max);
        }
        for (name, value) in &spec.attributes {
            println!("  attr {name} = {value}");
        }
    }
}

fn print_sessions(bundle: &mut Bundle) -> Result<()> {
    if let Some(lib) = ort_lib::loaded_library() {
        println!(
            "onnxruntime: {} (via {})",
            lib.path.display(),
            lib.origin.describe()
        );
    }
    let decision = bundle.provider()?.clone();
    println!(
        "provider:   {} ({})",
        decision.kind,
        decision.reasons.join("; ")
    );
    bundle.load_all()?;
    for session in bundle.sessions() {
        println!(
            "session {} on {}: matches the manifest",
            session.role(),
            session.provider()
        );
        for t in session.observed_inputs() {
            println!("  in  {t}");
        }
        for t in session.observed_outputs() {
            println!("  out {t}");
        }
    }
    Ok(())
}
