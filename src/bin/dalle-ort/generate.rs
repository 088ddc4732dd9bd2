//! `dalle-ort generate`: prompt → token ids → image tokens → PNGs, grid and sidecar.
//!
//! Unset sampling options take the manifest's `sampling` defaults, then the library's (no top-k,
//! temperature 1, no guidance). The prompt is tokenized with the bundle's tokenizer; `--text-ids`
//! bypasses it (bundles without a tokenizer, tests).

use super::{Global, load_ort, open};
use anyhow::{Context, Result, bail};
use clap::Args;
use dalle::ep::EpOptions;
use dalle::generate::{self, GenerateRequest, PromptInfo};
use dalle::sampling::SamplingParams;
use dalle::{TextTokenizer, preprocess};
use dalle_bundle::GraphRole;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    bundle: super::BundleArg,
    /// The text prompt
    prompt: String,
    /// Output folder (candidate_NN.png, grid.png, generation.json)
    #[arg(short, long, value_name = "DIR", default_value = "out")]
    output: PathBuf,
    /// Number of candidates (images)
    #[arg(
        short = 'n',
        long = "candidates",
        default_value_t = 1,
        value_name = "N"
    )]
    candidates: usize,
    /// Keep the K most likely image tokens (default: the manifest's, else all)
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// DALLE-pytorch top-k: k = max(int((1 - T) * full vocab), 1); 0.5 keeps more than every
    /// image token, i.e. no top-k (instead of --top-k)
    #[arg(long, value_name = "T")]
    filter_thres: Option<f64>,
    /// Nucleus sampling threshold in (0, 1]
    #[arg(long, value_name = "P")]
    top_p: Option<f64>,
    /// Softmax temperature (> 0; default: the manifest's, else 1)
    #[arg(long, value_name = "T")]
    temperature: Option<f64>,
    /// Classifier-free guidance scale (1 = off; default: the manifest's, else 1)
    #[arg(long, value_name = "S")]
    cond_scale: Option<f64>,
    /// Random seed (default: from the clock; recorded in the sidecar)
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Candidates run at once (default: all, within the decoder's batch range); results do not
    /// depend on it
    #[arg(long, value_name = "B")]
    batch: Option<usize>,
    /// Prime with this image's first token rows (PNG or JPEG; needs a dvae_encoder)
    #[arg(long, value_name = "IMG")]
    init_image: Option<PathBuf>,
    /// Token rows kept from --init-image (default: 7/16 of the grid, 14 of 32)
    #[arg(long, value_name = "R", requires = "init_image")]
    init_rows: Option<u64>,
    /// Score every candidate with the bundle's CLIP (from the decoded pixels) and write only the
    /// best K, in score order (`rank_00_candidate_NN.png`, ...); all scores go in the sidecar
    #[arg(long, value_name = "K")]
    rerank: Option<usize>,
    /// Use these tokenizer ids (comma-separated, 0 = padding) instead of tokenizing the prompt
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    text_ids: Option<Vec<u32>>,
}

