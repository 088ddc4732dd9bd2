//! The family-neutral seam between the engine and a model: text ids and image codes in, image
//! logits per row slot out.
//!
//! The engine never builds decoder input ids: a DALLE-pytorch decoder wants one unified
//! vocabulary ([`super::DallePytorch`]), an encoder-decoder model (DALL·E mini/mega) runs its
//! text encoder once per prompt and feeds cross-attention state. Both plug in behind
//! [`ImageTokenModel`]: prefill a prompt once, place copies of its rows into row slots, step every
//! occupied slot with one image code, read each slot's logits, free slots.

use crate::error::Result;
use crate::sampling::Guidance;
use image::RgbImage;
use ndarray::Array4;
use std::time::Duration;

/// A row of the running decoder batch, as the model numbers it (stable while occupied).
pub type Slot = usize;

/// A prefilled prompt: its rows (row 0 conditional; row 1 unconditional when guided).
pub struct Prefill<P> {
    /// The model's prompt state.
    pub prompt: P,
    /// Rows of the prompt state.
    pub rows: usize,
    /// Wall time of the prefill.
    pub time: Duration,
}

/// What one [`ImageTokenModel::step`] cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepCost {
    /// Decoder calls made (one per row group; 0 when nothing was fed).
    pub calls: usize,
    /// Rows computed, idle ones included.
    pub rows: usize,
    /// Time inside the model runs.
    pub model: Duration,
}

/// Facts the engine needs about the image token grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageGeometry {
    /// Tokens per row and column of the grid.
    pub grid: usize,
    /// Codebook size (codes are `0..vocab`).
    pub vocab: usize,
    /// The full vocabulary DALLE-pytorch's `filter_thres` counts (text + image); the image
    /// vocabulary for families without a unified vocabulary.
    pub total_vocab: usize,
}

impl ImageGeometry {
    /// Tokens per image (`grid²`).
    pub fn tokens(&self) -> usize {
        self.grid * self.grid
    }
}

/// A text-to-image-token model driven step by step. See the module docs.
pub trait ImageTokenModel {
    /// A prefilled prompt (cheap to keep while its candidates wait for slots).
    type Prompt;

    fn geometry(&self) -> ImageGeometry;

    /// The most rows one decoder call may hold (the graph's batch range).
    fn max_rows(&self) -> usize;

    /// How guided rows are combined ([`Guidance::Cfg`] unless the model family says otherwise).
    fn guidance(&self) -> Guidance {
        Guidance::Cfg
    }

    /// Runs the prompt (`text`: tokenizer ids, 0 = padding; `prime`: image codes fixed at the
    /// start) once, with an unconditional row after it when `guided`.
    fn prefill(
        &mut self,
        text: &[u32],
        prime: &[u32],
        guided: bool,
    ) -> Result<Prefill<Self::Prompt>>;

    /// Places copies of prompt rows into free slots: slot `i` of the result starts as row
    /// `sources[i]` of `prompt`, its logits those of the prompt's last position.
    fn join(&mut self, prompt: &Self::Prompt, sources: &[usize]) -> Result<Vec<Slot>>;

    /// Rows one decoder call would hold after `n` more rows join (free rows are reused first).
    fn rows_after_join(&self, n: usize) -> usize;

    /// Takes back a prompt whose candidates have all joined (its buffers may be reused).
    fn release(&mut self, prompt: Self::Prompt) {
        drop(prompt);
    }

    /// Frees slots (their rows leave the batch at the next step).
    fn leave(&mut self, slots: &[Slot]) -> Result<()>;

    /// One decoder step: every occupied slot is fed exactly one image code (`feeds`), and its
    /// logits are replaced by the next position's.
    fn step(&mut self, feeds: &[(Slot, u32)]) -> Result<StepCost>;

    /// The image-code logits of an occupied slot's last position.
    fn logits(&self, slot: Slot) -> Result<&[f32]>;

    /// Image codes of a picture's first `rows` token rows (priming; needs an image encoder).
    fn encode_prime(&mut self, image: &RgbImage, rows: usize) -> Result<Vec<u32>>;

    /// Pixels f32 `[n, 3, H, W]` in [0, 1] of `n` complete token grids.
    fn decode_images(&mut self, grids: &[Vec<u32>]) -> Result<Array4<f32>>;
}
