//! `dalle-ort generate`: prompt → token ids → image tokens → PNGs, grid and sidecar.
//!
//! The flags fill an engine [`Request`], validated once by the bundle's [`RequestRules`] (unset
//! sampling options take the manifest's `sampling` defaults, then the library's: no top-k,
//! temperature 1, no guidance), then run on the engine as one request. The prompt is tokenized
//! with the bundle's tokenizer; `--text-ids` bypasses it (bundles without a tokenizer, tests).
//! `--from IMAGE.png` takes prompt, seed and settings from a PNG's `parameters` chunk and makes
//! that image again. The output is checked before sampling: a non-empty folder or an existing
//! file is refused unless `--force`. `--preview-every K` writes progressive previews as the
//! steps go ([`Previews`]).

use super::runtime::{Seed, parse_seed};
use super::{Global, open, progress};
use anyhow::{Context, Result, bail};
use clap::Args;
use dalle::engine::{
    self, Engine, ImageTokenModel, InitInput, OrtModel, PromptInput, Request, RequestRules,
    SamplingOverrides, ValidInit,
};
use dalle::ep::EpOptions;
use dalle::generate::{Destination, ImageParameters, PreviewPlan, Previews, PromptInfo, RunRecord};
use dalle::preprocess;
use dalle_bundle::GraphRole;
use std::path::PathBuf;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    bundle: super::BundleArg,
    /// The text prompt (taken from --from when left out)
    #[arg(required_unless_present = "from", help_heading = "Prompt")]
    prompt: Option<String>,
    /// Use these tokenizer ids (comma-separated, 0 = padding) instead of tokenizing the prompt
    #[arg(
        long,
        value_name = "IDS",
        value_delimiter = ',',
        help_heading = "Prompt"
    )]
    text_ids: Option<Vec<u32>>,
    /// Words the model's vocabulary lacks are an error (default: a warning naming them)
    #[arg(long, help_heading = "Prompt")]
    strict: bool,
    /// Make the image of a PNG written by `generate` again (its prompt, seed, candidate and
    /// settings; flags given here override them)
    #[arg(long, value_name = "IMAGE.png", help_heading = "Prompt")]
    from: Option<PathBuf>,

    /// Number of candidates (images), N in [1, 1024] (default 1)
    #[arg(
        short = 'n',
        long = "candidates",
        value_name = "N",
        help_heading = "Sampling"
    )]
    candidates: Option<usize>,
    /// Keep the K most likely image tokens, K in [1, image vocab] (default: the manifest's,
    /// else all)
    #[arg(long, value_name = "K", help_heading = "Sampling")]
    top_k: Option<usize>,
    /// DALLE-pytorch top-k instead of --top-k, T in [0, 1): k = max(int((1 - T) · full vocab),
    /// 1); 0.5 keeps more than every image token, i.e. no top-k
    #[arg(long, value_name = "T", help_heading = "Sampling")]
    filter_thres: Option<f64>,
    /// Nucleus sampling threshold, P in (0, 1]
    #[arg(long, value_name = "P", help_heading = "Sampling")]
    top_p: Option<f64>,
    /// Softmax temperature, T in [1e-6, 3.4e38] (default: the manifest's, else 1)
    #[arg(long, value_name = "T", help_heading = "Sampling")]
    temperature: Option<f64>,
    /// Classifier-free guidance scale, S in [-1e6, 1e6], 1 = off (default: the manifest's,
    /// else 1)
    #[arg(
        long,
        value_name = "S",
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    cond_scale: Option<f64>,
    /// Random seed, N in [0, 2^64), or -1 for a random one (default: random; printed and
    /// recorded in the sidecar and every PNG)
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        value_parser = parse_seed,
        help_heading = "Sampling"
    )]
    seed: Option<Seed>,
    /// G×G candidates (min-dalle's `grid_size`): the same as -n G²
    #[arg(
        long,
        value_name = "G",
        conflicts_with = "candidates",
        help_heading = "Sampling"
    )]
    grid_size: Option<usize>,
    /// Also decode the candidates' tokens tiled into one image, `seamless.png` (min-dalle's
    /// `is_seamless`; needs a square number of candidates and an output folder)
    #[arg(long, help_heading = "Output")]
    seamless: bool,
    /// Progressive previews: every K sampled tokens, also write each candidate's partial image
    /// (unsampled cells take the codebook's last code, as min-dalle's and `serve`'s previews)
    /// as `preview_NN_TTT.png` (candidate NN, TTT tokens in its grid) and, with --seamless,
    /// the tiled image as `preview_seamless_TTT.png`. K in [1, tokens sampled per image]; when
    /// K divides that count the last previews are the final images. Needs an output folder
    #[arg(long, value_name = "K", help_heading = "Output")]
    preview_every: Option<usize>,
    /// Candidates run at once, B in [1, N] (default: all, within the decoder's batch range);
    /// results do not depend on it
    #[arg(long, value_name = "B", help_heading = "Sampling")]
    batch: Option<usize>,
    /// Prime with this image's first token rows (PNG or JPEG; needs a dvae_encoder)
    #[arg(long, value_name = "IMG", help_heading = "Sampling")]
    init_image: Option<PathBuf>,
    /// Token rows kept from --init-image, R in [1, grid) (default: 7/16 of the grid, 14 of 32)
    #[arg(
        long,
        value_name = "R",
        requires = "init_image",
        help_heading = "Sampling"
    )]
    init_rows: Option<u64>,
    /// Score every candidate with the bundle's CLIP (from the decoded pixels) and write only the
    /// best K distinct ones, K in [1, N], in score order (`rank_00_candidate_NN.png`, ...); all
    /// scores go in the sidecar
    #[arg(long, value_name = "K", help_heading = "Sampling")]
    rerank: Option<usize>,

    /// Output folder (candidate_NN.png, grid.png, generation.json), or FILE.png for one image
    /// (and FILE.json beside it); a non-empty folder or an existing file is refused unless
    /// --force
    #[arg(
        short,
        long = "out",
        alias = "output",
        value_name = "DIR|FILE.png",
        default_value = "out",
        help_heading = "Output"
    )]
    out: PathBuf,
    /// Write into a non-empty output folder (replacing files of the same names) or replace
    /// the output file
    #[arg(long, help_heading = "Output")]
    force: bool,
}

