//! Shape-checked access to a checkpoint's tensors, with a coverage check.
//!
//! Model code takes each tensor by its checkpoint name with the shape it expects; a missing
//! tensor or a shape mismatch is an error naming the tensor and both shapes. After a graph is
//! built, [`Weights::finish`] fails if any tensor of the checkpoint was never taken, so a
//! checkpoint with extra tensors (a different architecture than the config says) cannot slip
//! through.

use crate::error::{ExportError, Result};
use crate::tensor::TensorData;
use dalle_bundle::DType;
use std::collections::BTreeMap;

/// Tensors of one checkpoint (or one part of it), taken by name.
#[derive(Debug, Default)]
pub struct Weights {
    /// What these weights are, for messages (`"encoder.pkl"`).
    source: String,
    tensors: BTreeMap<String, TensorData>,
}

impl Weights {
    pub fn new(source: impl Into<String>, tensors: BTreeMap<String, TensorData>) -> Weights {
        Weights {
            source: source.into(),
            tensors,
        }
    }

    /// Whether a tensor of this name is (still) present.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A tensor without taking it.
    pub fn get(&self, name: &str) -> Option<&TensorData> {
        self.tensors.get(name)
    }

    /// Shape of a tensor without taking it.
    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(TensorData::shape)
    }

    /// Names of the remaining tensors.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Removes and returns `name`, checking its shape; float tensors are converted to f32.
    pub fn take_f32(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        let t = self.take(name, shape)?;
        if !t.dtype().is_float() {
            return Err(ExportError::Weights(format!(
                "{}: tensor `{name}` has dtype {}, expected a float type",
                self.source,
                t.dtype()
            )));
        }
        t.to_float_dtype(DType::F32)
    }

    /// Removes and returns `name`, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        let t = self.tensors.remove(name).ok_or_else(|| {
            ExportError::Weights(format!(
                "{}: missing tensor `{name}` (expected shape {shape:?})",
                self.source
            ))
        })?;
        if t.shape() != shape {
            return Err(ExportError::Weights(format!(
                "{}: tensor `{name}` has shape {:?}, expected {shape:?}",
                self.source,
                t.shape()
            )));
        }
        Ok(t)
    }

    /// Moves every tensor whose name starts with `prefix` into a new `Weights`, with the prefix
    /// stripped (e.g. a DALLE-pytorch checkpoint's `vae.` tensors).
    pub fn split_prefix(&mut self, prefix: &str, source: impl Into<String>) -> Weights {
        let names: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        let mut out = BTreeMap::new();
        for name in names {
            if let Some(t) = self.tensors.remove(&name) {
                out.insert(name[prefix.len()..].to_string(), t);
            }
        }
        Weights::new(source, out)
    }

    /// Names of the remaining tensors that start with `prefix` and end with `suffix`.
    pub fn find(&self, prefix: &str, suffix: &str) -> Vec<String> {
        self.tensors
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| k.ends_with(suffix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The remaining tensors.
    pub fn into_map(self) -> BTreeMap<String, TensorData> {
        self.tensors
    }

    /// What these weights are, for messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Errors if any tensor was not taken.
    pub fn finish(self) -> Result<()> {
        if self.tensors.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = self
            .tensors
            .iter()
            .take(10)
            .map(|(k, v)| format!("`{k}` {:?}", v.shape()))
            .collect();
        let more = self.tensors.len().saturating_sub(10);
        Err(ExportError::Weights(format!(
            "{}: {} unused tensor(s) the model does not have: {}{}",
            self.source,
            self.tensors.len(),
            names.join(", "),
            if more > 0 {
                format!(", and {more} more")
            } else {
                String::new()
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights() -> Weights {
        let mut m = BTreeMap::new();
        m.insert(
            "a.w".to_string(),
            TensorData::from_f32(vec![2, 3], &[0.0; 6]).unwrap(),
        );
        m.insert(
            "a.b".to_string(),
            TensorData::from_f32(vec![2], &[0.0; 2]).unwrap(),
        );
        Weights::new("test.pkl", m)
    }

    #[test]
    fn reports_shape_mismatch_with_both_shapes() {
        let err = weights().take("a.w", &[3, 2]).unwrap_err().to_string();
        assert!(
            err.contains("`a.w` has shape [2, 3], expected [3, 2]"),
            "{err}"
        );
    }

    #[test]
    fn reports_missing_and_unused() {
        let mut w = weights();
        assert!(
            w.take("nope", &[1])
                .unwrap_err()
                .to_string()
                .contains("missing tensor `nope`")
        );
        w.take("a.w", &[2, 3]).unwrap();
        let err = w.finish().unwrap_err().to_string();
        assert!(
            err.contains("1 unused tensor(s)") && err.contains("`a.b`"),
            "{err}"
        );
    }
}
