//! The ONNX Runtime model of whatever family a bundle holds, for the callers that open a
//! bundle by path (`dalle-ort generate`, the server): [`OrtDallePytorch`] or [`OrtMinDalle`],
//! one [`ImageTokenModel`] by delegation.

use super::batch::BatchPrompt;
use super::dalle_pytorch::{LoadTimings, OrtDallePytorch};
use super::min_dalle::OrtMinDalle;
use super::model::{ImageGeometry, ImageTokenModel, Prefill, Slot, StepCost};
use crate::bundle::Bundle;
use crate::error::Result;
use crate::generate::OrtState;
use crate::sampling::Guidance;
use dalle_bundle::ModelFamily;
use image::RgbImage;
use ndarray::Array4;
use std::time::Instant;

/// See the module docs.
pub enum OrtModel {
    DallePytorch(OrtDallePytorch),
    MinDalle(OrtMinDalle),
}

impl OrtModel {
    /// Opens the model of `bundle` by its manifest's family (see the families' `from_bundle`).
    pub fn from_bundle(bundle: Bundle, max_rows: Option<usize>) -> Result<(OrtModel, LoadTimings)> {
        if bundle.manifest().family == ModelFamily::MinDalle {
            let started = Instant::now();
            let m = OrtMinDalle::from_bundle(bundle, max_rows)?;
            let timings = LoadTimings {
                sessions: started.elapsed(),
            };
            return Ok((OrtModel::MinDalle(m), timings));
        }
        let (m, timings) = OrtDallePytorch::from_bundle(bundle, max_rows)?;
        Ok((OrtModel::DallePytorch(m), timings))
    }

    /// The bundle (its CLIP and image-decoder sessions).
    pub fn bundle_mut(&mut self) -> &mut Bundle {
        match self {
            OrtModel::DallePytorch(m) => m.codec_mut().bundle_mut(),
            OrtModel::MinDalle(m) => m.bundle_mut(),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            OrtModel::DallePytorch($m) => $e,
            OrtModel::MinDalle($m) => $e,
        }
    };
}

impl ImageTokenModel for OrtModel {
    type Prompt = BatchPrompt<OrtState>;

    fn geometry(&self) -> ImageGeometry {
        delegate!(self, m => m.geometry())
    }

    fn max_rows(&self) -> usize {
        delegate!(self, m => m.max_rows())
    }

    fn guidance(&self) -> Guidance {
        delegate!(self, m => m.guidance())
    }

    fn prefill(
        &mut self,
        text: &[u32],
        prime: &[u32],
        guided: bool,
    ) -> Result<Prefill<Self::Prompt>> {
        delegate!(self, m => m.prefill(text, prime, guided))
    }

    fn join(&mut self, prompt: &Self::Prompt, sources: &[usize]) -> Result<Vec<Slot>> {
        delegate!(self, m => m.join(prompt, sources))
    }

    fn rows_after_join(&self, n: usize) -> usize {
        delegate!(self, m => m.rows_after_join(n))
    }

    fn release(&mut self, prompt: Self::Prompt) {
        delegate!(self, m => m.release(prompt))
    }

    fn leave(&mut self, slots: &[Slot]) -> Result<()> {
        delegate!(self, m => m.leave(slots))
    }

    fn step(&mut self, feeds: &[(Slot, u32)]) -> Result<StepCost> {
        delegate!(self, m => m.step(feeds))
    }

    fn logits(&self, slot: Slot) -> Result<&[f32]> {
        delegate!(self, m => m.logits(slot))
    }

    fn encode_prime(&mut self, image: &RgbImage, rows: usize) -> Result<Vec<u32>> {
        delegate!(self, m => m.encode_prime(image, rows))
    }

    fn decode_images(&mut self, grids: &[Vec<u32>]) -> Result<Array4<f32>> {
        delegate!(self, m => m.decode_images(grids))
    }
}
