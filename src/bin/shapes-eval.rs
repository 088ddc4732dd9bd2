//! `shapes-eval`: scores how well a bundle of the shape-world demo model renders prompts.
//!
//! `eval` generates N candidates for every prompt of an evaluation set (default
//! `models/shapes/heldout.json`), detects the shapes in each image ([`dalle::shapes`]), and
//! prints the table of `models/README.md`: per category and check, the share of single samples
//! that pass, of prompts whose CLIP-best candidate passes (when the bundle has CLIP), and of
//! prompts with any passing candidate. `judge` checks given images against a prompt written in
//! the world's caption language; `detect` lists the objects found in images.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use dalle::engine::{
    self, Engine, OrtDallePytorch, PromptInput, Request, RequestRules, SamplingOverrides,
};
use dalle::generate;
use dalle::shapes::report::PromptResult;
use dalle::shapes::{EvalSet, Report, detect, judge};
use dalle::{Bundle, EpOptions, ort_lib, preprocess};
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "shapes-eval", version, about = "Score shape-world generations")]
struct Cli {
    /// ONNX Runtime library (default: $ORT_DYLIB_PATH, then .onnxruntime/cpu/)
    #[arg(long, global = true, value_name = "PATH")]
    ort_lib: Option<PathBuf>,
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
    Judge {
        /// A prompt in the world's caption language, e.g. "a large red circle on the left"
        #[arg(long)]
        prompt: String,
        images: Vec<PathBuf>,
    },
    /// List the objects detected in images
    Detect { images: Vec<PathBuf> },
}

#[derive(Args)]
struct EvalArgs {
    /// Bundle directory of the shape-world model
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Candidates per prompt
    #[arg(short = 'n', long, default_value_t = 8)]
    candidates: usize,
    /// Seed of the first prompt (prompt i uses seed + i)
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Keep the K most likely image tokens (default: the manifest's, else all)
    #[arg(long)]
    top_k: Option<usize>,
    /// Softmax temperature (default: the manifest's, else 1)
    #[arg(long)]
    temperature: Option<f64>,
    /// Classifier-free guidance scale (1 = off; default: the manifest's, else 1)
    #[arg(long)]
    cond_scale: Option<f64>,
    /// Only the first N prompts
    #[arg(long)]
    limit: Option<usize>,
    /// Do not rerank with CLIP even when the bundle has it
    #[arg(long)]
    no_rerank: bool,
    /// Write each prompt's candidates as a grid PNG into this folder
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// Also write the table (Markdown) to this file
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Judge { prompt, images } => {
            let Some(want) = set.world.parse_prompt(&prompt) else {
                bail!("{prompt:?} is not a caption of the shape world");
            };
            let mut all = true;
            for path in images {
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
        Command::Eval(args) => eval(&cli.ort_lib, &set, &args).map(|()| ExitCode::SUCCESS),
    }
}

fn eval(ort: &Option<PathBuf>, set: &EvalSet, args: &EvalArgs) -> Result<()> {
    ort_lib::load(ort.as_deref(), false)?;
    let bundle = Bundle::open(&args.model, EpOptions::default())
        .with_context(|| format!("opening bundle {}", args.model.display()))?;
    let rules = RequestRules::from_bundle(&bundle)?;
    if rules.tokenizer.is_none() {
        bail!("the bundle has no tokenizer");
    }
    let rerank = !args.no_rerank && rules.clip;
    let (model, _) = OrtDallePytorch::from_bundle(bundle, None)?;
    let mut engine = Engine::new(model, None);
    if let Some(dir) = &args.images {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let prompts = &set.prompts[..args.limit.unwrap_or(usize::MAX).min(set.prompts.len())];
    let started = Instant::now();
    let mut report = Report::default();
    let mut effective = None;
    for (i, p) in prompts.iter().enumerate() {
        // The same request `dalle-ort generate` makes (manifest defaults included).
        let request = Request {
            prompt: PromptInput::Text(p.prompt.clone()),
            candidates: args.candidates,
            sampling: SamplingOverrides {
                top_k: args.top_k,
                temperature: args.temperature,
                cond_scale: args.cond_scale,
                seed: Some(args.seed.wrapping_add(i as u64)),
                ..SamplingOverrides::default()
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
        if let Some(dir) = &args.images {
            save_grid(dir, i, &images)?;
        }
        report.results.push(PromptResult {
            category: p.category.clone(),
            prompt: p.prompt.clone(),
            verdicts,
            clip_scores,
        });
    }
    let table = report.markdown(args.candidates);
    println!("{table}");
    let params = effective.unwrap_or_default();
    println!(
        "{} prompts x {} candidates in {:.1} s (seed {}, top-k {}, temperature {}, cond scale {})",
        prompts.len(),
        args.candidates,
        started.elapsed().as_secs_f64(),
        args.seed,
        params.top_k.map_or("all".to_string(), |k| k.to_string()),
        params.temperature,
        params.cond_scale
    );
    if let Some(path) = &args.report {
        std::fs::write(path, &table).with_context(|| path.display().to_string())?;
    }
    Ok(())
}

fn save_grid(dir: &Path, index: usize, images: &[RgbImage]) -> Result<()> {
    let grid = generate::grid(images);
    preprocess::save_png(&grid, &dir.join(format!("prompt_{index:03}.png")))?;
    Ok(())
}
