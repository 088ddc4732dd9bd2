//! Writing a generation: one PNG per kept candidate (`candidate_NN.png`, or `rank_NN_…` after
//! CLIP reranking), a near-square `grid.png` with a gutter between tiles when there are several,
//! and the `generation.json` sidecar (prompt, unknown words, provenance, the effective settings,
//! per-candidate seed/stream and tokens, timings); or, for `-o FILE.png`, that one image and
//! `FILE.json` beside it.
//!
//! Why here, in one place: every PNG carries its parameters ([`super::ImageParameters`], a
//! `parameters` text chunk), every file is written atomically and never through a symlink
//! ([`crate::atomic`]), and nothing is overwritten by accident ([`Destination::check`]).

use super::compact_json;
use super::parameters::ImageParameters;
use super::provenance::Provenance;
use crate::engine::Generation;
use crate::error::{Error, Result};
use crate::preprocess;
use crate::sampling::SamplingParams;
use image::RgbImage;
use ndarray::Axis;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// File name of the sidecar.
pub const SIDECAR_FILE: &str = "generation.json";
/// File name of the grid image.
pub const GRID_FILE: &str = "grid.png";

/// What the caller knows about the prompt (the library only sees token ids).
#[derive(Clone, Debug, Serialize)]
pub struct PromptInfo {
    pub prompt: String,
    pub text_token_ids: Vec<u32>,
    /// Tokens the prompt produced (before padding).
    pub token_count: usize,
    /// Whether the prompt was cut to the model's text length.
    pub truncated: bool,
    pub init_image: Option<PathBuf>,
}

/// Digits of the numbers in the names of `count` numbered files: at least 2, so names sort.
pub fn index_width(count: usize) -> usize {
    count.saturating_sub(1).max(1).to_string().len().max(2)
}

/// `candidate_00.png`, `candidate_01.png`, ... (two digits; see [`candidate_name`]).
pub fn candidate_file(index: usize) -> String {
    candidate_name(index, 0)
}

/// [`candidate_file`] for a run of `count` candidates (`candidate_007.png` from 101 on).
pub fn candidate_name(index: usize, count: usize) -> String {
    format!("candidate_{index:0w$}.png", w = index_width(count))
}

/// `rank_00_candidate_07.png`: a reranked candidate's file (rank first, so names sort by score).
pub fn ranked_file(rank: usize, index: usize) -> String {
    ranked_name(rank, index, 0)
}

fn ranked_name(rank: usize, index: usize, count: usize) -> String {
    format!(
        "rank_{rank:0w$}_{}",
        candidate_name(index, count),
        w = index_width(count)
    )
}

/// `count` numbered files for `path` (`img.png` → `img_00.png`, `img_01.png`, ...); `path`
/// itself when `count` is 1.
pub fn numbered_files(path: &Path, count: usize) -> Vec<PathBuf> {
    if count == 1 {
        return vec![path.to_path_buf()];
    }
    let stem = path
        .file_stem()
        .map_or_else(|| "image".to_string(), |s| s.to_string_lossy().into_owned());
    let ext = path
        .extension()
        .map_or_else(|| "png".to_string(), |e| e.to_string_lossy().into_owned());
    (0..count)
        .map(|i| path.with_file_name(format!("{stem}_{i:0w$}.{ext}", w = index_width(count))))
        .collect()
}

/// CLIP reranking of a generation: every candidate's score and how many to keep.
#[derive(Clone, Debug)]
pub struct Rerank {
    /// `exp(logit_scale) · cos(prompt, candidate)`, one per candidate.
    pub scores: Vec<f32>,
    /// Candidates written (the best `keep` distinct ones, in score order).
    pub keep: usize,
}

/// Columns and rows of a near-square grid for `n` images.
pub fn grid_shape(n: usize) -> (usize, usize) {
    let mut cols = 1;
    while cols * cols < n {
        cols += 1;
    }
    (cols, n.div_ceil(cols).max(1))
}

/// Pixels between grid tiles: 1/32 of a tile, at least 2.
pub fn gutter(tile: u32) -> u32 {
    (tile / 32).max(2)
}

/// Colour of the gutter and of empty cells.
pub const GUTTER_COLOUR: [u8; 3] = [128, 128, 128];

