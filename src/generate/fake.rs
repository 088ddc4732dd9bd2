//! A scripted decoder for the loop's tests: its state is each row's token history, its logits a
//! function of that history, and it records every call (ids fed, state lengths, row selections).

use super::step::DecoderStep;
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
    /// Past length of each row before the call.
    pub past_lengths: Vec<usize>,
}

/// See the module docs.
pub struct FakeDecoder {
    pub logits: LogitsFn,
    pub image_offset: usize,
    pub calls: Vec<Call>,
    pub empty_states: Vec<usize>,
    pub selections: Vec<Vec<usize>>,
}

/// Per-row token histories.
#[derive(Clone, Debug)]
pub struct FakeState {
    pub rows: Vec<Vec<i64>>,
}

impl FakeDecoder {
    pub fn new(logits: LogitsFn, image_offset: usize) -> FakeDecoder {
        FakeDecoder {
            logits,
            image_offset,
            calls: vec![],
            empty_states: vec![],
            selections: vec![],
        }
    }
}

impl DecoderStep for FakeDecoder {
    type State = FakeState;

    fn empty_state(&mut self, rows: usize) -> Result<FakeState> {
        self.empty_states.push(rows);
        Ok(FakeState {
            rows: vec![vec![]; rows],
        })
    }

    fn select_rows(&mut self, state: &FakeState, rows: &[usize]) -> Result<FakeState> {
        self.selections.push(rows.to_vec());
        let rows = rows
            .iter()
            .map(|&r| state.rows.get(r).cloned())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::InvalidInput("fake: row out of range".into()))?;
        Ok(FakeState { rows })
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
        self.calls.push(Call {
            ids: input_ids.to_owned(),
            past_lengths: state.rows.iter().map(Vec::len).collect(),
        });
        let mut out = Vec::new();
        for (history, ids) in state.rows.iter_mut().zip(input_ids.rows()) {
            history.extend(ids.iter());
            let full = (self.logits)(history);
            out.push(full.get(self.image_offset..).unwrap_or_default().to_vec());
        }
        let width = out.first().map_or(0, Vec::len);
        *logits = Array2::from_shape_vec((out.len(), width), out.concat())
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        Ok(Duration::ZERO)
    }
}
