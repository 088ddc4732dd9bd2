//! Flat `name → tensor` maps from unpickled values.
//!
//! [`module_state_dict`] walks a pickled whole `nn.Module` (`_parameters`, `_buffers`,
//! `_modules`) the way `Module.state_dict()` does; [`tensor_dict`] reads a plain (Ordered)dict
//! of tensors such as a saved `state_dict()` or DALLE-pytorch's `weights`.
//!
//! The value tree shares what the pickle's memo shares, so a module referenced from many
//! places is one object: the walk refuses to enter one twice, which keeps a few hundred bytes
//! of modules referencing each other from expanding into an exponential state dict.

use super::error::CheckpointError;
use super::value::PickleValue;
use crate::tensor::TensorData;
use std::collections::{BTreeMap, HashMap};

/// What `nn.Module.state_dict()` would return for a pickled whole module: dotted names such as
/// `blocks.group_1.block_1.res_path.conv_1.w`, `None` parameters and non-persistent buffers
/// skipped, sorted by name.
pub fn module_state_dict(
    root: &PickleValue,
) -> Result<BTreeMap<String, TensorData>, CheckpointError> {
    let mut walk = Walk {
        out: BTreeMap::new(),
        seen: HashMap::new(),
    };
    walk.module(root, "", 0)?;
    Ok(walk.out)
}

/// The state dict being built and the modules already entered (by identity, with their path).
struct Walk {
    out: BTreeMap<String, TensorData>,
    seen: HashMap<*const PickleValue, String>,
}

