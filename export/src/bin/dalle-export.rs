//! `dalle-export`: checkpoints → ONNX bundle. Thin CLI over the `dalle_export` library: each
//! subcommand turns its flags into the family's options and calls its `add_to_bundle`.
//!
//! Flags are spelled as in `dalle-ort`: `-o/--out` for what is written, `--checkpoint` for the
//! source model, `--vae-encoder`/`--vae-decoder` for dVAE files, `-v` for logging (the same
//! logger, `src/bin/shared/logging.rs`). Exports show a spinner on a terminal.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use dalle_bundle::attributes::precision::{Precision, QuantFormat};
use dalle_bundle::{ModelFamily, Provenance};
use dalle_export::bundle_writer::{BundleWriter, ExternalDataPolicy, exporter_version};
use dalle_export::compat;
use dalle_export::families::dalle_pytorch::decoder::{DecoderOptions, KvCacheLayout, LogitsOutput};
use dalle_export::families::openai_dvae::{self, DecoderConfig, EncoderConfig, Half};
use dalle_export::families::{clip, dalle_pytorch, min_dalle};
use dalle_export::graph::precision::{Int8Options, PrecisionPolicy};
use dalle_export::graph::{check, proto_io, text};
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

#[path = "../../../src/bin/shared/logging.rs"]
mod logging;
#[path = "../../../src/bin/shared/progress.rs"]
mod progress;

#[derive(Parser)]
#[command(
    name = "dalle-export",
    version,
    about = "Export DALL·E-1-family checkpoints to ONNX bundles for dalle-ort"
)]
struct Cli {
    /// More logging: -v info, -vv debug, -vvv trace (with timestamps and module paths);
    /// RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct OutArgs {
    /// Bundle directory to write (created atomically).
    #[arg(short, long, value_name = "DIR")]
    out: PathBuf,
    /// Replace an existing bundle at --out.
    #[arg(long)]
    force: bool,
    /// Store initializers in `<graph>.onnx.data`: auto (for graphs over 64 MiB), always, never.
    #[arg(long, default_value = "auto")]
    external_data: ExternalDataPolicy,
    /// Weights and compute of every graph: fp32, fp16 / bf16 (LayerNorm, Softmax and the
    /// float inputs/outputs stay float32; KV state in the low type), or int8 (weight-only
    /// quantized Linear weights; compute float32). The manifest records which providers each
    /// graph suits
    #[arg(long, default_value = "fp32", value_name = "PRECISION")]
    precision: Precision,
    /// How int8 stores matrices: matmul-nbits (com.microsoft.MatMulNBits, blockwise scales;
    /// CPU and CUDA) or qdq (DequantizeLinear + MatMul, per-channel scales; TensorRT)
    #[arg(long, default_value = "matmul-nbits", value_name = "FORMAT")]
    int8_format: QuantFormat,
    /// Inputs per scale for int8 matmul-nbits (a power of two, at least 16)
    #[arg(long, default_value_t = 32, value_name = "N")]
    int8_block_size: usize,
}

