//! The seeded draw ([`Sampler`], [`CandidateRng`]) and the whole per-row pipeline
//! ([`ImageTokenSampler`]: image range → CFG → filters → draw).

use super::filters::{
    FilterChain, LogitsFilter, Temperature, TopK, TopP, cfg_combine, supercondition_combine,
};
use super::{Guidance, SamplingParams};
use crate::error::{Error, Result};
use dalle_bundle::TokenLayout;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// The random stream of one candidate: ChaCha20 keyed by the seed, on stream = candidate index,
/// so candidate `i` draws the same numbers whatever batch it runs in.
#[derive(Clone, Debug)]
pub struct CandidateRng(ChaCha20Rng);

impl CandidateRng {
    pub fn new(seed: u64, candidate: u64) -> CandidateRng {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        rng.set_stream(candidate);
        CandidateRng(rng)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Draws an index from `softmax(logits)` by inverse CDF (one uniform number per draw); `-inf`
/// entries have probability 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sampler;

impl Sampler {
    /// The drawn index; errors if a logit is NaN or every logit is `-inf`.
    pub fn draw(&self, logits: &[f32], rng: &mut CandidateRng) -> Result<usize> {
        self.draw_with(logits, rng, &mut Vec::new())
    }

    /// [`Sampler::draw`] with a reusable buffer for the weights (each `exp` computed once).
    pub fn draw_with(
        &self,
        logits: &[f32],
        rng: &mut CandidateRng,
        weights: &mut Vec<f64>,
    ) -> Result<usize> {
        let mut max = f32::NEG_INFINITY;
        for &l in logits {
            if l.is_nan() {
                return Err(Error::InvalidInput(
                    "the decoder returned NaN logits; cannot sample".to_string(),
                ));
            }
            max = max.max(l);
        }
        if max == f32::NEG_INFINITY {
            return Err(Error::InvalidInput(
                "every image token was filtered out (all logits -inf); cannot sample".to_string(),
            ));
        }
        // exp in f32 (within an ulp of the f64 value, and faster), summed in f64.
        weights.clear();
        weights.extend(logits.iter().map(|&l| {
            if l == f32::NEG_INFINITY {
                0.0
            } else {
                f64::from((l - max).exp())
            }
        }));
        let total: f64 = weights.iter().sum();
        let target = rng.uniform() * total;
        let mut cumulative = 0.0;
        let mut last = 0;
        for (i, &w) in weights.iter().enumerate() {
            if w > 0.0 {
                cumulative += w;
                last = i;
                if cumulative > target {
                    return Ok(i);
                }
            }
        }
        // Rounding can leave `target` at the very top: the last possible token.
        Ok(last)
    }
}

/// Buffers [`ImageTokenSampler::sample`] reuses between calls (one per sampling thread).
#[derive(Clone, Debug, Default)]
pub struct SampleScratch {
    logits: Vec<f32>,
    weights: Vec<f64>,
    fused_weights: Vec<f32>,
    keys: Vec<u32>,
}

/// Turns rows of decoder logits into image codes: see the [module docs](super).
///
/// Without top-p, the top-k filter and the draw run fused ([`ImageTokenSampler::sample`]): the
/// k-th largest logit is selected over order-preserving integer keys and the draw skips what
/// top-k removes, instead of writing `-inf` into the row and scanning it again. The kept set,
/// the weights and their summation order are exactly those of [`TopK`] followed by
/// [`Sampler::draw`] (a test holds the two paths equal), so the codes drawn are the same.
#[derive(Debug)]
pub struct ImageTokenSampler {
    image_vocab: usize,
    cond_scale: Option<f32>,
    guidance: Guidance,
    chain: FilterChain,
    sampler: Sampler,
    /// The fused path's settings (`None` when top-p is on: the chain runs instead).
    fused: Option<Fused>,
}

#[derive(Clone, Copy, Debug)]
struct Fused {
    temperature: Option<Temperature>,
    top_k: Option<usize>,
}

/// An unsigned key whose order is `f32::total_cmp`'s.
fn order_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

impl ImageTokenSampler {
    /// Validates `params` and builds the chain for this token layout.
    pub fn new(params: &SamplingParams, layout: &TokenLayout) -> Result<ImageTokenSampler> {
        let offset = to_usize(layout.image_token_offset, "image_token_offset")?;
        let image_vocab = to_usize(layout.image_vocab_size, "image_vocab_size")?;
        let total_vocab = to_usize(layout.total_vocab_size, "total_vocab_size")?;
        if image_vocab == 0 || offset.checked_add(image_vocab) != Some(total_vocab) {
            return Err(Error::InvalidInput(format!(
                "token layout: image ids [{offset}, {offset}+{image_vocab}) must end the unified \
                 vocabulary of {total_vocab}"
            )));
        }
        Self::for_vocab(params, image_vocab, total_vocab)
    }

    /// Validates `params` and builds the chain for `image_vocab` codes; `total_vocab` is what
    /// `filter_thres` counts (DALLE-pytorch's unified vocabulary; `image_vocab` elsewhere).
    pub fn for_vocab(
        params: &SamplingParams,
        image_vocab: usize,
        total_vocab: usize,
    ) -> Result<ImageTokenSampler> {
        params.validate()?;
        if image_vocab == 0 || total_vocab < image_vocab {
            return Err(Error::InvalidInput(format!(
                "sampling over {image_vocab} image codes of a {total_vocab}-token vocabulary"
            )));
        }
        let mut chain = FilterChain::new();
        let temperature =
            (params.temperature != 1.0).then_some(Temperature(params.temperature as f32));
        if let Some(t) = temperature {
            chain = chain.with(t);
        }
        let top_k = params.effective_top_k(total_vocab, image_vocab);
        if let Some(k) = top_k {
            chain = chain.with(TopK(k));
        }
        let top_p = params.top_p.filter(|&p| p < 1.0);
        if let Some(p) = top_p {
            chain = chain.with(TopP(p));
        }
        Ok(ImageTokenSampler {
            image_vocab,
            cond_scale: params.guided().then_some(params.cond_scale as f32),
            guidance: Guidance::Cfg,
            chain,
            sampler: Sampler,
            fused: top_p.is_none().then_some(Fused { temperature, top_k }),
        })
    }

    /// Combines guided rows with `guidance`'s formula (default [`Guidance::Cfg`]).
    pub fn with_guidance(mut self, guidance: Guidance) -> ImageTokenSampler {
        self.guidance = guidance;
        self
    }

    /// Whether rows come in (conditional, unconditional) pairs.
    pub fn guided(&self) -> bool {
        self.cond_scale.is_some()
    }

    /// The image vocabulary (codes are `0..image_vocab`).
    pub fn image_vocab(&self) -> usize {
        self.image_vocab
    }

    /// The row itself when it has one entry per image code.
    fn image_part<'r>(&self, row: &'r [f32], which: &str) -> Result<&'r [f32]> {
        if row.len() == self.image_vocab {
            Ok(row)
        } else {
            Err(Error::InvalidInput(format!(
                "{which} logits row has {} entries; the image vocabulary has {}",
                row.len(),
                self.image_vocab
            )))
        }
    }

