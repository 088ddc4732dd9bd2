//! The per-file budget for what reading a checkpoint may produce.
//!
//! A few hundred bytes of pickle can describe gigabytes: views that repeat one element
//! (stride 0), thousands of tensors over one storage, values referenced many times through the
//! memo. Tensors are file-backed and shared values are reference-counted, so none of this costs
//! memory while reading, but every tensor is written out later. So each file gets one budget:
//! the bytes of all tensors it yields (each distinct tensor counted once, however often the
//! pickle references it) plus the bytes of strings copied for repeated references may total at
//! most the file's size plus [`EXPANSION_ALLOWANCE`]. A real checkpoint stays far below it:
//! its tensors are its storages, stored in the file.

use super::error::CheckpointError;

/// How much a file may expand beyond its own size (64 MiB).
pub const EXPANSION_ALLOWANCE: u64 = 64 << 20;

/// Bytes produced so far against the limit; see the module docs.
#[derive(Debug)]
pub(crate) struct Budget {
    origin: String,
    file_len: u64,
    limit: u64,
    used: u64,
}

impl Budget {
    /// The budget of a file of `file_len` bytes; `origin` names it in errors.
    pub(crate) fn for_file(origin: impl Into<String>, file_len: u64) -> Budget {
        Budget {
            origin: origin.into(),
            file_len,
            limit: file_len.saturating_add(EXPANSION_ALLOWANCE),
            used: 0,
        }
    }

    /// Counts `bytes` for `what` (e.g. "tensor float32[1024, 1024] from storage `3`").
    pub(crate) fn charge(
        &mut self,
        bytes: u64,
        what: impl FnOnce() -> String,
    ) -> Result<(), CheckpointError> {
        match self.used.checked_add(bytes) {
            Some(total) if total <= self.limit => {
                self.used = total;
                Ok(())
            }
            total => Err(CheckpointError::OverBudget {
                origin: self.origin.clone(),
                what: what(),
                bytes,
                total: total.unwrap_or(u64::MAX),
                limit: self.limit,
                file_len: self.file_len,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_file_size_plus_allowance() {
        let mut b = Budget::for_file("f.pt", 100);
        b.charge(EXPANSION_ALLOWANCE, || "a".into()).unwrap();
        b.charge(100, || "b".into()).unwrap();
        let e = b.charge(1, || "tensor c".into()).unwrap_err().to_string();
        assert!(e.contains("f.pt") && e.contains("tensor c"), "{e}");
        assert!(
            e.contains(&format!("limit of {} bytes", 100 + EXPANSION_ALLOWANCE)),
            "{e}"
        );
        assert!(b.charge(u64::MAX, || "d".into()).is_err());
    }
}
