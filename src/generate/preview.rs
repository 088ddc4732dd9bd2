//! Progressive previews of a run (`dalle-ort generate --preview-every K`): every K sampled
//! tokens, each candidate's partial token grid is decoded and written as
//! `preview_<candidate>_<tokens>.png` (`tokens`: tokens in its grid so far, primed included),
//! and with `--seamless` also the candidates' grids tiled as one image,
//! `preview_seamless_<tokens>.png`; the same images the run writes at its end, partway.
//!
//! Why here: the decision of which previews exist ([`PreviewPlan`]: bounds, names, count) is
//! one place the CLI, its help and its tests share; the files are written like the final ones
//! (atomically, never through a symlink: [`crate::pngtext::save`]).
//!
//! Unsampled cells take the codebook's last code ([`FILL`]), as min-dalle's progressive
//! outputs and the server's partial images do. A candidate's preview at its last token is
//! written after the run from its finished tokens (the engine has let the request go by then),
//! decoded alone like every preview: it is the final image. With `--rerank` every candidate
//! gets previews (the ranking comes at the end); with `--from` only the candidate kept.

use super::output::index_width;
use crate::engine::{Engine, EngineError, Event, ImageTokenModel, OrtModel, RequestId};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The code of every cell not sampled yet: clamped to the codebook's last code by
/// [`Engine::preview_tokens`].
pub const FILL: u32 = u32::MAX;

/// Which previews a run writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewPlan {
    /// A preview every `every` sampled tokens.
    pub every: usize,
    /// Tokens per image (the grid's).
    pub tokens: usize,
    /// Tokens given before sampling (an init image's rows).
    pub primed: usize,
    pub candidates: usize,
    /// Only this candidate is kept (`--from`): only its previews are written.
    pub only: Option<usize>,
    /// Also the tiled image of every candidate (`--seamless`).
    pub seamless: bool,
}

impl PreviewPlan {
    /// Checks `every` against the tokens sampled per image: at least 1 and at most that many
    /// (a larger K would write no preview at all, which is refused rather than ignored).
    pub fn new(
        every: usize,
        tokens: usize,
        primed: usize,
        candidates: usize,
        only: Option<usize>,
        seamless: bool,
    ) -> Result<PreviewPlan> {
        let sampled = tokens.saturating_sub(primed);
        if every == 0 {
            return Err(Error::InvalidInput(
                "--preview-every 0: K must be at least 1".into(),
            ));
        }
        if every > sampled {
            return Err(Error::InvalidInput(format!(
                "--preview-every {every}: each image samples only {sampled} tokens ({tokens} in \
                 its grid, {primed} primed), so no preview would be written; give K in [1, \
                 {sampled}]"
            )));
        }
        Ok(PreviewPlan {
            every,
            tokens,
            primed,
            candidates,
            only,
            seamless,
        })
    }

    /// Tokens sampled per image.
    pub fn sampled(&self) -> usize {
        self.tokens.saturating_sub(self.primed)
    }

    /// Previews per image: at K, 2K, ... sampled tokens (the last one at the last token when
    /// K divides the count).
    pub fn per_image(&self) -> usize {
        self.sampled() / self.every
    }

    /// Whether candidate `c` gets previews.
    pub fn previews_candidate(&self, c: usize) -> bool {
        c < self.candidates && self.only.is_none_or(|o| o == c)
    }

    /// Files the run writes.
    pub fn file_count(&self) -> usize {
        let images = (0..self.candidates)
            .filter(|&c| self.previews_candidate(c))
            .count()
            + usize::from(self.seamless);
        images * self.per_image()
    }

    fn token_width(&self) -> usize {
        self.tokens.to_string().len()
    }

    /// `preview_03_064.png`: candidate 3 with 64 tokens in its grid (numbers zero-padded as
    /// the candidate files' and to the grid's token count).
    pub fn candidate_file(&self, candidate: usize, tokens: usize) -> String {
        format!(
            "preview_{candidate:0w$}_{tokens:0t$}.png",
            w = index_width(self.candidates),
            t = self.token_width()
        )
    }

    /// `preview_seamless_064.png`: the tiled image with 64 tokens in each candidate's grid.
    pub fn seamless_file(&self, tokens: usize) -> String {
        format!("preview_seamless_{tokens:0t$}.png", t = self.token_width())
    }
}

/// Writes a run's previews as its steps go (see the module docs).
#[derive(Debug)]
pub struct Previews {
    plan: PreviewPlan,
    dir: PathBuf,
    /// Tokens sampled so far per candidate.
    sampled: Vec<usize>,
    /// Tiled previews written so far.
    seamless_written: usize,
    written: Vec<PathBuf>,
}

