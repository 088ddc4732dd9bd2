//! Row slots over a [`DecoderStep`]: where each occupied slot's row lives, and one decoder call
//! per row group per step.
//!
//! - **Per-row decoders** (in-place caches with `cache_length` `[batch]`): one group holds every
//!   slot, whatever position its row is at. A joining row is copied into a free row of the
//!   running state ([`DecoderStep::copy_rows`]: the valid prefix of its caches only, i.e. the
//!   prompt's tokens); a leaving row is only marked free ([`DecoderStep::clear_rows`]: nothing is
//!   copied) and is reused by the next join. Free rows still ride along in each call as idle rows
//!   (length 0, one dummy token: their attention covers one key, so they cost little beside the
//!   weights every row shares). The state grows only when no row is free (a new state of the
//!   needed size, the occupied rows' valid prefixes copied over); it shrinks when at most a
//!   quarter of its rows are occupied after rows leave (the same copy, into a state of just
//!   those rows), and an idle state is replaced by a fresh one (nothing to copy) when a join
//!   needs at most a quarter of it. Prompt states are kept in a small pool and reused, so
//!   admitting a request allocates nothing once the engine is warm.
//! - **Other decoders** (concatenated caches, or in-place bundles with one `cache_length`): a
//!   past length is a tensor dimension, so only rows that started together share a state. Each
//!   join makes its own group ([`DecoderStep::select_rows`] of the prompt); a step runs one call
//!   per group; a leaving row makes its group re-select the remaining rows (a copy, which this
//!   layout pays every step anyway) or drops the group when it was the last.

use super::model::{Slot, StepCost};
use crate::error::{Error, Result};
use crate::generate::{DecoderStep, StateRows};
use ndarray::{Array2, Axis};
use std::time::{Duration, Instant};

/// A prefilled prompt: its decoder state and its last position's logits per row.
pub struct BatchPrompt<S> {
    state: S,
    logits: Array2<f32>,
}

impl<S: StateRows> BatchPrompt<S> {
    /// Rows of the prompt.
    pub fn rows(&self) -> usize {
        self.state.rows()
    }

    /// Tokens in each row.
    pub fn length(&self) -> usize {
        self.state.lengths().first().copied().unwrap_or(0)
    }
}

struct Group<S> {
    state: S,
    logits: Array2<f32>,
    /// The slot occupying each row (`None`: free).
    rows: Vec<Option<Slot>>,
    ids: Array2<i64>,
}

/// See the module docs.
pub struct SlotBatch<D: DecoderStep> {
    decoder: D,
    max_rows: usize,
    /// Fed to free rows of a per-row state (any valid id).
    idle_id: i64,
    groups: Vec<Group<D::State>>,
    /// Slot → (group, row).
    slots: Vec<Option<(usize, usize)>>,
    /// Prompt states kept for reuse (per-row decoders only).
    pool: Vec<D::State>,
    /// Time spent copying rows into place (joins, growth, regrouping), for the benches.
    pub copy_time: Duration,
}

const POOL_SIZE: usize = 4;

impl<D: DecoderStep> SlotBatch<D> {
    /// `max_rows`: the most rows one decoder call may hold; `idle_id`: the id fed to free rows.
    pub fn new(decoder: D, max_rows: usize, idle_id: i64) -> SlotBatch<D> {
        SlotBatch {
            decoder,
            max_rows: max_rows.max(1),
            idle_id,
            groups: vec![],
            slots: vec![],
            pool: vec![],
            copy_time: Duration::ZERO,
        }
    }

    pub fn decoder(&self) -> &D {
        &self.decoder
    }

    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// Rows computed per step now (idle rows of a per-row state included).
    pub fn rows(&self) -> usize {
        self.groups.iter().map(|g| g.rows.len()).sum()
    }

