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

/// Descending by logit, then ascending by index: a total, deterministic order (NaN never reaches
/// the filters: the sampler rejects it first).
fn by_logit_desc(logits: &[f32]) -> impl Fn(&usize, &usize) -> Ordering + '_ {
    move |&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b))
}

impl LogitsFilter for TopK {
    fn apply(&self, logits: &mut [f32]) {
        let k = self.0.max(1);
        if k >= logits.len() {
            return;
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.select_nth_unstable_by(k - 1, by_logit_desc(logits));
        for &i in &order[k..] {
            logits[i] = f32::NEG_INFINITY;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