    /// Samples one image code from a conditional row of image-vocabulary logits and, when
    /// guided, its unconditional row. `scratch` is reused between calls.
    pub fn sample(
        &self,
        cond: &[f32],
        uncond: Option<&[f32]>,
        rng: &mut CandidateRng,
        scratch: &mut SampleScratch,
    ) -> Result<u32> {
        let cond = self.image_part(cond, "conditional")?;
        let SampleScratch {
            logits,
            weights,
            fused_weights,
            keys,
        } = scratch;
        logits.clear();
        if let Some(f) = self.fused
            && self.cond_scale.is_none()
            && f.temperature.is_none()
        {
            // Nothing rewrites the row: draw from it as it is.
            let code = draw_top_k(cond, f.top_k, rng, fused_weights, keys)?;
            return u32::try_from(code)
                .map_err(|_| Error::InvalidInput(format!("image code {code} too large")));
        }
        match (self.cond_scale, uncond) {
            (Some(scale), Some(uncond)) => {
                let uncond = self.image_part(uncond, "unconditional")?;
                logits.resize(self.image_vocab, 0.0);
                match self.guidance {
                    Guidance::Cfg => cfg_combine(cond, uncond, scale, logits),
                    Guidance::Supercondition => {
                        supercondition_combine(cond, uncond, scale, logits);
                    }
                }
            }
            (Some(_), None) => {
                return Err(Error::InvalidInput(
                    "guided sampling needs an unconditional logits row".to_string(),
                ));
            }
            (None, _) => logits.extend_from_slice(cond),
        }
        let code = match self.fused {
            Some(f) => {
                if let Some(t) = f.temperature {
                    t.apply(logits);
                }
                draw_top_k(logits, f.top_k, rng, fused_weights, keys)?
            }
            None => {
                self.chain.apply(logits);
                self.sampler.draw_with(logits, rng, weights)?
            }
        };
        u32::try_from(code).map_err(|_| Error::InvalidInput(format!("image code {code} too large")))
    }

    /// [`ImageTokenSampler::sample`] through the filter chain and [`Sampler`] (the unfused
    /// path; tests compare the two).
    #[cfg(test)]
    fn sample_unfused(&self, cond: &[f32], rng: &mut CandidateRng) -> Result<u32> {
        let mut logits = cond.to_vec();
        self.chain.apply(&mut logits);
        Ok(self.sampler.draw(&logits, rng)? as u32)
    }
}

