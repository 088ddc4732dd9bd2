//! `.npy` image tokens, as `dalle-ort decode` reads them ([`dalle::npy::read_tokens`]).

use super::scratch;

pub(super) fn run(data: &[u8]) {
    let path = scratch::file("tokens.npy", data);
    if let Ok(tokens) = dalle::npy::read_tokens(&path) {
        assert!(!tokens.is_empty(), "read_tokens returned no tokens");
        assert_eq!(tokens.ndim(), 3);
    }
}
