//! `dalle-export`: checkpoints → ONNX bundle. Thin CLI over the `dalle_export` library.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use dalle_bundle::{ModelFamily, Provenance};
use dalle_export::bundle_writer::{
    BundleWriter, ExternalDataPolicy, exporter_version, source_file,
};
use dalle_export::families::dalle_pytorch::decoder::{DecoderOptions, KvCacheLayout, LogitsOutput};
use dalle_export::families::openai_dvae::{self, DecoderConfig, EncoderConfig};
use dalle_export::families::{clip, dalle_pytorch};
use dalle_export::graph::{check, proto_io, text};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "dalle-export",
    version,
    about = "Export DALL·E-1-family checkpoints to ONNX bundles for dalle-ort"
)]
struct Cli {
    /// Log more (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct OutArgs {
    /// Bundle directory to write (created atomically).
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing bundle at --out.
    #[arg(long)]
    force: bool,
    /// Store initializers in `<graph>.onnx.data`: auto (for graphs over 64 MiB), always, never.
    #[arg(long, default_value = "auto")]
    external_data: ExternalDataPolicy,
}

#[derive(Subcommand)]
enum Command {
    /// OpenAI's released dVAE (`encoder.pkl`/`decoder.pkl`, or the same weights as safetensors).
    OpenaiDvae {
        /// Encoder checkpoint (`encoder.pkl` or `.safetensors`).
        #[arg(long)]
        encoder: Option<PathBuf>,
        /// Decoder checkpoint (`decoder.pkl` or `.safetensors`).
        #[arg(long)]
        decoder: Option<PathBuf>,
        #[command(flatten)]
        out: OutArgs,
    },
    /// A DALLE-pytorch checkpoint saved by train_dalle.py: transformer decoder, VAE, tokenizer.
    DallePytorch {
        /// The checkpoint (`dalle.pt`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// The Hugging Face `tokenizer.json` the model was trained with (default: DALLE-pytorch's
        /// SimpleTokenizer, CLIP BPE with 49408 ids).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// OpenAI dVAE encoder (`encoder.pkl`) for checkpoints trained with OpenAIDiscreteVAE.
        #[arg(long)]
        vae_encoder: Option<PathBuf>,
        /// OpenAI dVAE decoder (`decoder.pkl`) for checkpoints trained with OpenAIDiscreteVAE.
        #[arg(long)]
        vae_decoder: Option<PathBuf>,
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
    /// A Hugging Face CLIP model directory (config.json, model.safetensors or
    /// pytorch_model.bin, tokenizer.json or vocab.json + merges.txt): text and image encoders.
    Clip {
        /// The model directory.
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        #[command(flatten)]
        out: OutArgs,
    },
    /// A seeded random tiny model (no trained weights): the default model until a trained demo exists.
    Demo {
        /// Seed of the random weights.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Print a text dump of an `.onnx` file and check its structure.
    Inspect {
        /// The model file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
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
        } => export_dvae(encoder.as_deref(), decoder.as_deref(), &out),
        Command::DallePytorch {
            checkpoint,
            tokenizer,
            vae_encoder,
            vae_decoder,
            clip,
            logits,
            kv_cache,
            out,
        } => export_dalle_pytorch(
            &checkpoint,
            tokenizer.as_deref(),
            dalle_pytorch::OpenAiVaeFiles {
                encoder: vae_encoder.as_deref(),
                decoder: vae_decoder.as_deref(),
            },
            clip.as_deref(),
            DecoderOptions {
                logits: logits.into(),
                kv_cache: kv_cache.into(),
            },
            &out,
        ),
        Command::Clip { model, out } => export_clip(&model, &out),
        Command::Demo { seed, out } => export_demo(seed, &out),
        Command::Inspect { file } => inspect(&file),
    }
}

fn export_dvae(encoder: Option<&Path>, decoder: Option<&Path>, out: &OutArgs) -> Result<()> {
    if encoder.is_none() && decoder.is_none() {
        bail!("give --encoder, --decoder, or both");
    }
    let mut sources = Vec::new();
    if let Some(p) = encoder {
        sources.push(source_file("encoder", p)?);
    }
    if let Some(p) = decoder {
        sources.push(source_file("decoder", p)?);
    }
    let provenance = Provenance {
        exporter: exporter_version(),
        sources,
        notes: vec![],
    };
    let mut writer = BundleWriter::create(
        &out.out,
        ModelFamily::OpenaiDvae,
        provenance,
        out.force,
        out.external_data,
    )?;
    if let Some(p) = encoder {
        let (cfg, w) = openai_dvae::load_encoder(p)
            .with_context(|| format!("reading encoder {}", p.display()))?;
        eprintln!("encoder: {cfg:?}");
        writer.add_graph(openai_dvae::encoder_entry(&cfg, w)?)?;
    }
    if let Some(p) = decoder {
        let (cfg, w) = openai_dvae::load_decoder(p)
            .with_context(|| format!("reading decoder {}", p.display()))?;
        eprintln!("decoder: {cfg:?}");
        writer.add_graph(openai_dvae::decoder_entry(&cfg, w)?)?;
    }
    let dir = writer.commit()?;
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

fn export_dalle_pytorch(
    checkpoint: &Path,
    tokenizer: Option<&Path>,
    vae_files: dalle_pytorch::OpenAiVaeFiles<'_>,
    clip_dir: Option<&Path>,
    decoder: DecoderOptions,
    out: &OutArgs,
) -> Result<()> {
    let mut sources = vec![source_file("checkpoint", checkpoint)?];
    let clip_model = match clip_dir {
        Some(dir) => {
            let m = clip::load(dir).context("reading the --clip model")?;
            sources.extend(clip::sources(&m)?);
            Some((dir, m))
        }
        None => None,
    };
    for (role, p) in [
        ("tokenizer", tokenizer),
        ("vae_encoder", vae_files.encoder),
        ("vae_decoder", vae_files.decoder),
    ] {
        if let Some(p) = p {
            sources.push(source_file(role, p)?);
        }
    }
    let ckpt = dalle_pytorch::load(checkpoint)
        .with_context(|| format!("reading {}", checkpoint.display()))?;
    let cfg = ckpt.cfg.clone();
    eprintln!(
        "dalle-pytorch {}: dim {}, depth {}, heads {}×{}, attention {:?}, rotary {}, shift tokens {}, {:?} VAE, {}×{} image tokens of {} codes",
        cfg.version.as_deref().unwrap_or("(version unknown)"),
        cfg.dim,
        cfg.depth,
        cfg.heads,
        cfg.dim_head,
        cfg.attn_types,
        cfg.rotary_emb,
        cfg.shift_tokens,
        cfg.vae,
        cfg.fmap,
        cfg.fmap,
        cfg.num_image_tokens
    );
    let tokenizer_json = dalle_pytorch::tokenizer_for(&cfg, tokenizer)?;
    let provenance = Provenance {
        exporter: exporter_version(),
        sources,
        notes: vec![],
    };
    let mut writer = BundleWriter::create(
        &out.out,
        ModelFamily::DallePytorch,
        provenance,
        out.force,
        out.external_data,
    )?;
    {
        let m = writer.manifest_mut();
        m.token_layout = Some(cfg.token_layout());
        m.sampling = Some(dalle_pytorch::sampling_defaults(&cfg));
        m.tokenizer = Some(dalle_export::tokenizer::TOKENIZER_FILE.to_string());
    }
    writer.add_file(dalle_export::tokenizer::TOKENIZER_FILE, &tokenizer_json)?;
    writer.add_graph(dalle_pytorch::decoder_entry(
        &cfg,
        ckpt.transformer,
        decoder,
    )?)?;
    for entry in dalle_pytorch::vae_entries(&cfg, &ckpt.root, ckpt.vae, vae_files)? {
        writer.add_graph(entry)?;
    }
    if let Some((dir, m)) = clip_model {
        clip::add_to_bundle(&mut writer, dir, m)
            .with_context(|| format!("exporting CLIP {}", dir.display()))?;
    }
    let dir = writer.commit()?;
    eprintln!("wrote bundle {}", dir.display());
    Ok(())
}

fn export_clip(model_dir: &Path, out: &OutArgs) -> Result<()> {
    let m = clip::load(model_dir)?;
    let c = &m.cfg;
    eprintln!(
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
    );
    let provenance = Provenance {
        exporter: exporter_version(),
        sources: clip::sources(&m)?,
        notes: vec![],
    };
    let mut writer = BundleWriter::create(
        &out.out,
        ModelFamily::Clip,
        provenance,
        out.force,
        out.external_data,
    )?;
    clip::add_to_bundle(&mut writer, model_dir, m)?;
    let dir = writer.commit()?;
    eprintln!("wrote bundle {}", dir.display());
    Ok(())
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

fn export_demo(seed: u64, out: &OutArgs) -> Result<()> {
    eprintln!(
        "NOTE: `demo` exports a seeded RANDOM model (seed {seed}), not a trained one: its images are noise.\n      It exercises the whole export → ONNX Runtime path until a trained demo model ships."
    );
    let provenance = Provenance {
        exporter: exporter_version(),
        sources: vec![],
        notes: vec![format!(
            "seeded random weights (seed {seed}): not a trained model"
        )],
    };
    let mut writer = BundleWriter::create(
        &out.out,
        ModelFamily::RandomDemo,
        provenance,
        out.force,
        out.external_data,
    )?;
    let enc = openai_dvae::random_encoder(&DEMO_ENCODER, seed)?;
    writer.add_graph(openai_dvae::encoder_entry(&DEMO_ENCODER, enc)?)?;
    let dec = openai_dvae::random_decoder(&DEMO_DECODER, seed.wrapping_add(1))?;
    writer.add_graph(openai_dvae::decoder_entry(&DEMO_DECODER, dec)?)?;
    let dir = writer.commit()?;
    eprintln!("wrote bundle {}", dir.display());
    Ok(())
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