impl Walk {
    fn module(
        &mut self,
        module: &PickleValue,
        prefix: &str,
        depth: usize,
    ) -> Result<(), CheckpointError> {
        let here = if prefix.is_empty() { "<root>" } else { prefix };
        if depth > 200 {
            return Err(CheckpointError::structure(
                here,
                "modules nested too deeply",
            ));
        }
        if let PickleValue::Object { state, .. } = module {
            let id = std::sync::Arc::as_ptr(state);
            if let Some(first) = self.seen.get(&id) {
                let first = if first.is_empty() { "<root>" } else { first };
                return Err(CheckpointError::structure(
                    here,
                    format!(
                        "this submodule is the same object as `{first}`: modules shared between \
                     several places are not supported"
                    ),
                ));
            }
            self.seen.insert(id, prefix.to_string());
        }
        let out = &mut self.out;
        let class = module.class_name().ok_or_else(|| {
            CheckpointError::structure(
                here,
                format!("expected a pickled nn.Module, got {}", module.type_name()),
            )
        })?;
        let field = |name: &str| {
            module.get(name).ok_or_else(|| {
                CheckpointError::structure(
                    here,
                    format!("{class} is not an nn.Module: it has no `{name}`"),
                )
            })
        };
        let name_of = |key: &PickleValue, what: &str| {
            key.as_str().map(str::to_string).ok_or_else(|| {
                CheckpointError::structure(here, format!("{what} name is a {}", key.type_name()))
            })
        };
        let non_persistent: Vec<&str> = module
            .get("_non_persistent_buffers_set")
            .and_then(PickleValue::as_list)
            .unwrap_or_default()
            .iter()
            .filter_map(PickleValue::as_str)
            .collect();
        for (dict_name, skip) in [("_parameters", &[][..]), ("_buffers", &non_persistent[..])] {
            let Some(entries) = field(dict_name)?.as_dict() else {
                return Err(CheckpointError::structure(
                    here,
                    format!("`{dict_name}` is not a dict"),
                ));
            };
            for (key, value) in entries {
                let name = name_of(key, dict_name)?;
                if skip.contains(&name.as_str()) {
                    continue;
                }
                let full = join(prefix, &name);
                match value {
                    PickleValue::None => {}
                    PickleValue::Tensor(t) => {
                        out.insert(full, t.clone());
                    }
                    other => {
                        return Err(CheckpointError::structure(
                            full,
                            format!(
                                "expected a tensor in `{dict_name}`, got {}",
                                other.type_name()
                            ),
                        ));
                    }
                }
            }
        }
        let Some(children) = field("_modules")?.as_dict() else {
            return Err(CheckpointError::structure(here, "`_modules` is not a dict"));
        };
        for (key, child) in children {
            let name = name_of(key, "submodule")?;
            if !child.is_none() {
                self.module(child, &join(prefix, &name), depth + 1)?;
            }
        }
        Ok(())
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A plain (Ordered)dict of string → tensor, e.g. a `torch.save(model.state_dict())` file or
/// DALLE-pytorch's `weights`. Any non-tensor value is an error naming its key.
pub fn tensor_dict(value: &PickleValue) -> Result<BTreeMap<String, TensorData>, CheckpointError> {
    let entries = value.as_dict().ok_or_else(|| {
        CheckpointError::structure(
            "tensor dict",
            format!("expected a dict of tensors, got {}", value.type_name()),
        )
    })?;
    let mut out = BTreeMap::new();
    for (key, v) in entries {
        let name = key.as_str().ok_or_else(|| {
            CheckpointError::structure("tensor dict", format!("key is a {}", key.type_name()))
        })?;
        let t = v.as_tensor().ok_or_else(|| {
            CheckpointError::structure(name, format!("expected a tensor, got {}", v.type_name()))
        })?;
        out.insert(name.to_string(), t.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn s(v: &str) -> PickleValue {
        PickleValue::Str(v.into())
    }

    fn module(
        params: Vec<(PickleValue, PickleValue)>,
        children: Vec<(PickleValue, PickleValue)>,
    ) -> PickleValue {
        PickleValue::Object {
            class: "m.M".into(),
            args: Arc::new([]),
            state: Arc::new(PickleValue::Dict(Arc::new([
                (s("_parameters"), PickleValue::Dict(params.into())),
                (s("_buffers"), PickleValue::Dict(Arc::new([]))),
                (s("_modules"), PickleValue::Dict(children.into())),
            ]))),
        }
    }

    #[test]
    fn walks_modules_and_skips_none() {
        let t = TensorData::from_f32(vec![2], &[1.0, 2.0]).unwrap();
        let leaf = module(
            vec![
                (s("w"), PickleValue::Tensor(t.clone())),
                (s("b"), PickleValue::None),
            ],
            vec![],
        );
        let root = module(vec![], vec![(s("a"), leaf), (s("gone"), PickleValue::None)]);
        let sd = module_state_dict(&root).unwrap();
        assert_eq!(sd.keys().collect::<Vec<_>>(), vec!["a.w"]);
        assert_eq!(sd["a.w"], t);
    }

    #[test]
    fn deep_module_chains() {
        let t = TensorData::from_f32(vec![1], &[1.0]).unwrap();
        let mut m = module(vec![(s("w"), PickleValue::Tensor(t))], vec![]);
        for _ in 0..170 {
            m = module(vec![], vec![(s("c"), m)]);
        }
        let sd = module_state_dict(&m).unwrap();
        assert_eq!(sd.len(), 1);
        for _ in 0..40 {
            m = module(vec![], vec![(s("c"), m)]);
        }
        assert!(module_state_dict(&m).is_err());
    }

    /// Issue 13: modules that reference each other through the memo (each level twice) would
    /// give 2^depth state-dict entries; the walk refuses the second visit instead.
    #[test]
    fn issue13_shared_submodules_are_refused() {
        let t = TensorData::from_f32(vec![1], &[1.0]).unwrap();
        let mut m = module(vec![(s("w"), PickleValue::Tensor(t))], vec![]);
        for _ in 0..40 {
            m = module(vec![], vec![(s("a"), m.clone()), (s("b"), m)]);
        }
        let err = module_state_dict(&m).unwrap_err().to_string();
        assert!(err.contains("same object as `a"), "{err}");
    }

    #[test]
    fn non_modules_are_errors() {
        assert!(module_state_dict(&PickleValue::Int(1)).is_err());
        let bad = module(vec![(s("w"), PickleValue::Int(3))], vec![]);
        let err = module_state_dict(&bad).unwrap_err().to_string();
        assert!(err.contains("w"), "{err}");
        assert!(
            tensor_dict(&PickleValue::Dict(Arc::new([(
                s("x"),
                PickleValue::Int(1)
            )])))
            .is_err()
        );
    }
}