/// Below this, `f32::exp` is exactly 0 (e^-104 is under half the smallest subnormal), so the
/// fused draw skips the call (a test checks the bound).
const EXP_UNDERFLOW: f32 = -104.0;

/// Bits of the first radix-select digit (a 4096-bucket histogram, 16 KB on the stack).
const RADIX_BITS: u32 = 12;

/// [`TopK`] then [`Sampler::draw_with`] in one pass over the row (see [`ImageTokenSampler`]).
/// The weights are `f64::from(expf(l − max))` of the kept entries (0 elsewhere), stored in
/// float32 (exact: the f64 is the f32 widened) and summed in f64 in index order, as the
/// unfused draw does.
fn draw_top_k(
    logits: &[f32],
    top_k: Option<usize>,
    rng: &mut CandidateRng,
    weights: &mut Vec<f32>,
    keys: &mut Vec<u32>,
) -> Result<usize> {
    let n = logits.len();
    let k = top_k.map(|k| k.max(1)).filter(|&k| k < n);
    let mut max = f32::NEG_INFINITY;
    let mut nan = false;
    // Histogram of the keys' top bits (radix select, first digit): the k-th largest key lies
    // in the first bucket, from the top, where the running count reaches k.
    let mut histogram = [0u32; 1 << RADIX_BITS];
    for &l in logits {
        nan |= l.is_nan();
        max = max.max(l);
        if k.is_some() {
            histogram[(order_key(l) >> (32 - RADIX_BITS)) as usize] += 1;
        }
    }
    if nan {
        return Err(Error::InvalidInput(
            "the decoder returned NaN logits; cannot sample".to_string(),
        ));
    }
    if max == f32::NEG_INFINITY {
        return Err(Error::InvalidInput(
            "every image token was filtered out (all logits -inf); cannot sample".to_string(),
        ));
    }
    // Kept: keys above the k-th largest, then the lowest-index entries equal to it.
    let (kth, mut ties_left) = match k {
        None => (0u32, usize::MAX),
        Some(k) => {
            let mut above_bucket = 0usize;
            let mut bucket = 0usize;
            for b in (0..histogram.len()).rev() {
                let c = histogram[b] as usize;
                if above_bucket + c >= k {
                    bucket = b;
                    break;
                }
                above_bucket += c;
            }
            // Second digit: the keys of that bucket, selected exactly.
            keys.clear();
            keys.extend(
                logits
                    .iter()
                    .map(|&l| order_key(l))
                    .filter(|&key| (key >> (32 - RADIX_BITS)) as usize == bucket),
            );
            let rank = k - above_bucket; // 1-based rank from the top within the bucket
            let at = keys.len() - rank;
            let (_, kth, right) = keys.select_nth_unstable(at);
            let kth = *kth;
            let above = above_bucket + right.iter().filter(|&&key| key > kth).count();
            (kth, k - above)
        }
    };
    weights.clear();
    weights.reserve(n);
    let mut total = 0.0f64;
    for &l in logits {
        let key = order_key(l);
        let kept = key > kth
            || (key == kth && ties_left > 0 && {
                ties_left -= 1;
                true
            });
        let x = l - max;
        let w = if kept && x >= EXP_UNDERFLOW {
            x.exp()
        } else {
            0.0
        };
        total += f64::from(w);
        weights.push(w);
    }
    let target = rng.uniform() * total;
    let mut cumulative = 0.0;
    let mut last = 0;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            cumulative += f64::from(w);
            last = i;
            if cumulative > target {
                return Ok(i);
            }
        }
    }
    Ok(last)
}

