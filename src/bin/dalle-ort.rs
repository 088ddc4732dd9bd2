//! `dalle-ort`: the command-line front end of the runtime.
//!
//! Global options pick the ONNX Runtime library, the execution provider and the log level (the
//! same flags as `shapes-eval`, `shared/runtime.rs`); subcommands work on one bundle (`--model
//! DIR`) or, for `info`, on a generated PNG. Errors print with their whole chain and exit
//! non-zero.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use dalle::Bundle;
use dalle::ep::EpOptions;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[path = "dalle-ort/codec.rs"]
mod codec;
#[path = "dalle-ort/generate.rs"]
mod generate;
#[path = "dalle-ort/info.rs"]
mod info;
#[path = "shared/logging.rs"]
mod logging;
#[path = "shared/progress.rs"]
mod progress;
#[path = "shared/runtime.rs"]
mod runtime;

use generate::GenerateArgs;
/// The global flags (`shared/runtime.rs`).
type Global = runtime::RuntimeArgs;

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

/// The bundle a subcommand works on.
#[derive(Args)]
struct BundleArg {
    /// Bundle directory (holds manifest.json)
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Show a bundle (manifest, vocabulary, sampling defaults, image size, each graph's real
    /// inputs/outputs; fails on any mismatch), or the parameters a generated PNG carries
    Info(info::InfoArgs),
    /// Encode an image (PNG or JPEG) into dVAE image tokens (.npy, int64 [1, h, w])
    Encode(codec::EncodeArgs),
    /// Decode dVAE image tokens (.npy, int64/int32 [h, w] or [batch, h, w]) into PNG images
    Decode(codec::DecodeArgs),
    /// Generate images from a text prompt (transformer decoder + dVAE): one PNG per candidate,
    /// a grid and a JSON sidecar in the output folder
    Generate(Box<GenerateArgs>),
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
    logging::init(cli.global.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    let options = g.ep_options();
    match cli.command {
        Command::Info(args) => info::run(g, options, args),
        Command::Encode(args) => codec::encode(g, options, args),
        Command::Decode(args) => codec::decode(g, options, args),
        Command::Generate(args) => generate::run(g, options, *args),
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
        let picture = dalle::preprocess::load_image(path)?;
        let pixels = dalle::preprocess::to_chw_tensor(&picture);
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
    g.load_ort()
}

/// Loads ONNX Runtime and records where a run's outputs come from (bundle, versions, the
/// provider the bundle resolves to, `started`).
fn load_with_provenance(
    g: &Global,
    bundle: &mut Bundle,
    started: std::time::SystemTime,
) -> Result<dalle::generate::Provenance> {
    load_ort(g)?;
    let provider = bundle.provider()?.kind.to_string();
    Ok(dalle::generate::Provenance::collect(
        bundle.dir(),
        &bundle.manifest().provenance.exporter,
        concat!("dalle-ort ", env!("CARGO_PKG_VERSION")),
        &provider,
        started,
    )?)
}
