//! `shapes-eval`: scores how well a bundle of the shape-world demo model renders prompts.
//!
//! `eval` generates N candidates for every prompt of an evaluation set (default
//! `models/shapes/heldout.json`), detects the shapes in each image ([`dalle::shapes`]), and
//! prints the table of `models/README.md`: per category and check, the share of single samples
//! that pass, of prompts whose CLIP-best candidate passes (when the bundle has CLIP), and of
//! prompts with any passing candidate. `judge` checks given images against a prompt written in
//! the world's caption language; `detect` lists the objects found in images.
//!
//! The runtime flags (`--ep`, `--ort-lib`, `-v`, ...), `--seed` (`-1` or left out: random,
//! printed) and the sampling defaults (the manifest's) are those of `dalle-ort generate`.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use dalle::engine::{
    self, Engine, OrtDallePytorch, PromptInput, Request, RequestRules, SamplingOverrides,
};
use dalle::generate;
use dalle::shapes::report::PromptResult;
use dalle::shapes::{EvalSet, Report, detect, judge};
use dalle::{Bundle, preprocess};
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[path = "shared/logging.rs"]
mod logging;
#[path = "shared/progress.rs"]
mod progress;
#[path = "shared/runtime.rs"]
mod runtime;

use runtime::{RuntimeArgs, Seed, parse_seed};

#[derive(Parser)]
#[command(name = "shapes-eval", version, about = "Score shape-world generations")]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// The evaluation set / world file
    #[arg(long, global = true, default_value = "models/shapes/heldout.json")]
    prompts: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate for every prompt of the set and print the score table
    Eval(EvalArgs),
    /// Check images against a prompt (exit status 1 when any is wrong)
    Judge(JudgeArgs),
    /// List the objects detected in images
    Detect { images: Vec<PathBuf> },
}

#[derive(Args)]
struct JudgeArgs {
    /// A prompt in the world's caption language, e.g. "a large red circle on the left", then
    /// the images
    #[arg(value_name = "PROMPT IMAGES", required = true)]
    args: Vec<String>,
    /// The prompt (old spelling; then every positional argument is an image)
    #[arg(long, hide = true)]
    prompt: Option<String>,
}

