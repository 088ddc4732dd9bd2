//! A scripted decoder for the engine's tests: its state is each row's token history, its logits a
//! function of that history, and it records every call (ids fed, row lengths, selections,
//! copies). It can act as either kind of decoder (per-row positions or one position per state).

use super::step::{DecoderStep, StateRows};
use crate::error::{Error, Result};
use ndarray::{Array2, ArrayView2};
use std::time::Duration;

/// Logits (full unified vocabulary) for one row, from everything that row has been fed; the
/// fake hands the loop the image part (from `image_offset`), as the real decoder does.
pub type LogitsFn = Box<dyn Fn(&[i64]) -> Vec<f32>>;

/// One `step` call as the fake saw it.
#[derive(Clone, Debug)]
pub struct Call {
    pub ids: Array2<i64>,
    /// Length of each row before the call.
    pub past_lengths: Vec<usize>,
}

/// See the module docs.
pub struct FakeDecoder {
    pub logits: LogitsFn,
    pub image_offset: usize,
    pub per_row: bool,
    pub calls: Vec<Call>,
    pub empty_states: Vec<usize>,
    pub selections: Vec<Vec<usize>>,
    /// Rows copied by `copy_rows` (target rows).
    pub copies: Vec<Vec<usize>>,
}

/// Per-row token histories.
#[derive(Clone, Debug)]
pub struct FakeState {
    pub rows: Vec<Vec<i64>>,
    lengths: Vec<usize>,
}

impl StateRows for FakeState {
    fn rows(&self) -> usize {
        self.rows.len()
    }

    fn lengths(&self) -> &[usize] {
        &self.lengths
    }
}

impl FakeDecoder {
    pub fn new(logits: LogitsFn, image_offset: usize, per_row: bool) -> FakeDecoder {
        FakeDecoder {
            logits,
            image_offset,
            per_row,
            calls: vec![],
            empty_states: vec![],
            selections: vec![],
            copies: vec![],
        }
    }
}

impl DecoderStep for FakeDecoder {
    type State = FakeState;

    fn per_row_positions(&self) -> bool {
        self.per_row
    }

    fn capacity(&self) -> Option<usize> {
        None
    }

    fn empty_state(&mut self, rows: usize) -> Result<FakeState> {
        self.empty_states.push(rows);
        Ok(FakeState {
            rows: vec![vec![]; rows],
            lengths: vec![0; rows],
        })
    }

    fn select_rows(&mut self, state: &FakeState, rows: &[usize]) -> Result<FakeState> {
        self.selections.push(rows.to_vec());
        let picked = rows
            .iter()
            .map(|&r| state.rows.get(r).cloned())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::InvalidInput("fake: row out of range".into()))?;
        let lengths = picked.iter().map(Vec::len).collect();
        Ok(FakeState {
            rows: picked,
            lengths,
        })
    }

    fn copy_rows(
        &mut self,
        src: &FakeState,
        src_rows: &[usize],
        dst: &mut FakeState,
        dst_rows: &[usize],
    ) -> Result<()> {
        if !self.per_row {
            return Err(Error::InvalidInput(
                "fake: copy_rows without per-row".into(),
            ));
        }
        for (&s, &d) in src_rows.iter().zip(dst_rows) {
            dst.rows[d] = src.rows[s].clone();
            dst.lengths[d] = src.lengths[s];
        }
        self.copies.push(dst_rows.to_vec());
        Ok(())
    }

    fn clear_rows(&mut self, state: &mut FakeState, rows: &[usize]) -> Result<()> {
        for &r in rows {
            state.rows[r].clear();
            state.lengths[r] = 0;
        }
        Ok(())
    }

    fn step(
        &mut self,
        input_ids: ArrayView2<'_, i64>,
        state: &mut FakeState,
        logits: &mut Array2<f32>,
    ) -> Result<Duration> {
        if input_ids.nrows() != state.rows.len() {
            return Err(Error::InvalidInput(format!(
                "fake: {} id rows for a {}-row state",
                input_ids.nrows(),
                state.rows.len()
            )));
        }
        if !self.per_row && state.lengths.windows(2).any(|w| w[0] != w[1]) {
            return Err(Error::InvalidInput(
                "fake: rows at different positions in a shared-position state".into(),
            ));
        }
        self.calls.push(Call {
            ids: input_ids.to_owned(),
            past_lengths: state.lengths.clone(),
        });
        let mut out = Vec::new();
        for ((history, ids), len) in state
            .rows
            .iter_mut()
            .zip(input_ids.rows())
            .zip(&mut state.lengths)
        {
            history.extend(ids.iter());
            *len = history.len();
            let full = (self.logits)(history);
            out.push(full.get(self.image_offset..).unwrap_or_default().to_vec());
        }
        let width = out.first().map_or(0, Vec::len);
        *logits = Array2::from_shape_vec((out.len(), width), out.concat())
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        Ok(Duration::ZERO)
    }
}