#[derive(Subcommand)]
enum Command {
    /// OpenAI's released dVAE (`encoder.pkl`/`decoder.pkl`, or the same weights as safetensors).
    OpenaiDvae {
        /// Encoder checkpoint (`encoder.pkl` or `.safetensors`).
        #[arg(long = "vae-encoder", alias = "encoder", value_name = "FILE")]
        encoder: Option<PathBuf>,
        /// Decoder checkpoint (`decoder.pkl` or `.safetensors`).
        #[arg(long = "vae-decoder", alias = "decoder", value_name = "FILE")]
        decoder: Option<PathBuf>,
        #[command(flatten)]
        out: OutArgs,
    },
    /// A DALLE-pytorch checkpoint saved by train_dalle.py: transformer decoder, VAE, tokenizer.
    DallePytorch {
        /// The checkpoint (`dalle.pt`).
        #[arg(long, value_name = "FILE")]
        checkpoint: PathBuf,
        /// The Hugging Face `tokenizer.json` the model was trained with (default: DALLE-pytorch's
        /// SimpleTokenizer, CLIP BPE with 49408 ids).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// OpenAI dVAE encoder (`encoder.pkl`) for checkpoints trained with OpenAIDiscreteVAE.
        #[arg(long, value_name = "FILE")]
        vae_encoder: Option<PathBuf>,
        /// OpenAI dVAE decoder (`decoder.pkl`) for checkpoints trained with OpenAIDiscreteVAE.
        #[arg(long, value_name = "FILE")]
        vae_decoder: Option<PathBuf>,
        /// taming-transformers VQGAN checkpoint (Lightning `.ckpt`) for checkpoints trained with
        /// VQGanVAE (optional when the checkpoint holds it under `vae.model.`).
        #[arg(long, value_name = "CKPT")]
        vqgan_model: Option<PathBuf>,
        /// Its training config (`.yaml`); required for checkpoints trained with VQGanVAE.
        #[arg(long, value_name = "YAML")]
        vqgan_config: Option<PathBuf>,
        /// A Hugging Face CLIP model directory to add for reranking (`clip_text`, `clip_image`).
        #[arg(long, value_name = "DIR")]
        clip: Option<PathBuf>,
        /// Decoder logits: `last-image` (the last position's image logits only; what generation
        /// needs, fastest) or `full` (every position, whole vocabulary, masked like the reference)
        #[arg(long, value_enum, default_value_t = LogitsArg::LastImage)]
        logits: LogitsArg,
        /// Decoder key/value caches: `concat` (standard ONNX, every execution provider and
        /// TensorRT; the cache is copied into a new one each step) or `in-place` (fixed
        /// capacity, written in place by ONNX Runtime's `GroupQueryAttention`: fastest on the
        /// CPU provider, whose kernel is the float32 one; not for CUDA/TensorRT float32)
        #[arg(long, value_enum, default_value_t = KvCacheArg::Concat)]
        kv_cache: KvCacheArg,
        #[command(flatten)]
        out: OutArgs,
    },
    /// DALL·E mini/mega in min-dalle's files: text encoder, cross-attention K/V, decoder step,
    /// tokenizer. Sizes (mini, mega or any other) are read from the weights.
    MinDalle {
        /// Directory with `encoder.pt`, `decoder.pt`, `vocab.json`, `merges.txt` (`_mini`
        /// suffixes accepted); the flags below name files one by one instead.
        #[arg(long, value_name = "DIR", required_unless_present_all = ["encoder", "decoder", "vocab", "merges"])]
        model: Option<PathBuf>,
        /// `encoder.pt` (a `torch.save`d state dict).
        #[arg(long, value_name = "FILE")]
        encoder: Option<PathBuf>,
        /// `decoder.pt`.
        #[arg(long, value_name = "FILE")]
        decoder: Option<PathBuf>,
        /// `vocab.json`.
        #[arg(long, value_name = "FILE")]
        vocab: Option<PathBuf>,
        /// `merges.txt`.
        #[arg(long, value_name = "FILE")]
        merges: Option<PathBuf>,
        /// `detoker.pt`, the VQGAN image decoder (default: `DIR/detoker.pt` when present; without
        /// it the bundle makes image tokens only)
        #[arg(long, value_name = "FILE")]
        detoker: Option<PathBuf>,
        /// Attention heads (not in the files; default: width / 64, as mini and mega)
        #[arg(long, value_name = "N")]
        heads: Option<usize>,
        /// Decoder id fed at position 0 (default: the last code, min-dalle's 16383; dalle-mini's
        /// training used 16384)
        #[arg(long, value_name = "ID")]
        start_token: Option<usize>,
        /// Decoder self-attention caches, as for dalle-pytorch: `concat` (standard ONNX, every
        /// execution provider and TensorRT) or `in-place` (GroupQueryAttention: fastest on the
        /// CPU provider; not for CUDA/TensorRT float32)
        #[arg(long, value_enum, default_value_t = KvCacheArg::Concat)]
        kv_cache: KvCacheArg,
        #[command(flatten)]
        out: OutArgs,
    },
    /// A Hugging Face CLIP model directory (config.json, model.safetensors or
    /// pytorch_model.bin, tokenizer.json or vocab.json + merges.txt): text and image encoders.
    Clip {
        /// The model directory.
        #[arg(long = "checkpoint", alias = "model", value_name = "DIR")]
        model: PathBuf,
        #[command(flatten)]
        out: OutArgs,
    },
    /// A seeded random tiny dVAE (no trained weights) for trying the export → ONNX Runtime path
    /// without a checkpoint; the shipped trained model is `models/shapes/` (`dalle-pytorch`).
    Demo {
        /// Seed of the random weights, N in [0, 2^64), or -1 for a random one (recorded in the
        /// manifest's notes)
        #[arg(
            long,
            default_value = "7",
            value_name = "N",
            allow_negative_numbers = true,
            value_parser = parse_seed
        )]
        seed: u64,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Print a text dump of an `.onnx` file and check its structure.
    Inspect {
        /// The model file.
        file: PathBuf,
    },
    /// Check that every node of a bundle's graphs runs on an execution provider: unsupported
    /// ops, element types and restrictions, CPU fallbacks, TensorRT shape tensors. Exits 1 when
    /// the bundle would not run fully on the target.
    Check {
        /// The execution provider to check for.
        #[arg(long, value_enum)]
        target: TargetArg,
        /// A bundle directory, or one `.onnx` file.
        bundle: PathBuf,
    },
}