/// The images row-major with a [`gutter`] between tiles (none around the edge), on
/// [`GUTTER_COLOUR`].
pub fn grid(images: &[RgbImage]) -> RgbImage {
    let (cols, rows) = grid_shape(images.len());
    let w = images.iter().map(RgbImage::width).max().unwrap_or(0);
    let h = images.iter().map(RgbImage::height).max().unwrap_or(0);
    let g = gutter(w.max(h));
    let side = |n: usize, tile: u32| (n as u32 * tile + (n as u32).saturating_sub(1) * g).max(1);
    let mut out = RgbImage::from_pixel(side(cols, w), side(rows, h), image::Rgb(GUTTER_COLOUR));
    for (i, img) in images.iter().enumerate() {
        let x = (i % cols) as u32 * (w + g);
        let y = (i / cols) as u32 * (h + g);
        image::imageops::replace(&mut out, img, i64::from(x), i64::from(y));
    }
    out
}

/// Where a run's files go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A folder: candidate PNGs, `grid.png` (several images), `generation.json`.
    Dir(PathBuf),
    /// One PNG (exactly one image kept), with the sidecar beside it (`FILE.json`).
    File(PathBuf),
}

impl Destination {
    /// `-o PATH`: a path ending in `.png` is one file, anything else a folder.
    pub fn from_path(path: &Path) -> Destination {
        let png = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if png {
            Destination::File(path.to_path_buf())
        } else {
            Destination::Dir(path.to_path_buf())
        }
    }

    /// The sidecar's path.
    pub fn sidecar(&self) -> PathBuf {
        match self {
            Destination::Dir(d) => d.join(SIDECAR_FILE),
            Destination::File(f) => f.with_extension("json"),
        }
    }

