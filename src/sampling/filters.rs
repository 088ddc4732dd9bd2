//! Logits filters over one row of image logits, and the classifier-free-guidance combination.
//!
//! A filter rewrites logits in place; a removed token gets `-inf` (probability 0). Filters are
//! pure functions of the row, so they are tested on small hand-made rows.

use std::cmp::Ordering;

/// One step of the filter chain.
pub trait LogitsFilter: std::fmt::Debug + Send + Sync {
    /// Rewrites `logits` in place (removed tokens become `-inf`).
    fn apply(&self, logits: &mut [f32]);
}

/// Divides every logit by the temperature (> 0; `< 1` sharpens, `> 1` flattens).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Temperature(pub f32);

impl LogitsFilter for Temperature {
    fn apply(&self, logits: &mut [f32]) {
        if self.0 != 1.0 {
            let inv = 1.0 / self.0;
            logits.iter_mut().for_each(|l| *l *= inv);
        }
    }
}

/// Keeps exactly the `k` largest logits (ties broken towards the lower index, so `k = 1` is the
/// argmax).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopK(pub usize);

impl LogitsFilter for TopK {
    /// The k-th largest value (in `f32::total_cmp` order) is found by selection over a copy of
    /// the values; everything above it stays, and of the entries equal to it the lowest-index
    /// ones fill the remaining places: the same set as sorting by (logit desc, index asc).
    fn apply(&self, logits: &mut [f32]) {
        let k = self.0.max(1);
        if k >= logits.len() {
            return;
        }
        let mut values = logits.to_vec();
        let (_, kth, _) = values.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        let kth = *kth;
        let above = logits
            .iter()
            .filter(|v| v.total_cmp(&kth) == Ordering::Greater)
            .count();
        let mut ties_left = k.saturating_sub(above);
        for v in logits.iter_mut() {
            match v.total_cmp(&kth) {
                Ordering::Greater => {}
                Ordering::Equal if ties_left > 0 => ties_left -= 1,
                _ => *v = f32::NEG_INFINITY,
            }
        }
    }
}

/// Descending by logit, then ascending by index: a total, deterministic order (NaN never reaches
/// the filters: the sampler rejects it first).
fn by_logit_desc(logits: &[f32]) -> impl Fn(&usize, &usize) -> Ordering + '_ {
    move |&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b))
}

/// Nucleus filter: keeps the most likely tokens until their probability reaches `p` (at least
/// one token; `p >= 1` keeps all).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopP(pub f64);

impl LogitsFilter for TopP {
    fn apply(&self, logits: &mut [f32]) {
        if self.0 >= 1.0 {
            return;
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return;
        }
        let mut order: Vec<usize> = (0..logits.len())
            .filter(|&i| logits[i] > f32::NEG_INFINITY)
            .collect();
        order.sort_unstable_by(by_logit_desc(logits));
        let weights: Vec<f64> = order
            .iter()
            .map(|&i| f64::from(logits[i] - max).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut cumulative = 0.0;
        let mut keep = order.len();
        for (n, w) in weights.iter().enumerate() {
            cumulative += w / total;
            if cumulative >= self.0 {
                keep = n + 1;
                break;
            }
        }
        for &i in &order[keep..] {
            logits[i] = f32::NEG_INFINITY;
        }
    }
}

/// Filters applied in order.
#[derive(Debug, Default)]
pub struct FilterChain {
    filters: Vec<Box<dyn LogitsFilter>>,
}

impl FilterChain {
    pub fn new() -> FilterChain {
        FilterChain::default()
    }

    /// Appends a filter.
    pub fn with(mut self, filter: impl LogitsFilter + 'static) -> FilterChain {
        self.filters.push(Box::new(filter));
        self
    }