/// `check --target`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TargetArg {
    Tensorrt,
    Cuda,
    Cpu,
}

impl From<TargetArg> for compat::Target {
    fn from(t: TargetArg) -> compat::Target {
        match t {
            TargetArg::Tensorrt => compat::Target::TensorRt,
            TargetArg::Cuda => compat::Target::Cuda,
            TargetArg::Cpu => compat::Target::Cpu,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(bar) = SPINNER.get() {
                bar.finish_and_clear();
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::OpenaiDvae {
            encoder,
            decoder,
            out,
        } => {
            if encoder.is_none() && decoder.is_none() {
                bail!("give --vae-encoder, --vae-decoder, or both");
            }
            let mut writer = writer(&out, ModelFamily::OpenaiDvae, vec![])?;
            openai_dvae::add_to_bundle(
                &mut writer,
                openai_dvae::BundleOptions {
                    encoder: encoder.as_deref().map(Half::File),
                    decoder: decoder.as_deref().map(Half::File),
                    progress: print,
                },
            )?;
            commit(writer)
        }
        Command::DallePytorch {
            checkpoint,
            tokenizer,
            vae_encoder,
            vae_decoder,
            vqgan_model,
            vqgan_config,
            clip,
            logits,
            kv_cache,
            out,
        } => {
            let mut writer = writer(&out, ModelFamily::DallePytorch, vec![])?;
            dalle_pytorch::add_to_bundle(
                &mut writer,
                dalle_pytorch::BundleOptions {
                    checkpoint: &checkpoint,
                    tokenizer: tokenizer.as_deref(),
                    vae_files: dalle_pytorch::OpenAiVaeFiles {
                        encoder: vae_encoder.as_deref(),
                        decoder: vae_decoder.as_deref(),
                    },
                    vqgan: dalle_pytorch::VqganFiles {
                        model: vqgan_model.as_deref(),
                        config: vqgan_config.as_deref(),
                    },
                    clip: clip.as_deref(),
                    decoder: DecoderOptions {
                        logits: logits.into(),
                        kv_cache: kv_cache.into(),
                    },
                    progress: print,
                },
            )?;
            commit(writer)
        }
        Command::MinDalle {
            model,
            encoder,
            decoder,
            vocab,
            merges,
            detoker,
            heads,
            start_token,
            kv_cache,
            out,
        } => {
            let mut files = match &model {
                Some(dir) => Some(min_dalle::ModelFiles::from_dir(dir)?),
                None => None,
            };
            let pick = |flag: Option<PathBuf>, from_dir: Option<PathBuf>, name: &str| {
                flag.or(from_dir)
                    .with_context(|| format!("give --model DIR or --{name} FILE"))
            };
            let files = min_dalle::ModelFiles {
                encoder: pick(
                    encoder,
                    files.as_ref().map(|f| f.encoder.clone()),
                    "encoder",
                )?,
                decoder: pick(
                    decoder,
                    files.as_ref().map(|f| f.decoder.clone()),
                    "decoder",
                )?,
                vocab: pick(vocab, files.as_ref().map(|f| f.vocab.clone()), "vocab")?,
                merges: pick(merges, files.as_ref().map(|f| f.merges.clone()), "merges")?,
                detoker: detoker.or(files.as_mut().and_then(|f| f.detoker.take())),
            };
            let mut writer = writer(&out, ModelFamily::MinDalle, vec![])?;
            min_dalle::add_to_bundle(
                &mut writer,
                min_dalle::BundleOptions {
                    files,
                    heads,
                    start_token,
                    kv_cache: kv_cache.into(),
                    progress: print,
                },
            )?;
            commit(writer)
        }
        Command::Clip { model, out } => export_clip(&model, &out),
        Command::Demo { seed, out } => export_demo(seed, &out),
        Command::Inspect { file } => inspect(&file),
        Command::Check { target, bundle } => check_target(&bundle, target.into()),
    }
}

/// The spinner of the export in progress (hidden when stderr is not a terminal).
static SPINNER: OnceLock<ProgressBar> = OnceLock::new();

/// The CLI's [`dalle_export::families::Progress`]: one line to stderr (above the spinner).
fn print(line: &str) {
    match SPINNER.get() {
        Some(bar) if !bar.is_hidden() => bar.println(line),
        _ => eprintln!("{line}"),
    }
}

/// A writer for `out`; the family's `add_to_bundle` adds the source files it reads.
fn writer(out: &OutArgs, family: ModelFamily, notes: Vec<String>) -> Result<BundleWriter> {
    let bar = SPINNER.get_or_init(progress::spinner);
    bar.set_message(format!("exporting {family} to {}", out.out.display()));
    let provenance = Provenance {
        exporter: exporter_version(),
        sources: vec![],
        notes,
    };
    let mut w = BundleWriter::create(&out.out, family, provenance, out.force, out.external_data)?;
    w.set_precision(PrecisionPolicy {
        precision: out.precision,
        int8: Int8Options {
            format: out.int8_format,
            block_size: out.int8_block_size,
            ..Int8Options::default()
        },
    });
    Ok(w)
}

fn commit(writer: BundleWriter) -> Result<()> {
    if let Some(bar) = SPINNER.get() {
        bar.set_message("writing the bundle");
    }
    let dir = writer.commit();
    if let Some(bar) = SPINNER.get() {
        bar.finish_and_clear();
    }
    let dir = dir?;
    eprintln!("wrote bundle {}", dir.display());
    Ok(())
}

/// `--logits`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogitsArg {
    LastImage,
    Full,
}

/// `--kv-cache`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum KvCacheArg {
    Concat,
    InPlace,
}

