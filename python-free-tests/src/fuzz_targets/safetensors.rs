//! safetensors files ([`read_safetensors`]), with every returned tensor checked.

use super::scratch;
use dalle_export::checkpoint::read_safetensors;

pub(super) fn run(data: &[u8]) {
    let path = scratch::file("model.safetensors", data);
    if let Ok(tensors) = read_safetensors(&path) {
        tensors.values().for_each(super::pytorch::check_tensor);
    }
}