    /// Occupied slots.
    pub fn occupied(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Runs `ids` (`[rows, sequence]`, every row the same length) from an empty state.
    pub fn prefill(&mut self, ids: Array2<i64>) -> Result<BatchPrompt<D::State>> {
        self.prefill_with(ids, |_, _| Ok(()))
    }

    /// [`SlotBatch::prefill`] after `init` has set up the empty state (e.g. its constant
    /// per-row inputs).
    pub fn prefill_with(
        &mut self,
        ids: Array2<i64>,
        init: impl FnOnce(&mut D, &mut D::State) -> Result<()>,
    ) -> Result<BatchPrompt<D::State>> {
        let rows = ids.nrows();
        let mut state = match self.pool.iter().position(|s| s.rows() == rows) {
            Some(i) => {
                let mut s = self.pool.swap_remove(i);
                let all: Vec<usize> = (0..rows).collect();
                self.decoder.clear_rows(&mut s, &all)?;
                s
            }
            None => self.decoder.empty_state(rows)?,
        };
        init(&mut self.decoder, &mut state)?;
        let mut logits = Array2::zeros((0, 0));
        self.decoder.step(ids.view(), &mut state, &mut logits)?;
        Ok(BatchPrompt { state, logits })
    }

    /// Gives a prompt's state back for reuse.
    pub fn release(&mut self, prompt: BatchPrompt<D::State>) {
        if self.decoder.per_row_positions() && self.pool.len() < POOL_SIZE {
            self.pool.push(prompt.state);
        }
    }

    fn new_slot(&mut self, at: (usize, usize)) -> Slot {
        match self.slots.iter().position(Option::is_none) {
            Some(s) => {
                self.slots[s] = Some(at);
                s
            }
            None => {
                self.slots.push(Some(at));
                self.slots.len() - 1
            }
        }
    }

    /// Places copies of prompt rows (`sources`) into slots.
    pub fn join(&mut self, prompt: &BatchPrompt<D::State>, sources: &[usize]) -> Result<Vec<Slot>> {
        if let Some(&bad) = sources.iter().find(|&&r| r >= prompt.rows()) {
            return Err(Error::InvalidInput(format!(
                "join: prompt row {bad} of {}",
                prompt.rows()
            )));
        }
        if self.rows_after_join(sources.len()) > self.max_rows {
            return Err(Error::InvalidInput(format!(
                "join: {} more rows would exceed the batch limit of {} rows",
                sources.len(),
                self.max_rows
            )));
        }
        let started = Instant::now();
        let slots = if self.decoder.per_row_positions() {
            self.join_per_row(prompt, sources)?
        } else {
            let state = self.decoder.select_rows(&prompt.state, sources)?;
            let logits = prompt.logits.select(Axis(0), sources);
            let g = self.groups.len();
            let mut rows = Vec::with_capacity(sources.len());
            for r in 0..sources.len() {
                rows.push(Some(self.new_slot((g, r))));
            }
            let slots = rows.iter().flatten().copied().collect();
            self.groups.push(Group {
                state,
                logits,
                rows,
                ids: Array2::zeros((sources.len(), 1)),
            });
            slots
        };
        self.copy_time += started.elapsed();
        Ok(slots)
    }

    /// Rows the batch would compute after joining `n` more.
    pub fn rows_after_join(&self, n: usize) -> usize {
        if self.decoder.per_row_positions() {
            let free = self
                .groups
                .first()
                .map_or(0, |g| g.rows.iter().filter(|r| r.is_none()).count());
            self.rows() + n.saturating_sub(free)
        } else {
            self.rows() + n
        }
    }

    fn join_per_row(
        &mut self,
        prompt: &BatchPrompt<D::State>,
        sources: &[usize],
    ) -> Result<Vec<Slot>> {
        let n = sources.len();
        if let Some(g) = self.groups.first()
            && g.rows.iter().all(Option::is_none)
            && n * 4 <= g.rows.len()
        {
            // An idle state far larger than needed: start a smaller one (nothing to copy).
            self.groups.clear();
        }
        if self.groups.is_empty() {
            let state = self.decoder.empty_state(n)?;
            let width = prompt.logits.ncols();
            self.groups.push(Group {
                state,
                logits: Array2::zeros((n, width)),
                rows: vec![None; n],
                ids: Array2::zeros((n, 1)),
            });
        }
        let free = self.groups[0].rows.iter().filter(|r| r.is_none()).count();
        if free < n {
            self.grow(self.groups[0].rows.len() + n - free)?;
        }
        let group = &self.groups[0];
        let targets: Vec<usize> = group
            .rows
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_none())
            .map(|(r, _)| r)
            .take(n)
            .collect();
        let g = &mut self.groups[0];
        self.decoder
            .copy_rows(&prompt.state, sources, &mut g.state, &targets)?;
        for (&src, &dst) in sources.iter().zip(&targets) {
            g.logits.row_mut(dst).assign(&prompt.logits.row(src));
        }
        let mut slots = Vec::with_capacity(n);
        for &row in &targets {
            let slot = self.new_slot((0, row));
            self.groups[0].rows[row] = Some(slot);
            slots.push(slot);
        }
        Ok(slots)
    }

    /// A per-row state of `rows` rows holding the current one's rows at the same indices.
    fn grow(&mut self, rows: usize) -> Result<()> {
        let mut state = self.decoder.empty_state(rows)?;
        let g = &mut self.groups[0];
        let occupied: Vec<usize> = (0..g.rows.len()).filter(|&r| g.rows[r].is_some()).collect();
        self.decoder
            .copy_rows(&g.state, &occupied, &mut state, &occupied)?;
        let mut logits = Array2::zeros((rows, g.logits.ncols()));
        for (r, row) in g.logits.outer_iter().enumerate() {
            logits.row_mut(r).assign(&row);
        }
        g.state = state;
        g.logits = logits;
        g.rows.resize(rows, None);
        g.ids = Array2::zeros((rows, 1));
        Ok(())
    }

