//! Image decoding: a file for `dalle-ort encode` ([`dalle::preprocess::load_image`]) and an
//! upload for `/v1/images/edits` ([`dalle::serve::images::decode_upload`], side-limited).

use super::scratch;

/// The side limit the upload path is fuzzed with (the server's default is larger; a small one
/// exercises the limit check).
const MAX_SIDE: u32 = 512;

pub(super) fn run(data: &[u8]) {
    if let Ok(img) = dalle::serve::images::decode_upload(data, MAX_SIDE) {
        assert!(img.width() <= MAX_SIDE && img.height() <= MAX_SIDE);
        assert_eq!(
            img.as_raw().len() as u64,
            u64::from(img.width()) * u64::from(img.height()) * 3
        );
    }
    let path = scratch::file("image", data);
    if let Ok(img) = dalle::preprocess::load_image(&path) {
        assert_eq!(
            img.as_raw().len() as u64,
            u64::from(img.width()) * u64::from(img.height()) * 3
        );
    }
}