impl From<KvCacheArg> for KvCacheLayout {
    fn from(a: KvCacheArg) -> KvCacheLayout {
        match a {
            KvCacheArg::Concat => KvCacheLayout::Concat,
            KvCacheArg::InPlace => KvCacheLayout::InPlace,
        }
    }
}

impl From<LogitsArg> for LogitsOutput {
    fn from(a: LogitsArg) -> LogitsOutput {
        match a {
            LogitsArg::LastImage => LogitsOutput::LastImage,
            LogitsArg::Full => LogitsOutput::Full,
        }
    }
}

fn export_clip(model_dir: &Path, out: &OutArgs) -> Result<()> {
    let m = clip::load(model_dir)?;
    let c = &m.cfg;
    print(&format!(
        "clip: text {}x{} ({} layers, {:?}, pooling {:?}), vision {}x{} patch {} ({} layers, {:?}), projection {}",
        c.text.tower.hidden,
        c.text.context_length,
        c.text.tower.layers,
        c.text.tower.activation,
        c.text.pooling,
        c.vision.tower.hidden,
        c.vision.image_size,
        c.vision.patch_size,
        c.vision.tower.layers,
        c.vision.tower.activation,
        c.projection_dim
    ));
    let sources = clip::sources(&m)?;
    let mut writer = writer(out, ModelFamily::Clip, vec![])?;
    writer.manifest_mut().provenance.sources = sources;
    clip::add_to_bundle(&mut writer, model_dir, m)?;
    commit(writer)
}