    /// No silent overwrite: fails for a folder that exists and is not empty, or a file (or its
    /// sidecar) that exists, unless `force` (then files of the same names are replaced; other
    /// files in the folder are left as they are). Also fails when `images` (the number of
    /// images the run keeps) is not 1 for a [`Destination::File`].
    pub fn check(&self, force: bool, images: usize) -> Result<()> {
        match self {
            Destination::Dir(d) => {
                if d.exists() && !d.is_dir() {
                    return Err(Error::InvalidInput(format!(
                        "output folder {} exists and is not a folder",
                        d.display()
                    )));
                }
                let non_empty = d.is_dir()
                    && std::fs::read_dir(d)
                        .map_err(|source| Error::Io {
                            path: d.clone(),
                            source,
                        })?
                        .next()
                        .is_some();
                if non_empty && !force {
                    return Err(Error::InvalidInput(format!(
                        "output folder {} is not empty; choose another with -o, or pass --force \
                         to write into it (replacing files of the same names)",
                        d.display()
                    )));
                }
            }
            Destination::File(f) => {
                if images != 1 {
                    return Err(Error::InvalidInput(format!(
                        "-o {} names one PNG, but the run keeps {images} images; give a folder \
                         (or -n 1, or --rerank 1)",
                        f.display()
                    )));
                }
                for p in [f.clone(), self.sidecar()] {
                    if p.symlink_metadata().is_ok() && !force {
                        return Err(Error::InvalidInput(format!(
                            "{} already exists; pass --force to replace it",
                            p.display()
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Everything written besides the generation itself.
#[derive(Clone, Copy, Debug)]
pub struct RunRecord<'a> {
    pub prompt: &'a PromptInfo,
    /// The prompt was given as tokenizer ids (PNG parameters record them).
    pub prompt_is_ids: bool,
    /// Words the tokenizer did not know.
    pub unknown_words: &'a [String],
    pub params: &'a SamplingParams,
    /// The top-k over image tokens the sampler applied (`None`: no cut), also when it came
    /// from `filter_thres`.
    pub top_k_used: Option<usize>,
    pub init_rows: Option<u64>,
    pub rerank: Option<&'a Rerank>,
    pub provenance: Option<&'a Provenance>,
    /// Write only this candidate (`generate --from`: the others were sampled to reach its
    /// stream).
    pub only: Option<usize>,
}

impl<'a> RunRecord<'a> {
    /// A record with nothing but the prompt and settings.
    pub fn new(prompt: &'a PromptInfo, params: &'a SamplingParams) -> RunRecord<'a> {
        RunRecord {
            prompt,
            prompt_is_ids: false,
            unknown_words: &[],
            params,
            top_k_used: params.top_k,
            init_rows: None,
            rerank: None,
            provenance: None,
            only: None,
        }
    }
}

/// Which candidates are written, in order, and the duplicates reranking skipped.
struct Selection {
    order: Vec<usize>,
    /// (skipped candidate, the kept candidate with the same tokens).
    duplicates: Vec<(usize, usize)>,
}

fn select(generation: &Generation, record: &RunRecord) -> Result<Selection> {
    let n = generation.tokens.len();
    if let Some(c) = record.only {
        if c >= n {
            return Err(Error::InvalidInput(format!(
                "candidate {c} of a run of {n}"
            )));
        }
        return Ok(Selection {
            order: vec![c],
            duplicates: vec![],
        });
    }
    let Some(r) = record.rerank else {
        return Ok(Selection {
            order: (0..n).collect(),
            duplicates: vec![],
        });
    };
    if r.scores.len() != n {
        return Err(Error::InvalidInput(format!(
            "rerank: {} scores for {n} candidates",
            r.scores.len()
        )));
    }
    // Best first; a candidate whose token grid equals a kept one's is skipped (same image).
    let mut order: Vec<usize> = vec![];
    let mut duplicates = vec![];
    for i in crate::clip::ranking(&r.scores) {
        if order.len() == r.keep.max(1) {
            break;
        }
        match order
            .iter()
            .find(|&&k| generation.tokens[k] == generation.tokens[i])
        {
            Some(&k) => duplicates.push((i, k)),
            None => order.push(i),
        }
    }
    Ok(Selection { order, duplicates })
}

#[derive(Serialize)]
struct Settings<'a> {
    candidates: usize,
    batch: usize,
    #[serde(flatten)]
    sampling: &'a SamplingParams,
    /// The top-k over image tokens actually applied (`null`: no cut).
    top_k_used: Option<usize>,
    init_rows: Option<u64>,
    primed_tokens: usize,
}

#[derive(Serialize)]
struct Candidate<'a> {
    index: usize,
    /// Seed and ChaCha20 stream of its draws.
    seed: u64,
    stream: usize,
    /// The PNG written for it (`None`: dropped by reranking).
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clip_score: Option<f32>,
    /// 0 = best CLIP score.
    #[serde(skip_serializing_if = "Option::is_none")]
    rank: Option<usize>,
    /// Skipped by reranking: the same tokens as this kept candidate.
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate_of: Option<usize>,
    image_tokens: &'a [u32],
}

#[derive(Serialize)]
struct RerankRecord {
    kept: usize,
    /// Candidates skipped because their token grid equals a better-ranked kept one's.
    duplicates_skipped: usize,
    /// Candidate indices from best to worst score.
    order: Vec<usize>,
}

#[derive(Serialize)]
struct TimingsRecord {
    prime_ms: f64,
    prefill_ms: f64,
    broadcast_ms: f64,
    decoder_steps: usize,
    step_mean_ms: f64,
    /// Mean per-step time outside ONNX Runtime's run (sampling, state handling, bookkeeping).
    step_overhead_mean_ms: f64,
    /// Share of the sampling loop spent inside ONNX Runtime's run.
    ort_run_share: f64,
    decode_ms: f64,
    /// Admission to decoded pixels; sessions were created before (`session_load_ms`).
    total_ms: f64,
    session_load_ms: f64,
}

#[derive(Serialize)]
struct Sidecar<'a> {
    #[serde(flatten)]
    prompt: &'a PromptInfo,
    unknown_words: &'a [String],
    seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<&'a Provenance>,
    settings: Settings<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rerank: Option<RerankRecord>,
    candidates: Vec<Candidate<'a>>,
    timings: TimingsRecord,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Writes the PNGs, grid and sidecar into `dir` (created if needed); returns the files written.
pub fn write(
    dir: &Path,
    generation: &Generation,
    prompt: &PromptInfo,
    params: &SamplingParams,
    init_rows: Option<u64>,
) -> Result<Vec<PathBuf>> {
    write_reranked(dir, generation, prompt, params, init_rows, None)
}

/// [`write()`], reranked: with `rerank`, only the best `keep` distinct candidates are written,
/// as [`ranked_file`]s in score order (the grid too), and every score goes into the sidecar.
pub fn write_reranked(
    dir: &Path,
    generation: &Generation,
    prompt: &PromptInfo,
    params: &SamplingParams,
    init_rows: Option<u64>,
    rerank: Option<&Rerank>,
) -> Result<Vec<PathBuf>> {
    let record = RunRecord {
        init_rows,
        rerank,
        ..RunRecord::new(prompt, params)
    };
    write_run(&Destination::Dir(dir.to_path_buf()), generation, &record)
}

/// Writes a run to `dest` (folders created as needed; see the module docs). Does not check for
/// existing files: call [`Destination::check`] before generating.
pub fn write_run(
    dest: &Destination,
    generation: &Generation,
    record: &RunRecord,
) -> Result<Vec<PathBuf>> {
    let n = generation.tokens.len();
    let sel = select(generation, record)?;
    if let Destination::File(f) = dest
        && sel.order.len() != 1
    {
        return Err(Error::InvalidInput(format!(
            "{} names one PNG, but the run keeps {} images",
            f.display(),
            sel.order.len()
        )));
    }
    let ranking = record.rerank.map(|r| crate::clip::ranking(&r.scores));
    let file_of = |index: usize| -> Option<String> {
        let pos = sel.order.iter().position(|&i| i == index)?;
        Some(match dest {
            Destination::File(f) => f.file_name().map_or_else(
                || candidate_name(index, n),
                |s| s.to_string_lossy().into_owned(),
            ),
            Destination::Dir(_) if record.rerank.is_some() => ranked_name(pos, index, n),
            Destination::Dir(_) => candidate_name(index, n),
        })
    };
    let dir = match dest {
        Destination::Dir(d) => d.clone(),
        Destination::File(f) => match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
    };
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;

    let p = record.params;
    let text_ids = record.prompt_is_ids.then(|| {
        let ids = &record.prompt.text_token_ids;
        let len = ids.iter().rposition(|&t| t != 0).map_or(0, |i| i + 1);
        ids[..len].to_vec()
    });
    let parameters = |candidate: Option<usize>, size: (u32, u32)| {
        ImageParameters {
            prompt: record.prompt.prompt.clone(),
            text_ids: text_ids.clone(),
            seed: p.seed,
            candidate,
            candidates: n,
            top_k: p.top_k,
            filter_thres: p.filter_thres,
            top_p: p.top_p,
            temperature: p.temperature,
            cond_scale: p.cond_scale,
            init_rows: (generation.primed > 0)
                .then_some(record.init_rows)
                .flatten(),
            size,
            model_hash: record.provenance.map(Provenance::model_hash),
            model: record.provenance.and_then(Provenance::model_name),
            version: record.provenance.map_or_else(
                || format!("dalle {}", env!("CARGO_PKG_VERSION")),
                |v| v.runtime.clone(),
            ),
        }
        .to_text()
    };

    let mut images = Vec::with_capacity(sel.order.len());
    let mut written = vec![];
    for &i in &sel.order {
        let px = generation.pixels.index_axis(Axis(0), i);
        let img = preprocess::from_chw_tensor(px)?;
        let path = dir.join(file_of(i).unwrap_or_else(|| candidate_name(i, n)));
        let text = parameters(Some(i), img.dimensions());
        crate::pngtext::save(&img, &path, Some(&text))?;
        written.push(path);
        images.push(img);
    }
    if matches!(dest, Destination::Dir(_)) && images.len() > 1 {
        let grid_image = grid(&images);
        let grid_path = dir.join(GRID_FILE);
        let text = parameters(None, grid_image.dimensions());
        crate::pngtext::save(&grid_image, &grid_path, Some(&text))?;
        written.push(grid_path);
    }

    let t = &generation.timings;
    let duplicate_of = |i: usize| sel.duplicates.iter().find(|d| d.0 == i).map(|d| d.1);
    let sidecar = Sidecar {
        prompt: record.prompt,
        unknown_words: record.unknown_words,
        seed: p.seed,
        provenance: record.provenance,
        settings: Settings {
            candidates: n,
            batch: generation.batch,
            sampling: p,
            top_k_used: record.top_k_used,
            init_rows: (generation.primed > 0)
                .then_some(record.init_rows)
                .flatten(),
            primed_tokens: generation.primed,
        },
        rerank: ranking.as_ref().map(|order| RerankRecord {
            kept: sel.order.len(),
            duplicates_skipped: sel.duplicates.len(),
            order: order.clone(),
        }),
        candidates: generation
            .tokens
            .iter()
            .enumerate()
            .map(|(index, tokens)| Candidate {
                index,
                seed: p.seed,
                stream: index,
                file: file_of(index),
                clip_score: record.rerank.and_then(|r| r.scores.get(index).copied()),
                rank: ranking
                    .as_ref()
                    .and_then(|o| o.iter().position(|&i| i == index)),
                duplicate_of: duplicate_of(index),
                image_tokens: tokens,
            })
            .collect(),
        timings: TimingsRecord {
            prime_ms: ms(t.prime),
            prefill_ms: ms(t.sampling.prefill),
            broadcast_ms: ms(t.sampling.broadcast),
            decoder_steps: t.sampling.steps,
            step_mean_ms: ms(t.sampling.step_mean()),
            step_overhead_mean_ms: ms(t.sampling.overhead_mean()),
            ort_run_share: t.sampling.model_share(),
            decode_ms: ms(t.decode),
            total_ms: ms(t.total),
            session_load_ms: ms(t.load),
        },
    };
    let json = compact_json::to_string(&sidecar)
        .map_err(|e| Error::InvalidInput(format!("sidecar: {e}")))?;
    let path = dest.sidecar();
    crate::atomic::write(&path, json.as_bytes())?;
    written.push(path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn grids_are_near_square_with_a_gutter() {
        assert_eq!(grid_shape(1), (1, 1));
        assert_eq!(grid_shape(2), (2, 1));
        assert_eq!(grid_shape(4), (2, 2));
        assert_eq!(grid_shape(5), (3, 2));
        assert_eq!(grid_shape(8), (3, 3));
        assert_eq!(grid_shape(9), (3, 3));
        assert_eq!(grid_shape(10), (4, 3));
        let img = RgbImage::from_pixel(2, 3, image::Rgb([9, 9, 9]));
        let g = grid(&[img.clone(), img.clone(), img]);
        // 2 columns of 2 px and 2 rows of 3 px, 2 px between them.
        assert_eq!(g.dimensions(), (6, 8));
        assert_eq!(g.get_pixel(0, 0).0, [9, 9, 9]);
        assert_eq!(g.get_pixel(2, 0).0, GUTTER_COLOUR, "gutter");
        assert_eq!(g.get_pixel(5, 7).0, GUTTER_COLOUR, "empty cell");
        assert_eq!(g.get_pixel(0, 7).0, [9, 9, 9]);
        assert_eq!(gutter(256), 8);
    }

    #[test]
    fn names_are_zero_padded_for_the_count() {
        assert_eq!(candidate_file(7), "candidate_07.png");
        assert_eq!(candidate_name(7, 101), "candidate_007.png");
        assert_eq!(ranked_file(0, 7), "rank_00_candidate_07.png");
        assert_eq!(
            numbered_files(Path::new("out/img.png"), 1),
            vec![PathBuf::from("out/img.png")]
        );
        assert_eq!(
            numbered_files(Path::new("out/img.png"), 3)[2],
            PathBuf::from("out/img_02.png")
        );
        assert_eq!(
            numbered_files(Path::new("img"), 120)[5],
            PathBuf::from("img_005.png")
        );
    }

    #[test]
    fn destinations_refuse_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let d = Destination::from_path(&dir.path().join("new"));
        assert!(matches!(d, Destination::Dir(_)));
        d.check(false, 4).unwrap();
        let d = Destination::Dir(dir.path().to_path_buf());
        d.check(false, 4).unwrap();
        std::fs::write(dir.path().join("x"), b"").unwrap();
        let e = d.check(false, 4).unwrap_err().to_string();
        assert!(e.contains("not empty") && e.contains("--force"), "{e}");
        d.check(true, 4).unwrap();
        let f = Destination::from_path(&dir.path().join("one.PNG"));
        assert_eq!(f.sidecar(), dir.path().join("one.json"));
        f.check(false, 1).unwrap();
        assert!(
            f.check(false, 2)
                .unwrap_err()
                .to_string()
                .contains("keeps 2 images")
        );
        std::fs::write(dir.path().join("one.PNG"), b"").unwrap();
        assert!(f.check(false, 1).is_err());
        f.check(true, 1).unwrap();
    }
}
