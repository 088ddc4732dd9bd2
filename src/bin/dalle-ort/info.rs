//! `dalle-ort info`: what a bundle is and takes (manifest, provenance, the prompt vocabulary,
//! sampling defaults, the image size, the execution plan — each graph's provider, sessions,
//! provider options (TensorRT profiles and cache folders), the decoder's memory — and every
//! graph's real inputs/outputs checked against the manifest), or what a generated PNG says about
//! how it was made (its `parameters` chunk).

use super::{Global, load_ort, open};
use anyhow::{Context, Result, bail};
use clap::Args;
use dalle::ep::{EpOptions, ProviderKind};
use dalle::{Bundle, dvae, ort_lib};
use dalle_bundle::{GraphRole, Manifest};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct InfoArgs {
    /// Bundle directory (holds manifest.json)
    #[arg(long, value_name = "DIR", conflicts_with = "path")]
    model: Option<PathBuf>,
    /// A bundle directory, or a PNG written by `generate` (prints its parameters)
    #[arg(value_name = "BUNDLE|IMAGE.png")]
    path: Option<PathBuf>,
}

pub fn run(g: &Global, options: EpOptions, args: InfoArgs) -> Result<()> {
    let path = match (args.model, args.path) {
        (Some(m), _) => m,
        (None, Some(p)) if p.is_file() => return image(&p),
        (None, Some(p)) => p,
        (None, None) => bail!("give a bundle (--model DIR) or a PNG"),
    };
    let mut bundle = open(&path, options)?;
    print_manifest(bundle.dir(), bundle.manifest());
    print_prompting(&bundle)?;
    load_ort(g)?;
    // A provider named with --ep is planned before it is probed: the plan prints even where the
    // provider cannot run.
    let fixed = bundle.options().ep.fixed_kind();
    if let Some(kind) = fixed {
        print_plan(&bundle, kind)?;
    }
    print_sessions(&mut bundle, fixed.is_none())
}

/// How each graph would run with the bundle's provider `kind`.
fn print_plan(bundle: &Bundle, kind: ProviderKind) -> Result<()> {
    println!("plan on {kind}:");
    let roles = GraphRole::ALL
        .into_iter()
        .filter(|r| bundle.manifest().graphs.contains_key(r));
    for role in roles {
        let plan = bundle.plan(kind, role)?;
        let phases: Vec<&str> = plan.sessions.iter().map(|s| s.phase.name()).collect();
        println!(
            "  graph {role} on {}: {} session(s): {}",
            plan.kind,
            phases.len(),
            phases.join(", ")
        );
        if let Some(note) = &plan.note {
            println!("    note: {note}");
        }
        for session in &plan.sessions {
            println!("    session {}:", session.phase);
            if session.providers.is_empty() {
                println!("      CPUExecutionProvider (defaults)");
            }
            for p in &session.providers {
                let options: Vec<String> = p
                    .ort_options()
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!("      {} {}", p.kind().ort_name(), options.join(" "));
            }
            for (key, value) in &session.session_config {
                println!("      session option {key}={value}");
            }
        }
        for line in plan.memory.iter().flat_map(|m| m.describe()) {
            println!("    memory: {line}");
        }
    }
    Ok(())
}

/// The `parameters` text of a generated PNG.
fn image(path: &Path) -> Result<()> {
    let text = dalle::pngtext::read_parameters(path)?.with_context(|| {
        format!(
            "{} has no `parameters` text chunk (not written by dalle-ort generate)",
            path.display()
        )
    })?;
    println!("{text}");
    Ok(())
}

fn print_manifest(dir: &Path, m: &Manifest) {
    println!("bundle:     {}", dir.display());
    println!("family:     {}", m.family);
    println!("format:     {}", m.format_version);
    println!("exporter:   {}", m.provenance.exporter);
    if let Ok(sha) = dalle::generate::manifest_sha256(dir) {
        println!("manifest:   sha256 {sha}");
    }
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

/// What a prompt may contain and what `generate` uses when a flag is left out.
fn print_prompting(bundle: &Bundle) -> Result<()> {
    let m = bundle.manifest();
    if let (Some(t), Some(spec)) = (&m.token_layout, m.graphs.get(&GraphRole::DvaeDecoder)) {
        let side = t.image_grid * dvae::attributes(GraphRole::DvaeDecoder, spec)?.downsample;
        println!(
            "image size: {side}x{side} px ({}x{} image tokens; the only size this model makes)",
            t.image_grid, t.image_grid
        );
    }
    if let Some(spec) = m.graphs.get(&GraphRole::DvaeEncoder) {
        let side = dvae::encoder_image_size(spec)?;
        println!(
            "encoder input: {side}x{side} px (--init-image and `encode` resize and centre-crop to it)"
        );
    }
    if let Some(s) = &m.sampling {
        println!(
            "sampling defaults: top-k {}, top-p {}, temperature {}, cond scale {}",
            s.top_k.map_or("all".into(), |k| k.to_string()),
            s.top_p.map_or("off".into(), |p| p.to_string()),
            s.temperature,
            s.cond_scale
        );
    } else if m.token_layout.is_some() {
        println!(
            "sampling defaults: none in the manifest (top-k all, temperature 1, cond scale 1)"
        );
    }
    if let Some(file) = &m.tokenizer {
        let tok = dalle::TextTokenizer::open(&bundle.dir().join(file))?;
        let words = tok.vocabulary();
        if tok.is_word_level() {
            println!(
                "vocabulary: {} words (others are read as {}): {}",
                words.len(),
                tok.unknown_token().unwrap_or_else(|| "unknown".into()),
                words.join(" ")
            );
        } else {
            println!(
                "vocabulary: {} subword tokens (any text is tokenized)",
                tok.vocab_size()
            );
        }
    }
    Ok(())
}

fn print_sessions(bundle: &mut Bundle, plan: bool) -> Result<()> {
    if let Some(lib) = ort_lib::loaded_library() {
        println!(
            "onnxruntime: {} {} (via {})",
            dalle::generate::onnxruntime_version().unwrap_or_default(),
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
    if plan {
        print_plan(bundle, decision.kind)?;
    }
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
