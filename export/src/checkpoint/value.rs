//! The value tree an unpickled checkpoint becomes.
//!
//! [`PickleValue`] mirrors the Python objects a checkpoint holds: containers, scalars,
//! tensors (already materialized as contiguous [`TensorData`]) and allow-listed classes as
//! inert records (`Object`), which are never executed. Accessors return `Option`s so callers
//! can turn a missing or mistyped field into their own error.
//!
//! Containers, object states and tensors are reference-counted: a value the pickle references
//! many times through its memo is stored once, however often it appears in the tree (a tree
//! walk can still visit it many times: see `module.rs`).

use crate::tensor::TensorData;
use std::sync::Arc;

/// A Python value from a pickle, with tensors materialized.
#[derive(Clone, Debug, PartialEq)]
pub enum PickleValue {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside i64: little-endian two's-complement bytes, as pickle's LONG1/LONG4.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Arc<[PickleValue]>),
    Tuple(Arc<[PickleValue]>),
    /// A `set` or `frozenset`, in pickle order.
    Set(Arc<[PickleValue]>),
    /// A `dict` or `OrderedDict`, in pickle (insertion) order.
    Dict(Arc<[(PickleValue, PickleValue)]>),
    Tensor(TensorData),
    /// A whitelisted global used as a value, e.g. `torch.float32` or `torch.FloatStorage`.
    Global(String),
    /// An instance of an allow-listed class (or `torch.device`): its constructor arguments and
    /// the state that `BUILD` set (usually the instance `__dict__`), never executed.
    Object {
        class: String,
        args: Arc<[PickleValue]>,
        state: Arc<PickleValue>,
    },
}

impl PickleValue {
    /// A dict entry with string key `key`, or an object attribute (a key of its state dict).
    pub fn get(&self, key: &str) -> Option<&PickleValue> {
        match self {
            PickleValue::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            PickleValue::Object { state, .. } => match state.as_ref() {
                // `(dict, slotstate)` from `__getstate__` of classes with `__slots__`.
                PickleValue::Tuple(parts) => parts.first().and_then(|d| d.get(key)),
                other => other.get(key),
            },
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            PickleValue::Int(v) => Some(*v),
            PickleValue::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// A float, or an integer widened to f64.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            PickleValue::Float(v) => Some(*v),
            PickleValue::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            PickleValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            PickleValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            PickleValue::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_tensor(&self) -> Option<&TensorData> {
        match self {
            PickleValue::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The items of a list, tuple or set.
    pub fn as_list(&self) -> Option<&[PickleValue]> {
        match self {
            PickleValue::List(v) | PickleValue::Tuple(v) | PickleValue::Set(v) => Some(&v[..]),
            _ => None,
        }
    }

    /// The entries of a dict.
    pub fn as_dict(&self) -> Option<&[(PickleValue, PickleValue)]> {
        match self {
            PickleValue::Dict(items) => Some(&items[..]),
            _ => None,
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, PickleValue::None)
    }

    /// The dotted class name of an `Object`, e.g. `dall_e.encoder.Encoder`.
    pub fn class_name(&self) -> Option<&str> {
        match self {
            PickleValue::Object { class, .. } => Some(class),
            _ => None,
        }
    }

    /// A short description for error messages: `int`, `dict`, `object dall_e.utils.Conv2d`, ...
    pub fn type_name(&self) -> String {
        match self {
            PickleValue::None => "None".into(),
            PickleValue::Bool(_) => "bool".into(),
            PickleValue::Int(_) | PickleValue::BigInt(_) => "int".into(),
            PickleValue::Float(_) => "float".into(),
            PickleValue::Str(_) => "str".into(),
            PickleValue::Bytes(_) => "bytes".into(),
            PickleValue::List(_) => "list".into(),
            PickleValue::Tuple(_) => "tuple".into(),
            PickleValue::Set(_) => "set".into(),
            PickleValue::Dict(_) => "dict".into(),
            PickleValue::Tensor(t) => format!("tensor {}{:?}", t.dtype(), t.shape()),
            PickleValue::Global(name) => format!("global {name}"),
            PickleValue::Object { class, .. } => format!("object {class}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let obj = PickleValue::Object {
            class: "m.C".into(),
            args: Arc::new([]),
            state: Arc::new(PickleValue::Dict(Arc::new([
                (PickleValue::Str("n".into()), PickleValue::Int(3)),
                (PickleValue::Str("x".into()), PickleValue::Float(0.5)),
            ]))),
        };
        assert_eq!(obj.get("n").and_then(PickleValue::as_int), Some(3));
        assert_eq!(obj.get("x").and_then(PickleValue::as_float), Some(0.5));
        assert_eq!(obj.get("n").and_then(PickleValue::as_float), Some(3.0));
        assert!(obj.get("missing").is_none());
        assert_eq!(obj.class_name(), Some("m.C"));
        assert_eq!(obj.type_name(), "object m.C");
        assert!(PickleValue::Int(1).get("n").is_none());
    }
}