/// A run recorded in a PNG (`--from`).
struct Recorded {
    path: PathBuf,
    params: ImageParameters,
}

pub fn run(g: &Global, options: EpOptions, mut args: GenerateArgs) -> Result<()> {
    super::codec::refuse_other_image_format(&args.out)?;
    let started = std::time::SystemTime::now();
    let from = match &args.from {
        Some(path) => Some(read_from(path)?),
        None => None,
    };
    let mut only = None;
    if let Some(f) = &from {
        let p = &f.params;
        if args.prompt.is_none() {
            args.prompt = Some(p.prompt.clone());
        }
        if args.text_ids.is_none() {
            args.text_ids.clone_from(&p.text_ids);
        }
        if args.top_k.is_none() && args.filter_thres.is_none() {
            args.top_k = p.top_k;
            args.filter_thres = p.filter_thres;
        }
        args.top_p = args.top_p.or(p.top_p);
        args.temperature = args.temperature.or(Some(p.temperature));
        args.cond_scale = args.cond_scale.or(Some(p.cond_scale));
        args.seed = args.seed.or(Some(Seed::Fixed(p.seed)));
        if let Some(rows) = p.init_rows {
            if args.init_image.is_none() {
                bail!(
                    "{} was primed with {rows} rows of an init image: pass that image with \
                     --init-image",
                    f.path.display()
                );
            }
            args.init_rows = args.init_rows.or(Some(rows));
        }
        match p.candidate {
            // Candidate c draws from stream c: sample 0..=c, keep c.
            Some(c) if args.candidates.is_none() => {
                args.candidates = Some(c + 1);
                only = Some(c);
            }
            _ => args.candidates = args.candidates.or(Some(p.candidates)),
        }
    }
    let prompt_text = args.prompt.clone().unwrap_or_default();
    if let Some(g) = args.grid_size {
        args.candidates = Some(
            g.checked_mul(g)
                .filter(|&n| n > 0)
                .with_context(|| format!("--grid-size {g}: must be in [1, 32]"))?,
        );
    }
    let candidates = args.candidates.unwrap_or(1);

    let mut bundle = open(&args.bundle.model, options)?;
    bundle
        .manifest()
        .graph(GraphRole::Decoder)
        .context("`generate` needs a transformer decoder")?;
    let mut rules = RequestRules::from_bundle(&bundle)?;
    rules.strict_vocabulary = args.strict;
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
        None => PromptInput::Text(prompt_text.clone()),
    };
    let request = Request {
        prompt,
        candidates,
        sampling: SamplingOverrides {
            top_k: args.top_k,
            filter_thres: args.filter_thres,
            top_p: args.top_p,
            temperature: args.temperature,
            cond_scale: args.cond_scale,
            seed: Some(Seed::resolve(args.seed)),
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
    let dest = Destination::from_path(&args.out);
    let kept = match (only, request.rerank) {
        (Some(_), _) => 1,
        (None, Some(k)) => k,
        (None, None) => candidates,
    };
    dest.check(args.force, kept)?;
    let out_dir = match &dest {
        Destination::Dir(dir) => Some(dir.clone()),
        Destination::File(_) => None,
    };
    if args.seamless {
        if out_dir.is_none() {
            bail!("--seamless writes seamless.png into an output folder, not -o FILE.png");
        }
        if candidates.isqrt().pow(2) != candidates {
            bail!(
                "--seamless tiles the candidates as a square: give --grid-size G (or -n G²), \
                 not -n {candidates}"
            );
        }
    }
    let rows_per = if request.params.guided() { 2 } else { 1 };

    let provenance = super::load_with_provenance(g, &mut bundle, started)?;
    if let Some(f) = &from
        && let Some(hash) = &f.params.model_hash
        && *hash != provenance.model_hash()
    {
        tracing::warn!(
            "the image was made by model {hash}, this bundle is {}: the result will differ",
            provenance.model_hash()
        );
    }
    let (model, load) = OrtModel::from_bundle(bundle, None)?;
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
    let mut previews = match args.preview_every {
        Some(k) => {
            let Some(dir) = &out_dir else {
                bail!("--preview-every writes previews into an output folder, not -o FILE.png");
            };
            let plan = PreviewPlan::new(
                k,
                rules.geometry.tokens(),
                primed,
                candidates,
                only,
                args.seamless,
            )?;
            Some(Previews::new(plan, dir)?)
        }
        None => None,
    };
    let total = (candidates * rules.geometry.tokens().saturating_sub(primed)) as u64;
    let bar = progress::bar(total, "tokens");
    let info = PromptInfo {
        prompt: prompt_text.clone(),
        text_token_ids: request.text.ids.clone(),
        token_count: request.text.token_count,
        truncated: request.text.truncated,
        init_image: args.init_image.clone(),
    };
    let unknown_words = request.text.unknown.clone();
    let init_rows = request
        .init
        .as_ref()
        .and_then(ValidInit::rows)
        .map(|r| r as u64);
    let mut generation = engine::generate_observed(
        &mut engine,
        request,
        &mut |n| bar.inc(n as u64),
        &mut |engine, id, events| match previews.as_mut() {
            Some(p) => p.observe(engine, id, events),
            None => Ok(()),
        },
    )
    .with_context(|| format!("generating {prompt_text:?}"))?;
    if let Some(p) = previews.as_mut() {
        p.finish(&mut engine, &generation.tokens)
            .context("writing the last previews")?;
    }
    generation.timings.load = load.sessions;
    bar.finish_and_clear();
    let params = generation.request.params.clone();
    let rerank = match generation.request.rerank {
        Some(keep) => {
            let bundle = engine.model_mut().bundle_mut();
            let scores = dalle::clip::score(bundle, &prompt_text, generation.pixels.view())
                .context("scoring the candidates with CLIP")?;
            Some(dalle::generate::Rerank { scores, keep })
        }
        None => None,
    };
    let record = RunRecord {
        prompt: &info,
        prompt_is_ids: args.text_ids.is_some(),
        unknown_words: &unknown_words,
        params: &params,
        top_k_used: params.effective_top_k(rules.geometry.total_vocab, rules.geometry.vocab),
        init_rows,
        rerank: rerank.as_ref(),
        provenance: Some(&provenance),
        only,
    };
    let mut files = dalle::generate::write_run(&dest, &generation, &record)?;
    if let (true, Some(dir)) = (args.seamless, &out_dir) {
        let tiles = engine::seamless_tokens(&generation.tokens, rules.geometry.grid)?;
        let image = dalle::dvae::decode(engine.model_mut().bundle_mut(), &tiles)?;
        let path = dir.join("seamless.png");
        if let Some(img) = image.first() {
            // Atomically and never through a symlink, as every output file.
            dalle::pngtext::save(img, &path, None)?;
            files.push(path);
        }
    }
    if let Some(r) = &rerank {
        for (rank, i) in dalle::clip::ranking(&r.scores).into_iter().enumerate() {
            println!("clip rank {rank}: candidate {i} score {:.4}", r.scores[i]);
        }
    }
    for f in &files {
        println!("wrote {}", f.display());
    }
    if let (Some(p), Some(dir)) = (&previews, &out_dir) {
        println!(
            "wrote {} previews (preview_*.png) in {}",
            p.written().len(),
            dir.display()
        );
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

fn read_from(path: &std::path::Path) -> Result<Recorded> {
    let text = dalle::pngtext::read_parameters(path)?.with_context(|| {
        format!(
            "{} has no `parameters` text chunk (not written by dalle-ort generate)",
            path.display()
        )
    })?;
    let params = ImageParameters::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: parameters: {e}", path.display()))?;
    Ok(Recorded {
        path: path.to_path_buf(),
        params,
    })
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