/// The demo model's size: small enough to export and run in seconds on a CPU.
const DEMO_ENCODER: EncoderConfig = EncoderConfig {
    n_hid: 32,
    n_blk_per_group: 1,
    input_channels: 3,
    vocab_size: 512,
};
const DEMO_DECODER: DecoderConfig = DecoderConfig {
    n_init: 32,
    n_hid: 32,
    n_blk_per_group: 1,
    output_channels: 3,
    vocab_size: 512,
};

/// `--seed`: a number, or `-1` for one from the clock (as in `dalle-ort` and `shapes-eval`).
fn parse_seed(s: &str) -> Result<u64, String> {
    if s.trim() == "-1" {
        return Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64));
    }
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a seed: give a number in [0, 2^64), or -1 for random"))
}

fn export_demo(seed: u64, out: &OutArgs) -> Result<()> {
    eprintln!(
        "NOTE: `demo` exports a seeded RANDOM dVAE (seed {seed}), not a trained one: its images are noise.\n      It exercises the export → ONNX Runtime path without a checkpoint; the shipped trained\n      model is models/shapes/ (scripts/demo.sh exports it with `dalle-export dalle-pytorch`)."
    );
    let notes = vec![format!(
        "seeded random weights (seed {seed}): not a trained model"
    )];
    let mut writer = writer(out, ModelFamily::RandomDemo, notes)?;
    openai_dvae::add_to_bundle(
        &mut writer,
        openai_dvae::BundleOptions {
            encoder: Some(Half::Random {
                config: DEMO_ENCODER,
                seed,
            }),
            decoder: Some(Half::Random {
                config: DEMO_DECODER,
                seed: seed.wrapping_add(1),
            }),
            progress: print,
        },
    )?;
    commit(writer)
}

/// `check`: the report on stdout; a bundle that would not run fully is an error (exit 1).
fn check_target(bundle: &Path, target: compat::Target) -> Result<()> {
    let report = compat::check_path(bundle, target)
        .with_context(|| format!("checking {} for {}", bundle.display(), target.name()))?;
    println!("{report}");
    if report.passes() {
        Ok(())
    } else {
        bail!(
            "{}: {} node problem(s) on {}",
            bundle.display(),
            report.errors(),
            target.name()
        )
    }
}

fn inspect(file: &Path) -> Result<()> {
    use std::io::Write;
    let model = proto_io::read_model(file)?;
    let verdict = check::validate(&model);
    let mut out = std::io::stdout().lock();
    let printed = write!(out, "{}", text::dump(&model)).and_then(|()| match &verdict {
        Ok(()) => writeln!(out, "check: ok"),
        Err(_) => Ok(()),
    });
    match printed {
        // A closed pipe (`| head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("writing to stdout")?,
    }
    verdict.map_err(|m| anyhow::anyhow!("check failed: {m}"))
}
