//! `dalle-ort generate`: prompt → token ids → image tokens → PNGs, grid and sidecar.
//!
//! The flags fill an engine [`Request`], validated once by the bundle's [`RequestRules`] (unset
//! sampling options take the manifest's `sampling` defaults, then the library's: no top-k,
//! temperature 1, no guidance), then run on the engine as one request. The prompt is tokenized
//! with the bundle's tokenizer; `--text-ids` bypasses it (bundles without a tokenizer, tests).

use super::{Global, load_ort, open};
use anyhow::{Context, Result, bail};
use clap::Args;
use dalle::engine::{
    self, Engine, ImageTokenModel, InitInput, OrtDallePytorch, PromptInput, Request, RequestRules,
    SamplingOverrides, ValidInit,
};
use dalle::ep::EpOptions;
use dalle::generate::PromptInfo;
use dalle::preprocess;
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
    let bundle = open(&args.bundle.model, options)?;
    bundle
        .manifest()
        .graph(GraphRole::Decoder)
        .context("`generate` needs a transformer decoder")?;
    let rules = RequestRules::from_bundle(&bundle)?;
    let init = match &args.init_image {
        Some(path) => Some(InitInput::Image {
            image: preprocess::load_image(path)?,
            rows: args.init_rows,
        }),
        None => None,
    };
    let prompt = match &args.text_ids {
        Some(ids) => PromptInput::Ids(ids.clone()),
        None if rules.tokenizer.is_none() => {
            bail!("the bundle has no tokenizer; pass the prompt's token ids with --text-ids 1,2,3")
        }
        None => PromptInput::Text(args.prompt.clone()),
    };
    let request = Request {
        prompt,
        candidates: args.candidates,
        sampling: SamplingOverrides {
            top_k: args.top_k,
            filter_thres: args.filter_thres,
            top_p: args.top_p,
            temperature: args.temperature,
            cond_scale: args.cond_scale,
            seed: args.seed,
        },
        init,
        rerank: args.rerank,
    };
    let request = rules
        .validate(request)
        .map_err(|e| match flag_of(e.field) {
            Some(flag) => anyhow::anyhow!("{e} ({flag})"),
            None => e.into(),
        })?;
    if args.batch == Some(0) {
        bail!("invalid batch: --batch must be at least 1");
    }
    let rows_per = if request.params.guided() { 2 } else { 1 };

    load_ort(g)?;
    let (model, load) = OrtDallePytorch::from_bundle(bundle, None)?;
    let limit = model.max_rows();
    let max_rows = args.batch.map(|b| b.saturating_mul(rows_per));
    if let Some(rows) = max_rows
        && rows > limit
    {
        tracing::warn!(
            "batch {} exceeds the decoder's batch range ({} candidates{}); using {}",
            rows / rows_per,
            (limit / rows_per).max(1),
            if rows_per == 2 { " with guidance" } else { "" },
            (limit / rows_per).max(1),
        );
    }
    let mut engine = Engine::new(model, max_rows);
    let primed = match &request.init {
        Some(ValidInit::Image { rows, .. }) => rows * rules.geometry.grid,
        Some(ValidInit::Codes(c)) => c.len(),
        None => 0,
    };
    let total = (args.candidates * rules.geometry.tokens().saturating_sub(primed)) as u64;
    let bar = progress_bar(total);
    let info = PromptInfo {
        prompt: args.prompt.clone(),
        text_token_ids: request.text.ids.clone(),
        token_count: request.text.token_count,
        truncated: request.text.truncated,
        init_image: args.init_image.clone(),
    };
    let init_rows = request
        .init
        .as_ref()
        .and_then(ValidInit::rows)
        .map(|r| r as u64);
    let mut generation = engine::generate(&mut engine, request, &mut |n| bar.inc(n as u64))
        .with_context(|| format!("generating {:?}", args.prompt))?;
    generation.timings.load = load.sessions;
    bar.finish_and_clear();
    let params = generation.request.params.clone();
    let rerank = match generation.request.rerank {
        Some(keep) => {
            let bundle = engine.model_mut().codec_mut().bundle_mut();
            let scores = dalle::clip::score(bundle, &args.prompt, generation.pixels.view())
                .context("scoring the candidates with CLIP")?;
            Some(dalle::generate::Rerank { scores, keep })
        }
        None => None,
    };
    let files = dalle::generate::write_reranked(
        &args.output,
        &generation,
        &info,
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
        "seed {}: {} candidates in {:.2} s (sessions {:.0} ms before; prefill {:.1} ms, {} steps \
         at {:.2} ms, {:.3} ms of it outside ONNX Runtime, decode {:.1} ms)",
        params.seed,
        generation.tokens.len(),
        t.total.as_secs_f64(),
        t.load.as_secs_f64() * 1e3,
        s.prefill.as_secs_f64() * 1e3,
        s.steps,
        s.step_mean().as_secs_f64() * 1e3,
        s.overhead_mean().as_secs_f64() * 1e3,
        t.decode.as_secs_f64() * 1e3,
    );
    Ok(())
}

/// The flag that sets a request field.
fn flag_of(field: &str) -> Option<&'static str> {
    Some(match field {
        "candidates" => "-n/--candidates",
        "top_k" => "--top-k",
        "filter_thres" => "--filter-thres",
        "top_p" => "--top-p",
        "temperature" => "--temperature",
        "cond_scale" => "--cond-scale",
        "init_image" => "--init-image",
        "init_rows" => "--init-rows",
        "rerank" => "--rerank",
        "prompt" => "the prompt (or --text-ids)",
        _ => return None,
    })
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
