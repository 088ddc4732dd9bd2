//! `torch.save` zip archives: [`read_pytorch`] with every class the exporter ever allows, then
//! the state-dict walks the families use.

use super::scratch;
use dalle_export::TensorData;
use dalle_export::checkpoint::{
    ClassAllowList, DVAE_CLASSES, PickleValue, module_state_dict, read_pytorch, tensor_dict,
};

pub(super) fn run(data: &[u8]) {
    let path = scratch::file("checkpoint.pt", data);
    let allow = ClassAllowList::torch_nn().with(DVAE_CLASSES);
    if let Ok(value) = read_pytorch(&path, &allow) {
        check_value(&value);
    }
}

/// The walks the exporter runs on a value tree (whole module, flat dict, a dict's entries such
/// as DALLE-pytorch's `weights`), with every tensor they return checked.
pub(super) fn check_value(value: &PickleValue) {
    walk_tensors(value, 0);
    for dict in [module_state_dict(value), tensor_dict(value)]
        .into_iter()
        .flatten()
    {
        dict.values().for_each(check_tensor);
    }
    if let Some(entries) = value.as_dict() {
        for (_, v) in entries {
            if let Ok(dict) = tensor_dict(v) {
                dict.values().for_each(check_tensor);
            }
        }
    }
}

/// Every tensor in the tree (depth-capped: the tree is as deep as the pickle allows).
fn walk_tensors(value: &PickleValue, depth: usize) {
    if depth > 64 {
        return;
    }
    if let Some(t) = value.as_tensor() {
        check_tensor(t);
    }
    if let Some(items) = value.as_list() {
        items.iter().for_each(|v| walk_tensors(v, depth + 1));
    }
    if let Some(entries) = value.as_dict() {
        for (k, v) in entries {
            walk_tensors(k, depth + 1);
            walk_tensors(v, depth + 1);
        }
    }
}

/// A materialized tensor holds exactly `numel × element size` bytes.
pub(super) fn check_tensor(t: &TensorData) {
    let numel = t
        .shape()
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .expect("a materialized tensor's element count overflows usize");
    assert_eq!(t.numel(), numel, "numel disagrees with the shape");
    let want = numel
        .checked_mul(t.dtype().size())
        .expect("a materialized tensor's byte length overflows usize");
    assert_eq!(
        t.byte_len(),
        want,
        "tensor {:?} {:?} holds {} bytes",
        t.dtype(),
        t.shape(),
        t.byte_len()
    );
    // File-backed views are read when written; a read may fail (a clean error), never
    // disagree with the declared length.
    if let Ok(bytes) = t.bytes() {
        assert_eq!(
            bytes.len(),
            want,
            "tensor read back with a different length"
        );
    }
}
