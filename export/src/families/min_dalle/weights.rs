//! Reading min-dalle's two state-dict files and taking their tensors as graph initializers
//! (LayerNorms that may lack a scale get ones, as min-dalle's `strict=False` load leaves them).

use super::names;
use crate::checkpoint::{ClassAllowList, read_pytorch, tensor_dict};
use crate::error::Result;
use crate::graph::{GraphBuilder, Value};
use crate::tensor::TensorData;
use crate::weights::Weights;
use std::path::Path;

/// The two halves of a model, as read.
pub struct Model {
    pub encoder: Weights,
    pub decoder: Weights,
}

/// Reads one `torch.save(state_dict)` file (no classes allowed in its pickle).
fn read_state_dict(path: &Path) -> Result<Weights> {
    let root = read_pytorch(path, &ClassAllowList::default()).map_err(|e| {
        crate::error::ExportError::from(e).context(format!("reading {}", path.display()))
    })?;
    let tensors = tensor_dict(&root).map_err(|e| {
        crate::error::ExportError::from(e).context(format!("reading {}", path.display()))
    })?;
    Ok(Weights::new(path.display().to_string(), tensors))
}

/// Reads `encoder.pt` and `decoder.pt`.
pub fn load(encoder: &Path, decoder: &Path) -> Result<Model> {
    Ok(Model {
        encoder: read_state_dict(encoder)?,
        decoder: read_state_dict(decoder)?,
    })
}

/// Takes tensors by name into one graph.
pub struct Take<'a> {
    pub w: &'a mut Weights,
}

impl Take<'_> {
    /// A float tensor as an f32 initializer of the same name.
    pub fn tensor(&mut self, g: &mut GraphBuilder, name: &str, shape: &[usize]) -> Result<Value> {
        let t = self.w.take_f32(name, shape)?;
        g.initializer(name, t)
    }

    /// A LayerNorm `[dim]`: `(weight, bias)`; a missing weight of a norm that may lack its
    /// scale ([`names::may_lack_scale`]) is ones.
    pub fn layer_norm(
        &mut self,
        g: &mut GraphBuilder,
        norm: &str,
        dim: usize,
    ) -> Result<(Value, Value)> {
        let wname = format!("{norm}.weight");
        let weight = if !self.w.contains(&wname) && names::may_lack_scale(norm) {
            g.initializer(&wname, TensorData::from_f32(vec![dim], &vec![1.0; dim])?)?
        } else {
            self.tensor(g, &wname, &[dim])?
        };
        let bias = self.tensor(g, &format!("{norm}.bias"), &[dim])?;
        Ok((weight, bias))
    }
}