fn to_usize(v: u64, what: &str) -> Result<usize> {
    usize::try_from(v)
        .map_err(|_| Error::InvalidInput(format!("token layout: {what} {v} too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_exactly_zero_below_the_underflow_bound() {
        let mut x = EXP_UNDERFLOW;
        while x > -200.0 {
            assert_eq!(x.exp(), 0.0, "exp({x})");
            x -= 0.001;
        }
        assert!((EXP_UNDERFLOW + 1.0).exp() > 0.0);
    }

    /// The fused top-k draw picks exactly what the filter chain and the draw pick: random rows
    /// with many ties, every k, with and without temperature.
    #[test]
    fn fused_top_k_draw_equals_the_chain_then_the_draw() {
        let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            h
        };
        for trial in 0..400u64 {
            let n = 1 + (next() % 300) as usize;
            // Coarse values: many exact ties, negative zeros, a few -inf; every other trial
            // spread wide enough that most weights underflow (subnormal or 0).
            let scale = if trial % 2 == 0 { 0.5 } else { 11.7 };
            let row: Vec<f32> = (0..n)
                .map(|_| match next() % 23 {
                    0 => -0.0,
                    1 => f32::NEG_INFINITY,
                    v => (v as f32 - 11.0) * scale,
                })
                .collect();
            if row.iter().all(|&x| x == f32::NEG_INFINITY) {
                continue;
            }
            let k = 1 + (next() % (n as u64 + 3)) as usize;
            let temperature = if trial % 3 == 0 { 0.7 } else { 1.0 };
            let params = SamplingParams {
                top_k: Some(k),
                temperature,
                ..SamplingParams::default()
            };
            let s = ImageTokenSampler::for_vocab(&params, n, n).unwrap();
            assert!(s.fused.is_some());
            let mut scratch = SampleScratch::default();
            for stream in 0..4 {
                let mut a = CandidateRng::new(trial, stream);
                let mut b = a.clone();
                let fused = s.sample(&row, None, &mut a, &mut scratch).unwrap();
                let chain = s.sample_unfused(&row, &mut b).unwrap();
                assert_eq!(fused, chain, "trial {trial}, k {k}, row {row:?}");
            }
        }
    }

    fn layout(text: u64, image: u64) -> TokenLayout {
        TokenLayout {
            text_length: 2,
            text_vocab_size: text - 2,
            bos_id: 0,
            pad_id_base: text - 2,
            image_grid: 2,
            image_vocab_size: image,
            image_token_offset: text,
            total_vocab_size: text + image,
        }
    }

    #[test]
    fn same_seed_same_draws_other_stream_other_draws() {
        let logits = [0.0f32; 64];
        let draws = |seed, cand| {
            let mut rng = CandidateRng::new(seed, cand);
            (0..32)
                .map(|_| Sampler.draw(&logits, &mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7, 0), draws(7, 0));
        assert_ne!(draws(7, 0), draws(7, 1));
        assert_ne!(draws(7, 0), draws(8, 0));
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln(), f32::NEG_INFINITY];
        let mut rng = CandidateRng::new(42, 0);
        let mut counts = [0usize; 4];
        let n = 10_000;
        for _ in 0..n {
            counts[Sampler.draw(&logits, &mut rng).unwrap()] += 1;
        }
        for (c, p) in counts.iter().zip([0.5, 0.3, 0.2, 0.0]) {
            let f = *c as f64 / n as f64;
            // 4 standard deviations of a binomial proportion at n = 10k is at most 0.02.
            assert!((f - p).abs() < 0.02, "frequency {f} for p {p}: {counts:?}");
        }
    }

    #[test]
    fn top_k_1_is_argmax_of_the_image_range() {
        let params = SamplingParams {
            top_k: Some(1),
            ..SamplingParams::default()
        };
        let s = ImageTokenSampler::new(&params, &layout(4, 3)).unwrap();
        let row = [0.1, 0.7, 0.3];
        let mut scratch = SampleScratch::default();
        for seed in 0..20 {
            let mut rng = CandidateRng::new(seed, 0);
            assert_eq!(s.sample(&row, None, &mut rng, &mut scratch).unwrap(), 1);
        }
    }

    #[test]
    fn guided_rows_are_combined_before_filtering() {
        let params = SamplingParams {
            top_k: Some(1),
            cond_scale: 3.0,
            ..SamplingParams::default()
        };
        let s = ImageTokenSampler::new(&params, &layout(2, 3)).unwrap();
        let cond = [1.0, 2.0, 0.0];
        let uncond = [0.0, 2.5, 0.0];
        let mut rng = CandidateRng::new(0, 0);
        let mut scratch = SampleScratch::default();
        // cond alone → code 1; uncond + 3 (cond - uncond) = [3, 1, 0] → code 0.
        assert_eq!(
            s.sample(&cond, Some(&uncond), &mut rng, &mut scratch)
                .unwrap(),
            0
        );
        let e = s.sample(&cond, None, &mut rng, &mut scratch).unwrap_err();
        assert!(e.to_string().contains("unconditional"), "{e}");
        let e = s
            .sample(&cond[..2], Some(&uncond), &mut rng, &mut scratch)
            .unwrap_err();
        assert!(e.to_string().contains("2 entries"), "{e}");
    }

    #[test]
    fn all_filtered_or_nan_is_an_error() {
        let mut rng = CandidateRng::new(0, 0);
        let e = Sampler.draw(&[f32::NEG_INFINITY; 3], &mut rng).unwrap_err();
        assert!(e.to_string().contains("filtered out"), "{e}");
        let e = Sampler.draw(&[0.0, f32::NAN], &mut rng).unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
    }
}