    /// Frees `slots` (see the module docs for what that costs).
    pub fn leave(&mut self, slots: &[Slot]) -> Result<()> {
        let started = Instant::now();
        let mut touched = vec![];
        for &slot in slots {
            let (g, r) = self
                .slots
                .get_mut(slot)
                .and_then(Option::take)
                .ok_or_else(|| {
                    Error::InvalidInput(format!("leave: slot {slot} is not occupied"))
                })?;
            self.groups[g].rows[r] = None;
            if !touched.contains(&g) {
                touched.push(g);
            }
        }
        touched.sort_unstable();
        for &g in touched.iter().rev() {
            let group = &mut self.groups[g];
            let kept: Vec<usize> = (0..group.rows.len())
                .filter(|&r| group.rows[r].is_some())
                .collect();
            if self.decoder.per_row_positions()
                && kept.len() * 4 <= group.rows.len()
                && !kept.is_empty()
            {
                self.compact(&kept)?;
            } else if self.decoder.per_row_positions() {
                let freed: Vec<usize> = (0..group.rows.len())
                    .filter(|&r| group.rows[r].is_none())
                    .collect();
                self.decoder.clear_rows(&mut group.state, &freed)?;
            } else if kept.is_empty() {
                self.remove_group(g);
            } else if kept.len() < group.rows.len() {
                group.state = self.decoder.select_rows(&group.state, &kept)?;
                group.logits = group.logits.select(Axis(0), &kept);
                group.rows = kept.iter().map(|&r| group.rows[r]).collect();
                group.ids = Array2::zeros((kept.len(), 1));
                for (row, slot) in group.rows.iter().enumerate() {
                    if let Some(s) = slot {
                        self.slots[*s] = Some((g, row));
                    }
                }
            }
        }
        self.copy_time += started.elapsed();
        Ok(())
    }

    /// Moves the occupied rows `kept` of a per-row state into a new state of just those rows
    /// (a copy of their valid prefixes), when most rows are idle.
    fn compact(&mut self, kept: &[usize]) -> Result<()> {
        let mut state = self.decoder.empty_state(kept.len())?;
        let to: Vec<usize> = (0..kept.len()).collect();
        let g = &mut self.groups[0];
        self.decoder.copy_rows(&g.state, kept, &mut state, &to)?;
        g.state = state;
        g.logits = g.logits.select(Axis(0), kept);
        g.rows = kept.iter().map(|&r| g.rows[r]).collect();
        g.ids = Array2::zeros((kept.len(), 1));
        for (row, slot) in g.rows.iter().enumerate() {
            if let Some(s) = slot {
                self.slots[*s] = Some((0, row));
            }
        }
        Ok(())
    }

    /// Drops a group with no occupied rows; later groups move down by one.
    fn remove_group(&mut self, g: usize) {
        self.groups.remove(g);
        for (g2, _) in self.slots.iter_mut().flatten() {
            if *g2 > g {
                *g2 -= 1;
            }
        }
    }

    /// Feeds one id per occupied slot and runs one decoder call per group.
    pub fn step(&mut self, feeds: impl IntoIterator<Item = (Slot, i64)>) -> Result<StepCost> {
        for group in &mut self.groups {
            group.ids.fill(i64::MIN);
        }
        for (slot, id) in feeds {
            let (g, r) =
                self.slots.get(slot).copied().flatten().ok_or_else(|| {
                    Error::InvalidInput(format!("step: slot {slot} is not occupied"))
                })?;
            let cell = &mut self.groups[g].ids[[r, 0]];
            if *cell != i64::MIN {
                return Err(Error::InvalidInput(format!("step: slot {slot} fed twice")));
            }
            *cell = id;
        }
        let mut cost = StepCost::default();
        let per_row = self.decoder.per_row_positions();
        for group in &mut self.groups {
            let mut idle = vec![];
            for (r, slot) in group.rows.iter().enumerate() {
                if group.ids[[r, 0]] != i64::MIN {
                    continue;
                }
                match slot {
                    None => {
                        group.ids[[r, 0]] = self.idle_id;
                        idle.push(r);
                    }
                    Some(s) => {
                        return Err(Error::InvalidInput(format!(
                            "step: occupied slot {s} was not fed"
                        )));
                    }
                }
            }
            cost.model +=
                self.decoder
                    .step(group.ids.view(), &mut group.state, &mut group.logits)?;
            cost.calls += 1;
            cost.rows += group.rows.len();
            if per_row && !idle.is_empty() {
                self.decoder.clear_rows(&mut group.state, &idle)?;
            }
        }
        Ok(cost)
    }

    /// The logits of an occupied slot.
    pub fn logits(&self, slot: Slot) -> Result<&[f32]> {
        let (g, r) =
            self.slots.get(slot).copied().flatten().ok_or_else(|| {
                Error::InvalidInput(format!("logits: slot {slot} is not occupied"))
            })?;
        let group = &self.groups[g];
        let width = group.logits.ncols();
        group
            .logits
            .as_slice()
            .and_then(|all| all.get(r * width..(r + 1) * width))
            .ok_or_else(|| Error::InvalidInput("logits are not contiguous".into()))
    }

    /// Tokens held by an occupied slot's row.
    pub fn length(&self, slot: Slot) -> Option<usize> {
        let (g, r) = self.slots.get(slot).copied().flatten()?;
        self.groups.get(g)?.state.lengths().get(r).copied()
    }
}
