//! The pickle VM alone ([`unpickle`]): opcodes, memo, stack and whitelist without the zip
//! container (tensors cannot appear: there are no storages to load).

use dalle_export::checkpoint::{ClassAllowList, DVAE_CLASSES, unpickle};

pub(super) fn run(data: &[u8]) {
    let allow = ClassAllowList::torch_nn().with(DVAE_CLASSES);
    if let Ok(value) = unpickle(data, &allow) {
        super::pytorch::check_value(&value);
    }
}
