//! `dalle-ort encode` and `decode`: images ⇄ dVAE image tokens.
//!
//! `decode` runs large inputs in batches (`--batch`, default the decoder's batch range, at most
//! 8), shows progress on a terminal, creates the output's folders, names several images
//! `NAME_00.png`, `NAME_01.png`, ..., and like every output here refuses to replace an existing
//! file unless `--force`.

use super::{BundleArg, Global, load_ort, open, progress};
use anyhow::{Context, Result, bail};
use clap::Args;
use dalle::ep::EpOptions;
use dalle::generate::numbered_files;
use dalle::{dvae, npy, preprocess};
use dalle_bundle::GraphRole;
use dalle_bundle::io::dims::BATCH;
use ndarray::{Axis, Slice};
use std::path::{Path, PathBuf};

/// Output path flags shared by `encode` and `decode`.
#[derive(Args)]
pub struct OutArgs {
    /// Output file (`encode`: FILE.npy; `decode`: FILE.png, with several images NAME_00.png,
    /// NAME_01.png, ...)
    #[arg(short, long = "out", alias = "output", value_name = "FILE")]
    out: PathBuf,
    /// Replace existing output files
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    bundle: BundleArg,
    /// Input image; resized so its shortest side fits the encoder, then centre-cropped
    image: PathBuf,
    #[command(flatten)]
    out: OutArgs,
}

#[derive(Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    bundle: BundleArg,
    /// Input .npy file of token ids
    tokens: PathBuf,
    #[command(flatten)]
    out: OutArgs,
    /// Token grids decoded per run (default: the decoder's batch range, at most 8)
    #[arg(long, value_name = "B")]
    batch: Option<usize>,
}

/// Fails when any of `paths` exists and `force` is off.
fn refuse_existing(paths: &[PathBuf], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    if let Some(p) = paths.iter().find(|p| p.symlink_metadata().is_ok()) {
        bail!("{} already exists; pass --force to replace it", p.display());
    }
    Ok(())
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

pub fn encode(g: &Global, options: EpOptions, args: EncodeArgs) -> Result<()> {
    let output = &args.out.out;
    require_extension(output, "npy", "encode writes image tokens as .npy")?;
    refuse_existing(std::slice::from_ref(output), args.out.force)?;
    let mut bundle = open(&args.bundle.model, options)?;
    bundle.manifest().graph(GraphRole::DvaeEncoder)?;
    let picture = preprocess::load_image(&args.image)?;
    load_ort(g)?;
    let tokens = dvae::encode(&mut bundle, &picture)
        .with_context(|| format!("encoding {}", args.image.display()))?;
    create_parent(output)?;
    npy::write_tokens(output, &tokens)?;
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

/// Image formats a user may name an output after; this program writes only PNG.
const OTHER_IMAGE_FORMATS: [&str; 7] = ["jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"];

/// `decode` writes PNG (with its `parameters` text chunk): an output named otherwise (`.jpg`)
/// would be PNG bytes under the wrong name, so it is refused.
fn require_extension(path: &Path, ext: &str, what: &str) -> Result<()> {
    let given = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !given.eq_ignore_ascii_case(ext) {
        bail!("{}: {what}; name the output FILE.{ext}", path.display());
    }
    Ok(())
}

/// `generate -o` takes FILE.png or a folder: a name in another image format is refused rather
/// than made a folder of PNGs.
pub fn refuse_other_image_format(path: &Path) -> Result<()> {
    let given = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if OTHER_IMAGE_FORMATS
        .iter()
        .any(|f| given.eq_ignore_ascii_case(f))
    {
        bail!(
            "{}: generate writes PNG images; name the output FILE.png or a folder",
            path.display()
        );
    }
    Ok(())
}

pub fn decode(g: &Global, options: EpOptions, args: DecodeArgs) -> Result<()> {
    require_extension(&args.out.out, "png", "decode writes PNG images")?;
    let mut bundle = open(&args.bundle.model, options)?;
    let spec = bundle.manifest().graph(GraphRole::DvaeDecoder)?.clone();
    let ids = npy::read_tokens(&args.tokens)?;
    let count = ids.shape()[0];
    let paths = numbered_files(&args.out.out, count);
    refuse_existing(&paths, args.out.force)?;
    let batch = match args.batch {
        Some(0) => bail!("invalid batch: --batch must be at least 1"),
        Some(b) => b,
        None => spec
            .dim_ranges
            .get(BATCH)
            .map_or(8, |r| usize::try_from(r.max).unwrap_or(8))
            .clamp(1, 8),
    };
    let started = std::time::SystemTime::now();
    let provenance = super::load_with_provenance(g, &mut bundle, started)?;
    create_parent(&args.out.out)?;
    let bar = progress::bar(count as u64, "images");
    let mut paths = paths.into_iter().enumerate();
    for start in (0..count).step_by(batch) {
        let end = (start + batch).min(count);
        let chunk = ids.slice_axis(Axis(0), Slice::from(start..end)).to_owned();
        let images = dvae::decode(&mut bundle, &chunk)
            .with_context(|| format!("decoding {} [{start}..{end}]", args.tokens.display()))?;
        for (image, (i, path)) in images.iter().zip(paths.by_ref()) {
            let text = format!(
                "decoded from {} [{i}]\nSize: {}x{}, Model hash: {}, Model: {}, Version: {}",
                args.tokens.display(),
                image.width(),
                image.height(),
                provenance.model_hash(),
                provenance
                    .model_name()
                    .unwrap_or_default()
                    .replace(',', "_"),
                provenance.runtime
            );
            dalle::pngtext::save(image, &path, Some(&text))?;
            bar.suspend(|| {
                println!(
                    "wrote {} ({}x{})",
                    path.display(),
                    image.width(),
                    image.height()
                )
            });
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(())
}