impl Previews {
    /// Previews into the output folder `dir` (created when missing).
    pub fn new(plan: PreviewPlan, dir: &Path) -> Result<Previews> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Previews {
            sampled: vec![0; plan.candidates],
            plan,
            dir: dir.to_path_buf(),
            seamless_written: 0,
            written: vec![],
        })
    }

    /// The files written so far, in order.
    pub fn written(&self) -> &[PathBuf] {
        &self.written
    }

    /// After each engine step of request `id`: the previews its events make due (all but the
    /// last token's, which [`Previews::finish`] writes).
    pub fn observe(
        &mut self,
        engine: &mut Engine<OrtModel>,
        id: RequestId,
        events: &[Event],
    ) -> std::result::Result<(), EngineError> {
        let (every, last) = (self.plan.every, self.plan.sampled());
        for e in events {
            let &Event::Token {
                request, candidate, ..
            } = e
            else {
                continue;
            };
            let Some(n) = self.sampled.get_mut(candidate).filter(|_| request == id) else {
                continue;
            };
            *n += 1;
            let n = *n;
            if !n.is_multiple_of(every) || n >= last || !self.plan.previews_candidate(candidate) {
                continue;
            }
            let pixels = engine.preview(id, candidate, FILL)?.ok_or_else(|| {
                Error::InvalidInput(format!("engine: candidate {candidate} is not running"))
            })?;
            let name = self.plan.candidate_file(candidate, self.plan.primed + n);
            self.save(&pixels, &name)?;
        }
        if self.plan.seamless {
            let least = self.sampled.iter().copied().min().unwrap_or(0);
            while (self.seamless_written + 1) * every <= least
                && (self.seamless_written + 1) * every < last
            {
                let grids = (0..self.plan.candidates)
                    .map(|c| engine.preview_tokens(id, c, FILL))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        Error::InvalidInput("engine: the request is not running".into())
                    })?;
                self.seamless_written += 1;
                let n = self.seamless_written * every;
                self.save_seamless(engine, &grids, self.plan.primed + n)?;
            }
        }
        Ok(())
    }

    /// After the run, with every candidate's finished tokens: the previews at the last token
    /// (when K divides the tokens sampled), each candidate decoded alone.
    pub fn finish(&mut self, engine: &mut Engine<OrtModel>, tokens: &[Vec<u32>]) -> Result<()> {
        if !self.plan.sampled().is_multiple_of(self.plan.every) {
            return Ok(());
        }
        for (c, grid) in tokens.iter().enumerate() {
            if !self.plan.previews_candidate(c) {
                continue;
            }
            let pixels = engine
                .model_mut()
                .decode_images(std::slice::from_ref(grid))?;
            self.save(&pixels, &self.plan.candidate_file(c, self.plan.tokens))?;
        }
        if self.plan.seamless {
            self.save_seamless(engine, tokens, self.plan.tokens)?;
        }
        Ok(())
    }

    fn save(&mut self, pixels: &ndarray::Array4<f32>, name: &str) -> Result<()> {
        let image = pixels
            .outer_iter()
            .next()
            .ok_or_else(|| Error::InvalidInput("preview: the decoder returned no image".into()))?;
        let image = crate::preprocess::from_chw_tensor(image)?;
        self.write(&image, name)
    }

    fn save_seamless(
        &mut self,
        engine: &mut Engine<OrtModel>,
        grids: &[Vec<u32>],
        tokens: usize,
    ) -> Result<()> {
        let grid = engine.model().geometry().grid;
        let tiles = crate::engine::seamless_tokens(grids, grid)?;
        let images = crate::dvae::decode(engine.model_mut().bundle_mut(), &tiles)?;
        let image = images
            .first()
            .ok_or_else(|| Error::InvalidInput("preview: the decoder returned no image".into()))?;
        let name = self.plan.seamless_file(tokens);
        self.write(image, &name)
    }

    fn write(&mut self, image: &image::RgbImage, name: &str) -> Result<()> {
        let path = self.dir.join(name);
        crate::pngtext::save(image, &path, None)?;
        self.written.push(path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bounds_counts_and_names() {
        assert!(PreviewPlan::new(0, 256, 0, 1, None, false).is_err());
        let e = PreviewPlan::new(257, 256, 0, 1, None, false).unwrap_err();
        assert!(e.to_string().contains("only 256 tokens"), "{e}");
        // Priming leaves fewer tokens to sample.
        assert!(PreviewPlan::new(200, 256, 64, 1, None, false).is_err());
        let p = PreviewPlan::new(64, 256, 0, 4, None, true).unwrap();
        assert_eq!((p.per_image(), p.file_count()), (4, 20));
        assert_eq!(p.candidate_file(3, 64), "preview_03_064.png");
        assert_eq!(p.seamless_file(256), "preview_seamless_256.png");
        let p = PreviewPlan::new(100, 256, 0, 101, Some(7), false).unwrap();
        assert_eq!((p.per_image(), p.file_count()), (2, 2));
        assert_eq!(p.candidate_file(7, 200), "preview_007_200.png");
        assert!(!p.previews_candidate(6));
        let p = PreviewPlan::new(1, 16, 0, 1, None, false).unwrap();
        assert_eq!(p.candidate_file(0, 5), "preview_00_05.png");
    }
}