#[derive(Args)]
struct EvalArgs {
    /// Bundle directory of the shape-world model
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Candidates per prompt, N in [1, 1024]
    #[arg(
        short = 'n',
        long,
        default_value_t = 8,
        value_name = "N",
        help_heading = "Sampling"
    )]
    candidates: usize,
    /// Seed of the first prompt (prompt i uses seed + i), N in [0, 2^64), or -1 for a random
    /// one (default: random; printed)
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        value_parser = parse_seed,
        help_heading = "Sampling"
    )]
    seed: Option<Seed>,
    /// Keep the K most likely image tokens, K in [1, image vocab] (default: the manifest's,
    /// else all)
    #[arg(long, value_name = "K", help_heading = "Sampling")]
    top_k: Option<usize>,
    /// DALLE-pytorch top-k instead of --top-k, T in [0, 1)
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
    /// Only the first N prompts
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Do not rerank with CLIP even when the bundle has it
    #[arg(long)]
    no_rerank: bool,
    /// Write each prompt's candidates as a grid PNG (prompt_NNN.png) into this folder
    #[arg(
        short,
        long = "out",
        alias = "images",
        value_name = "DIR",
        help_heading = "Output"
    )]
    out: Option<PathBuf>,
    /// Write into a non-empty --out folder
    #[arg(long, help_heading = "Output")]
    force: bool,
    /// Also write the table (Markdown) to this file
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    report: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.runtime.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let set = EvalSet::load(&cli.prompts)?;
    match cli.command {
        Command::Detect { images } => {
            for path in images {
                let objects = detect(&preprocess::load_image(&path)?, &set.world)
                    .with_context(|| path.display().to_string())?;
                println!("{}: {} object(s)", path.display(), objects.len());
                for o in objects {
                    println!(
                        "  {} {} extent {} at ({:.1}, {:.1}), area {}, top share {:.2}, corners {:.2}",
                        o.colour,
                        o.shape,
                        o.extent,
                        o.centre[0],
                        o.centre[1],
                        o.area,
                        o.top_share,
                        o.corner_fill
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Judge(args) => judge_images(&set, args),
        Command::Eval(args) => eval(&cli.runtime, &set, &args).map(|()| ExitCode::SUCCESS),
    }
}

fn judge_images(set: &EvalSet, args: JudgeArgs) -> Result<ExitCode> {
    let (prompt, images) = match args.prompt {
        Some(p) => (p, args.args),
        None => {
            let mut a = args.args.into_iter();
            let prompt = a.next().context("give the prompt, then the images")?;
            (prompt, a.collect())
        }
    };
    let want = set
        .world
        .parse_caption(&prompt)
        .map_err(|why| anyhow::anyhow!("{prompt:?} is not a caption of the shape world: {why}"))?;
    if images.is_empty() {
        bail!("give the images to judge after the prompt");
    }
    let mut all = true;
    for path in images.iter().map(PathBuf::from) {
        let objects = detect(&preprocess::load_image(&path)?, &set.world)?;
        let v = judge(&want, &objects, &set.world);
        all &= v.correct;
        let failed: Vec<&str> = v.checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
        println!(
            "{}: {}{}",
            path.display(),
            if v.correct { "correct" } else { "WRONG" },
            if failed.is_empty() {
                String::new()
            } else {
                format!(" (failed: {})", failed.join(", "))
            }
        );
    }
    Ok(if all {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn eval(rt: &RuntimeArgs, set: &EvalSet, args: &EvalArgs) -> Result<()> {
    if let Some(dir) = &args.out {
        generate::Destination::Dir(dir.clone()).check(args.force, args.candidates)?;
    }
    rt.load_ort()?;
    let bundle = Bundle::open(&args.model, rt.ep_options())
        .with_context(|| format!("opening bundle {}", args.model.display()))?;
    let rules = RequestRules::from_bundle(&bundle)?;
    if rules.tokenizer.is_none() {
        bail!("the bundle has no tokenizer");
    }
    let rerank = !args.no_rerank && rules.clip;
    let (model, _) = OrtDallePytorch::from_bundle(bundle, None)?;
    let mut engine = Engine::new(model, None);
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let seed = Seed::resolve(args.seed);
    let prompts = &set.prompts[..args.limit.unwrap_or(usize::MAX).min(set.prompts.len())];
    let started = Instant::now();
    let mut report = Report::default();
    let mut effective = None;
    let bar = progress::bar(prompts.len() as u64, "prompts");
    for (i, p) in prompts.iter().enumerate() {
        // The same request `dalle-ort generate` makes (manifest defaults included).
        let request = Request {
            prompt: PromptInput::Text(p.prompt.clone()),
            candidates: args.candidates,
            sampling: SamplingOverrides {
                top_k: args.top_k,
                filter_thres: args.filter_thres,
                top_p: args.top_p,
                temperature: args.temperature,
                cond_scale: args.cond_scale,
                seed: Some(seed.wrapping_add(i as u64)),
            },
            init: None,
            rerank: None,
        };
        let request = rules.validate(request)?;
        if request.text.truncated {
            bail!(
                "prompt {:?} has {} tokens; the model reads {}",
                p.prompt,
                request.text.token_count,
                rules.text_length
            );
        }
        effective.get_or_insert_with(|| request.params.clone());
        let generation = engine::generate(&mut engine, request, &mut |_| {})
            .with_context(|| format!("generating {:?}", p.prompt))?;
        let images = (0..generation.pixels.shape()[0])
            .map(|c| preprocess::from_chw_tensor(generation.pixels.index_axis(ndarray::Axis(0), c)))
            .collect::<dalle::Result<Vec<RgbImage>>>()?;
        let mut verdicts = Vec::with_capacity(images.len());
        for image in &images {
            verdicts.push(judge(p, &detect(image, &set.world)?, &set.world));
        }
        let clip_scores = if rerank {
            let bundle = engine.model_mut().codec_mut().bundle_mut();
            Some(dalle::clip::score(
                bundle,
                &p.prompt,
                generation.pixels.view(),
            )?)
        } else {
            None
        };
        if let Some(dir) = &args.out {
            let text = format!(
                "{}\nSeed: {}, Candidates: {}",
                p.prompt,
                seed.wrapping_add(i as u64),
                args.candidates
            );
            save_grid(dir, i, &images, &text)?;
        }
        report.results.push(PromptResult {
            category: p.category.clone(),
            prompt: p.prompt.clone(),
            verdicts,
            clip_scores,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let table = report.markdown(args.candidates);
    println!("{table}");
    let params = effective.unwrap_or_default();
    println!(
        "{} prompts x {} candidates in {:.1} s (seed {seed}, top-k {}, temperature {}, cond scale {})",
        prompts.len(),
        args.candidates,
        started.elapsed().as_secs_f64(),
        params.top_k.map_or("all".to_string(), |k| k.to_string()),
        params.temperature,
        params.cond_scale
    );
    if let Some(path) = &args.report {
        dalle::atomic::write(path, table.as_bytes())?;
    }
    Ok(())
}

fn save_grid(dir: &Path, index: usize, images: &[RgbImage], parameters: &str) -> Result<()> {
    let grid = generate::grid(images);
    let path = dir.join(format!("prompt_{index:03}.png"));
    dalle::pngtext::save(&grid, &path, Some(parameters))?;
    Ok(())
}
