//! Bearer-key authentication for the `/v1/*` routes (`--api-key-file`).
//!
//! The file holds one key per line (blank lines and `#` comments ignored). A request must send
//! `Authorization: Bearer KEY` with one of them. Keys are compared as SHA-256 digests with
//! `subtle`'s constant-time equality, and every key is compared, so the time taken says nothing
//! about how much of a key matched or which key it was. Probes (`/health`, `/ready`) and
//! `/metrics` stay open, as orchestrators expect; image file URLs are unguessable instead.

use super::error::{ApiError, ServeError};
use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;

/// The accepted keys, as digests.
#[derive(Clone, Debug)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

fn digest(key: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(key));
    out
}

impl ApiKeys {
    /// Keys from the lines of `text` (see the module docs).
    pub fn parse(text: &str) -> ApiKeys {
        ApiKeys {
            digests: text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| digest(l.as_bytes()))
                .collect(),
        }
    }

    /// Reads `path`; a file without any key is an error (it would lock every client out).
    pub fn from_file(path: &Path) -> Result<ApiKeys, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::KeyFile {
            path: path.to_path_buf(),
            source,
        })?;
        let keys = ApiKeys::parse(&text);
        if keys.digests.is_empty() {
            return Err(ServeError::NoKeys(path.to_path_buf()));
        }
        Ok(keys)
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `key` is one of the keys (constant time in the key's content).
    pub fn accepts(&self, key: &str) -> bool {
        let d = digest(key.as_bytes());
        let mut ok = subtle::Choice::from(0u8);
        for k in &self.digests {
            ok |= k.as_slice().ct_eq(d.as_slice());
        }
        bool::from(ok)
    }

    /// Checks an `Authorization` header value (`Bearer KEY`).
    pub fn check(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        let Some(value) = authorization else {
            return Err(ApiError::unauthorized(
                "You didn't provide an API key: send `Authorization: Bearer KEY`",
            ));
        };
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("The Authorization header must be `Bearer KEY`")
            })?;
        if self.accepts(key) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("Incorrect API key provided"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_lines_and_bearer_check() {
        let keys = ApiKeys::parse("# comment\n  sk-one \n\nsk-two\n");
        assert_eq!(keys.len(), 2);
        assert!(keys.accepts("sk-one") && keys.accepts("sk-two"));
        assert!(!keys.accepts("sk-on") && !keys.accepts("sk-one2") && !keys.accepts(""));
        assert!(keys.check(Some("Bearer sk-two")).is_ok());
        for bad in [
            None,
            Some("sk-two"),
            Some("Bearer sk-three"),
            Some("Basic x"),
        ] {
            let e = keys.check(bad).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::UNAUTHORIZED);
        }
    }

    #[test]
    fn an_empty_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "# nothing\n\n").unwrap();
        assert!(matches!(
            ApiKeys::from_file(&path),
            Err(ServeError::NoKeys(_))
        ));
    }
}