    pub fn len(&self) -> usize {
        self.filters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }
}

impl LogitsFilter for FilterChain {
    fn apply(&self, logits: &mut [f32]) {
        for f in &self.filters {
            f.apply(logits);
        }
    }
}

/// Classifier-free guidance: `out = uncond + (cond - uncond) * scale`, element-wise over two
/// logits rows of equal length (`out` may be neither input: the rows stay untouched).
///
/// # Panics
/// Never: the three slices are zipped, the shortest length wins (callers pass equal lengths).
pub fn cfg_combine(cond: &[f32], uncond: &[f32], scale: f32, out: &mut [f32]) {
    for ((o, &c), &u) in out.iter_mut().zip(cond).zip(uncond) {
        *o = u + (c - u) * scale;
    }
}

/// min-dalle's super-conditioning: `out = uncond · (1 − factor) + cond · factor`
/// (`DalleBartDecoder.sample_tokens`). Algebraically the same as [`cfg_combine`] with
/// `scale = factor` (`u + (c − u)·f = u·(1 − f) + c·f`); spelled min-dalle's way so that the
/// rounding matches min-dalle's too (the two spellings differ by a few ulps of the logits ×
/// factor).
pub fn supercondition_combine(cond: &[f32], uncond: &[f32], factor: f32, out: &mut [f32]) {
    let keep = 1.0 - factor;
    for ((o, &c), &u) in out.iter_mut().zip(cond).zip(uncond) {
        *o = u * keep + c * factor;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supercondition_is_cfg_by_algebra() {
        let cond = [0.5f32, -1.25, 3.0, 0.0];
        let uncond = [0.25f32, 1.0, -2.0, 4.0];
        let (mut a, mut b) = ([0f32; 4], [0f32; 4]);
        for f in [1.0f32, 3.0, 16.0, 32.0] {
            supercondition_combine(&cond, &uncond, f, &mut a);
            cfg_combine(&cond, &uncond, f, &mut b);
            for ((&x, &y), (&c, &u)) in a.iter().zip(&b).zip(cond.iter().zip(&uncond)) {
                // min-dalle's own formula, in f64.
                let want = f64::from(u) * (1.0 - f64::from(f)) + f64::from(c) * f64::from(f);
                assert!((f64::from(x) - want).abs() < 1e-5, "{x} vs {want}");
                assert!((x - y).abs() <= 1e-5 * f, "{x} vs {y}");
            }
        }
        supercondition_combine(&cond, &uncond, 1.0, &mut a);
        assert_eq!(a, cond, "factor 1 is the conditional row");
    }

    const NEG: f32 = f32::NEG_INFINITY;

    #[test]
    fn temperature_scales() {
        let mut l = [2.0, -1.0, NEG];
        Temperature(0.5).apply(&mut l);
        assert_eq!(l, [4.0, -2.0, NEG]);
    }

    #[test]
    fn top_k_keeps_exactly_k_with_low_index_ties() {
        let mut l = [1.0, 3.0, 2.0, 3.0, 0.0];
        TopK(2).apply(&mut l);
        assert_eq!(l, [NEG, 3.0, NEG, 3.0, NEG]);
        let mut l = [1.0, 3.0, 2.0, 3.0, 0.0];
        TopK(1).apply(&mut l);
        assert_eq!(l, [NEG, 3.0, NEG, NEG, NEG], "ties go to the lower index");
        let mut l = [1.0, 2.0];
        TopK(5).apply(&mut l);
        assert_eq!(l, [1.0, 2.0]);
    }

    #[test]
    fn top_k_is_the_first_k_by_logit_then_index() {
        // Rows with many ties and signed zeros, against the definition (sort by logit desc,
        // index asc; keep the first k).
        let mut state = 12345u32;
        for len in [1usize, 2, 7, 64, 300] {
            let row: Vec<f32> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    match state >> 29 {
                        0 => 0.0,
                        1 => -0.0,
                        2 => NEG,
                        v => (v as f32 - 4.0) * 0.5,
                    }
                })
                .collect();
            for k in 1..=len + 1 {
                let mut order: Vec<usize> = (0..len).collect();
                order.sort_by(by_logit_desc(&row));
                let mut want = vec![NEG; len];
                for &i in order.iter().take(k) {
                    want[i] = row[i];
                }
                let mut got = row.clone();
                TopK(k).apply(&mut got);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "len {len} k {k}: {got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // Probabilities 0.5, 0.3, 0.2.
        let base = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut l = base;
        TopP(0.5).apply(&mut l);
        assert_eq!(l[1..], [NEG, NEG]);
        let mut l = base;
        TopP(0.7).apply(&mut l);
        assert!(l[1].is_finite() && l[2] == NEG, "{l:?}");
        let mut l = base;
        TopP(0.1).apply(&mut l);
        assert!(l[0].is_finite() && l[1] == NEG, "at least one token stays");
        let mut l = base;
        TopP(1.0).apply(&mut l);
        assert_eq!(l, base);
    }

    #[test]
    fn chain_applies_in_order() {
        let chain = FilterChain::new().with(Temperature(2.0)).with(TopK(1));
        assert_eq!(chain.len(), 2);
        let mut l = [2.0, 4.0, 0.0];
        chain.apply(&mut l);
        assert_eq!(l, [NEG, 2.0, NEG]);
    }

    #[test]
    fn cfg_combines_two_rows() {
        let cond = [1.0, 2.0, 0.0];
        let uncond = [0.0, 2.5, 1.0];
        let mut out = [0.0; 3];
        cfg_combine(&cond, &uncond, 3.0, &mut out);
        assert_eq!(out, [3.0, 1.0, -2.0]);
        cfg_combine(&cond, &uncond, 1.0, &mut out);
        assert_eq!(out, cond);
        cfg_combine(&cond, &uncond, 0.0, &mut out);
        assert_eq!(out, uncond);
    }
}
