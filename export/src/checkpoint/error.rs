//! The checkpoint readers' error type.
//!
//! Every variant says what went wrong and where: the file, the zip entry, the pickle byte
//! offset, the storage key or the tensor name, so a user can tell a corrupt download from an
//! unsupported format from a malicious file.

use std::path::PathBuf;

/// Everything that can go wrong while reading a PyTorch or safetensors checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The path is a directory, FIFO, device or socket: refused before anything reads it.
    #[error(
        "{}: {kind}, not a regular file (checkpoints and tokenizer files must be regular files)",
        path.display()
    )]
    NotRegularFile { path: PathBuf, kind: &'static str },

    /// The tensors a file describes would total more than its budget (see `budget.rs`).
    #[error(
        "{origin}: {what} ({bytes} bytes) would bring what this file makes the reader produce to \
         {total} bytes, over the limit of {limit} bytes (the file's {file_len} bytes + 64 MiB; \
         a value referenced many times counts once): the file is corrupt or hostile"
    )]
    OverBudget {
        origin: String,
        what: String,
        bytes: u64,
        total: u64,
        limit: u64,
        file_len: u64,
    },

    /// A pickle that builds far more objects than its size explains.
    #[error(
        "{origin}: at pickle byte {offset}: the pickle builds more than {limit} objects and \
         references (the limit for its {data_len} bytes: 4 per byte + 1 Mi); the file is \
         corrupt or hostile"
    )]
    TooManyObjects {
        origin: String,
        offset: usize,
        limit: usize,
        data_len: usize,
    },

    /// The zip container is unreadable (truncated, corrupt, bad CRC).
    #[error("{}: {}{message}", path.display(), entry.as_ref().map(|e| format!("zip entry `{e}`: ")).unwrap_or_default())]
    Zip {
        path: PathBuf,
        entry: Option<String>,
        message: String,
    },

    #[error(
        "{}: legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with \
         torch >= 1.6 (`torch.save(torch.load(path, weights_only=False), path)`) or convert it \
         to safetensors",
        path.display()
    )]
    LegacyFormat { path: PathBuf },

    #[error("{}: not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)", path.display())]
    UnknownFormat { path: PathBuf },

    #[error(
        "{}: big-endian checkpoints are not supported (zip entry `{entry}` says `{value}`)",
        path.display()
    )]
    BigEndian {
        path: PathBuf,
        entry: String,
        value: String,
    },

    #[error(
        "{}: zip entry `{entry}` is compressed ({method}); only stored (uncompressed) entries are \
         supported, as torch.save writes them",
        path.display()
    )]
    CompressedEntry {
        path: PathBuf,
        entry: String,
        method: String,
    },

    #[error("{}: zip entry `{entry}` is missing", path.display())]
    MissingEntry { path: PathBuf, entry: String },

    /// Malformed, truncated or unsupported pickle data.
    #[error("{origin}: at pickle byte {offset}: {message}")]
    Pickle {
        origin: String,
        offset: usize,
        message: String,
    },

    /// The pickle names a global outside the whitelist. Nothing was executed.
    #[error(
        "{origin}: pickle references forbidden global `{name}` at byte {offset} (only tensors, \
         containers and allow-listed module classes are read; nothing is executed)"
    )]
    ForbiddenGlobal {
        origin: String,
        name: String,
        offset: usize,
    },

    /// A tensor storage is missing, too short or of an unsupported type.
    #[error("{origin}: storage `{key}`: {message}")]
    Storage {
        origin: String,
        key: String,
        message: String,
    },

    /// A malformed safetensors file.
    #[error("{}: {message}", path.display())]
    Safetensors { path: PathBuf, message: String },

    /// The unpickled value does not have the expected structure (not a module, not a tensor).
    #[error("{context}: {message}")]
    Structure { context: String, message: String },
}

impl CheckpointError {
    pub(crate) fn structure(context: impl Into<String>, message: impl Into<String>) -> Self {
        CheckpointError::Structure {
            context: context.into(),
            message: message.into(),
        }
    }
}
