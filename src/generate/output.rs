//! Writing a generation: `candidate_NN.png` per candidate, a near-square `grid.png`, and the
//! `generation.json` sidecar (prompt, tokens, settings, timings).

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

/// `candidate_00.png`, `candidate_01.png`, ...
pub fn candidate_file(index: usize) -> String {
    format!("candidate_{index:02}.png")
}

/// `rank_00_candidate_07.png`: a reranked candidate's file (rank first, so names sort by score).
pub fn ranked_file(rank: usize, index: usize) -> String {
    format!("rank_{rank:02}_{}", candidate_file(index))
}

/// CLIP reranking of a generation: every candidate's score and how many to keep.
#[derive(Clone, Debug)]
pub struct Rerank {
    /// `exp(logit_scale) · cos(prompt, candidate)`, one per candidate.
    pub scores: Vec<f32>,
    /// Candidates written (the best `keep`, in score order).
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

/// The images side by side, row-major, on a black background.
pub fn grid(images: &[RgbImage]) -> RgbImage {
    let (cols, rows) = grid_shape(images.len());
    let w = images.iter().map(RgbImage::width).max().unwrap_or(0);
    let h = images.iter().map(RgbImage::height).max().unwrap_or(0);
    let mut out = RgbImage::new(w * cols as u32, h * rows as u32);
    for (i, img) in images.iter().enumerate() {
        let (x, y) = ((i % cols) as u32 * w, (i / cols) as u32 * h);
        image::imageops::replace(&mut out, img, i64::from(x), i64::from(y));
    }
    out
}

#[derive(Serialize)]
struct Settings<'a> {
    candidates: usize,
    batch: usize,
    #[serde(flatten)]
    sampling: &'a SamplingParams,
    init_rows: Option<u64>,
    primed_tokens: usize,
}

#[derive(Serialize)]
struct Candidate<'a> {
    index: usize,
    /// The PNG written for it (`None`: dropped by reranking).
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clip_score: Option<f32>,
    /// 0 = best CLIP score.
    #[serde(skip_serializing_if = "Option::is_none")]
    rank: Option<usize>,
    image_tokens: &'a [u32],
}

#[derive(Serialize)]
struct RerankRecord {
    kept: usize,
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
    seed: u64,
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

/// [`write()`], reranked: with `rerank`, only the best `keep` candidates are written, as
/// [`ranked_file`]s in score order (the grid too), and every score goes into the sidecar.
pub fn write_reranked(
    dir: &Path,
    generation: &Generation,
    prompt: &PromptInfo,
    params: &SamplingParams,
    init_rows: Option<u64>,
    rerank: Option<&Rerank>,
) -> Result<Vec<PathBuf>> {
    let n = generation.tokens.len();
    if let Some(r) = rerank
        && r.scores.len() != n
    {
        return Err(Error::InvalidInput(format!(
            "rerank: {} scores for {n} candidates",
            r.scores.len()
        )));
    }
    let order: Vec<usize> = match rerank {
        Some(r) => crate::clip::ranking(&r.scores)
            .into_iter()
            .take(r.keep.max(1))
            .collect(),
        None => (0..n).collect(),
    };
    let file_of = |index: usize| -> Option<String> {
        match rerank {
            Some(_) => order
                .iter()
                .position(|&i| i == index)
                .map(|rank| ranked_file(rank, index)),
            None => Some(candidate_file(index)),
        }
    };
    let rank_of = |index: usize| -> Option<usize> {
        rerank.and_then(|r| {
            crate::clip::ranking(&r.scores)
                .iter()
                .position(|&i| i == index)
        })
    };
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut images = Vec::with_capacity(order.len());
    let mut written = vec![];
    for &i in &order {
        let px = generation.pixels.index_axis(Axis(0), i);
        let img = preprocess::from_chw_tensor(px)?;
        let path = dir.join(file_of(i).unwrap_or_else(|| candidate_file(i)));
        preprocess::save_png(&img, &path)?;
        written.push(path);
        images.push(img);
    }
    let grid_path = dir.join(GRID_FILE);
    preprocess::save_png(&grid(&images), &grid_path)?;
    written.push(grid_path);

    let t = &generation.timings;
    let sidecar = Sidecar {
        prompt,
        seed: params.seed,
        settings: Settings {
            candidates: generation.tokens.len(),
            batch: generation.batch,
            sampling: params,
            init_rows: (generation.primed > 0).then_some(init_rows).flatten(),
            primed_tokens: generation.primed,
        },
        rerank: rerank.map(|r| RerankRecord {
            kept: order.len(),
            order: crate::clip::ranking(&r.scores),
        }),
        candidates: generation
            .tokens
            .iter()
            .enumerate()
            .map(|(index, tokens)| Candidate {
                index,
                file: file_of(index),
                clip_score: rerank.and_then(|r| r.scores.get(index).copied()),
                rank: rank_of(index),
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
    let json = serde_json::to_string_pretty(&sidecar)
        .map_err(|e| Error::InvalidInput(format!("sidecar: {e}")))?;
    let path = dir.join(SIDECAR_FILE);
    std::fs::write(&path, json + "\n").map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    written.push(path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_are_near_square() {
        assert_eq!(grid_shape(1), (1, 1));
        assert_eq!(grid_shape(2), (2, 1));
        assert_eq!(grid_shape(4), (2, 2));
        assert_eq!(grid_shape(5), (3, 2));
        assert_eq!(grid_shape(8), (3, 3));
        assert_eq!(grid_shape(9), (3, 3));
        assert_eq!(grid_shape(10), (4, 3));
        let img = RgbImage::from_pixel(2, 3, image::Rgb([9, 9, 9]));
        let g = grid(&[img.clone(), img.clone(), img]);
        assert_eq!(g.dimensions(), (4, 6));
        assert_eq!(g.get_pixel(3, 2).0, [9, 9, 9]);
        assert_eq!(g.get_pixel(3, 5).0, [0, 0, 0], "empty cell stays black");
        assert_eq!(candidate_file(7), "candidate_07.png");
    }
}