pub fn run(g: &Global, options: EpOptions, args: GenerateArgs) -> Result<()> {
    let mut bundle = open(&args.bundle.model, options)?;
    let manifest = bundle.manifest().clone();
    manifest
        .graph(GraphRole::Decoder)
        .context("`generate` needs a transformer decoder")?;
    let layout = generate::token_layout(&bundle)?;
    let defaults = manifest.sampling.clone();
    let params = SamplingParams {
        top_k: match (args.top_k, args.filter_thres) {
            (None, None) => defaults
                .as_ref()
                .and_then(|d| d.top_k)
                .map(|k| usize::try_from(k).unwrap_or(usize::MAX)),
            (k, _) => k,
        },
        filter_thres: args.filter_thres,
        top_p: args.top_p.or(defaults.as_ref().and_then(|d| d.top_p)),
        temperature: args
            .temperature
            .or(defaults.as_ref().map(|d| d.temperature))
            .unwrap_or(1.0),
        seed: args.seed.unwrap_or_else(clock_seed),
        cond_scale: args
            .cond_scale
            .or(defaults.as_ref().map(|d| d.cond_scale))
            .unwrap_or(1.0),
    };
    params.validate()?;
    if args.candidates == 0 {
        bail!("invalid candidates: -n must be at least 1");
    }
    if let Some(k) = args.rerank {
        if k == 0 || k > args.candidates {
            bail!(
                "invalid rerank: --rerank must be in 1..={} (the number of candidates), got {k}",
                args.candidates
            );
        }
        dalle::clip::info(&bundle).context("`--rerank` needs CLIP graphs in the bundle")?;
    }

    let text_length = usize::try_from(layout.text_length)?;
    let prompt = match (&args.text_ids, &manifest.tokenizer) {
        (Some(ids), _) => PromptInfo {
            prompt: args.prompt.clone(),
            text_token_ids: ids.clone(),
            token_count: ids.iter().filter(|&&t| t != 0).count(),
            truncated: false,
            init_image: args.init_image.clone(),
        },
        (None, Some(file)) => {
            let tokenizer = TextTokenizer::open(&bundle.dir().join(file))?;
            let encoded = tokenizer.encode(&args.prompt, text_length)?;
            PromptInfo {
                prompt: args.prompt.clone(),
                text_token_ids: encoded.ids,
                token_count: encoded.token_count,
                truncated: encoded.truncated,
                init_image: args.init_image.clone(),
            }
        }
        (None, None) => {
            bail!("the bundle has no tokenizer; pass the prompt's token ids with --text-ids 1,2,3")
        }
    };
    let init_image = match &args.init_image {
        Some(path) => Some(preprocess::load_image(path)?),
        None => None,
    };
    let init_rows = init_image.as_ref().map(|_| {
        args.init_rows
            .unwrap_or_else(|| generate::default_init_rows(layout.image_grid))
    });

    load_ort(g)?;
    let primed = init_rows.unwrap_or(0) * layout.image_grid;
    let total = (args.candidates as u64) * layout.image_length().saturating_sub(primed);
    let bar = progress_bar(total);
    let request = GenerateRequest {
        text_ids: prompt.text_token_ids.clone(),
        candidates: args.candidates,
        batch: args.batch,
        params: params.clone(),
        init_image,
        init_rows,
    };
    let generation = generate::generate(&mut bundle, &request, &mut |n| bar.inc(n as u64))
        .with_context(|| format!("generating {:?}", args.prompt))?;
    bar.finish_and_clear();
    let rerank = match args.rerank {
        Some(keep) => {
            let scores = dalle::clip::score(&mut bundle, &args.prompt, generation.pixels.view())
                .context("scoring the candidates with CLIP")?;
            Some(generate::Rerank { scores, keep })
        }
        None => None,
    };
    let files = generate::write_reranked(
        &args.output,
        &generation,
        &prompt,
        &params,
        init_rows,
        rerank.as_ref(),
    )?;
    if let Some(r) = &rerank {
        for (rank, i) in dalle::clip::ranking(&r.scores).into_iter().enumerate() {
            println!("clip rank {rank}: candidate {i} score {:.4}", r.scores[i]);
        }
    }
    for f in &files {
        println!("wrote {}", f.display());
    }
    let t = &generation.timings;
    let s = &t.sampling;
    println!(
        "seed {}: {} candidates in {:.2} s (prefill {:.1} ms, {} steps at {:.2} ms, \
         {:.3} ms of it outside ONNX Runtime, decode {:.1} ms)",
        params.seed,
        generation.tokens.len(),
        t.total.as_secs_f64(),
        s.prefill.as_secs_f64() * 1e3,
        s.steps,
        s.step_mean().as_secs_f64() * 1e3,
        s.overhead_mean().as_secs_f64() * 1e3,
        t.decode.as_secs_f64() * 1e3,
    );
    Ok(())
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Token progress with tokens/s, hidden when stderr is not a terminal.
fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} tokens {per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
