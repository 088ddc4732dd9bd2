//! Typed value handles and the shape arithmetic used by wire-time inference.
//!
//! A [`Value`] is a `Copy` index into its builder's value table; the table holds a
//! [`ValueInfo`] (name, dtype, shape). Shapes are lists of [`Dim`]: fixed sizes or named
//! symbolic sizes. Dims that inference cannot name get a fresh `unk__N` symbol, which is
//! written to ONNX as an unnamed dimension.

use dalle_bundle::{DType, Dim};

/// Handle to a value (graph input, initializer or node output) of one [`super::GraphBuilder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(pub(crate) u32);

impl Value {
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

/// A tensor shape.
pub type Shape = Vec<Dim>;

/// Prefix of dims that inference could not name; written to ONNX as unnamed dims.
pub const UNKNOWN_DIM_PREFIX: &str = "unk__";

/// True for a dim that inference could not name.
pub fn is_unknown(d: &Dim) -> bool {
    matches!(d, Dim::Symbolic(s) if s.starts_with(UNKNOWN_DIM_PREFIX))
}

/// Name, element type and shape of a value.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Shape,
}

impl ValueInfo {
    /// Rank (number of dims).
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// `name: dtype[dims]`, for error messages.
    pub fn describe(&self) -> String {
        format!(
            "`{}` ({}{})",
            self.name,
            self.dtype,
            dalle_bundle::dtype::format_dims(&self.shape)
        )
    }
}

/// Shorthand for building shapes: `dims![ "batch", 3, 256 ]`.
#[macro_export]
macro_rules! dims {
    ($($d:expr),* $(,)?) => {
        vec![$($crate::graph::value::IntoDim::into_dim($d)),*]
    };
}

/// Conversion used by [`dims!`].
pub trait IntoDim {
    fn into_dim(self) -> Dim;
}

impl IntoDim for Dim {
    fn into_dim(self) -> Dim {
        self
    }
}
impl IntoDim for &str {
    fn into_dim(self) -> Dim {
        Dim::Symbolic(self.to_string())
    }
}
impl IntoDim for String {
    fn into_dim(self) -> Dim {
        Dim::Symbolic(self)
    }
}
impl IntoDim for u64 {
    fn into_dim(self) -> Dim {
        Dim::Fixed(self)
    }
}
impl IntoDim for usize {
    fn into_dim(self) -> Dim {
        Dim::Fixed(self as u64)
    }
}
impl IntoDim for i32 {
    fn into_dim(self) -> Dim {
        Dim::Fixed(u64::try_from(self).unwrap_or(0))
    }
}

/// Source of fresh unknown dims during inference.
#[derive(Debug, Default)]
pub struct DimNamer {
    next: u64,
}

impl DimNamer {
    /// A new unnamed dim.
    pub fn fresh(&mut self) -> Dim {
        let d = Dim::Symbolic(format!("{UNKNOWN_DIM_PREFIX}{}", self.next));
        self.next += 1;
        d
    }
}

/// Multidirectional (numpy) broadcasting of two shapes.
pub fn broadcast(a: &[Dim], b: &[Dim], namer: &mut DimNamer) -> Result<Shape, String> {
    let rank = a.len().max(b.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = (i + a.len()).checked_sub(rank).and_then(|j| a.get(j));
        let db = (i + b.len()).checked_sub(rank).and_then(|j| b.get(j));
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) => broadcast_dim(x, y, namer).ok_or_else(|| {
                format!(
                    "shapes {} and {} do not broadcast",
                    dalle_bundle::dtype::format_dims(a),
                    dalle_bundle::dtype::format_dims(b)
                )
            })?,
            (None, None) => return Err("internal: broadcast index out of range".into()),
        };
        out.push(d);
    }
    Ok(out)
}

fn broadcast_dim(x: &Dim, y: &Dim, namer: &mut DimNamer) -> Option<Dim> {
    match (x, y) {
        _ if x == y => Some(x.clone()),
        (Dim::Fixed(1), other) | (other, Dim::Fixed(1)) => Some(other.clone()),
        (Dim::Fixed(_), Dim::Fixed(_)) => None,
        // A fixed dim > 1 against a symbolic one: the symbol must equal it at run time.
        (Dim::Fixed(n), Dim::Symbolic(_)) | (Dim::Symbolic(_), Dim::Fixed(n)) => {
            Some(Dim::Fixed(*n))
        }
        (Dim::Symbolic(_), Dim::Symbolic(_)) => Some(namer.fresh()),
    }
}

/// Resolves a possibly negative axis against `rank` (`-1` = last).
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    }
}

/// Product of fixed dims, `None` if any dim is symbolic.
pub fn fixed_numel(shape: &[Dim]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, d| acc.checked_mul(d.fixed()?))
}

#[cfg(test)]
#[allow(clippy::useless_vec)] // `dims!` builds a Vec
mod tests {
    use super::*;

    #[test]
    fn broadcasts_like_numpy() {
        let mut n = DimNamer::default();
        let a = dims!["batch", 1, 4];
        let b = dims![3, 1];
        assert_eq!(broadcast(&a, &b, &mut n).unwrap(), dims!["batch", 3, 4]);
        let err = broadcast(&dims![2, 3], &dims![4, 3], &mut n).unwrap_err();
        assert!(err.contains("[2, 3] and [4, 3]"), "{err}");
    }

    #[test]
    fn axes() {
        assert_eq!(normalize_axis(-1, 3).unwrap(), 2);
        assert!(normalize_axis(3, 3).is_err());
    }
}
