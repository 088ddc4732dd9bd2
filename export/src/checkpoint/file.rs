//! Opening checkpoint files, and reading byte ranges of them later.
//!
//! Only regular files are opened: a FIFO would block the open, and `/dev/zero` or
//! `/dev/urandom` never end, so hashing or parsing one would hang or exhaust memory. The check
//! happens before anything reads the file (the provenance hash included). [`CheckpointFile`]
//! keeps the file open for file-backed tensors and reads their ranges on demand, checking each
//! range against the length the file had when it was opened.

use super::error::CheckpointError;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What `path` is, when it is not a regular file.
fn not_regular(meta: &std::fs::Metadata) -> Option<&'static str> {
    let ty = meta.file_type();
    if ty.is_file() {
        return None;
    }
    if ty.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ty.is_fifo() {
            return Some("a FIFO (named pipe)");
        }
        if ty.is_char_device() {
            return Some("a character device");
        }
        if ty.is_block_device() {
            return Some("a block device");
        }
        if ty.is_socket() {
            return Some("a socket");
        }
    }
    Some("not a regular file")
}

/// Opens `path` for reading if it is a regular file (symlinks are followed), with its length.
pub fn open_regular(path: &Path) -> Result<(File, u64), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let refuse = |kind: &'static str| CheckpointError::NotRegularFile {
        path: path.to_path_buf(),
        kind,
    };
    // Checked before opening: opening a FIFO blocks until a writer appears.
    let meta = std::fs::metadata(path).map_err(io)?;
    if let Some(kind) = not_regular(&meta) {
        return Err(refuse(kind));
    }
    let file = File::open(path).map_err(io)?;
    // And again on the open handle, in case the path was replaced in between.
    let meta = file.metadata().map_err(io)?;
    if let Some(kind) = not_regular(&meta) {
        return Err(refuse(kind));
    }
    Ok((file, meta.len()))
}

/// An open checkpoint file that file-backed tensors read their bytes from.
#[derive(Debug)]
pub(crate) struct CheckpointFile {
    path: PathBuf,
    len: u64,
    file: Mutex<File>,
}

impl CheckpointFile {
    /// Opens a regular file (see [`open_regular`]).
    pub(crate) fn open(path: &Path) -> Result<CheckpointFile, CheckpointError> {
        let (file, len) = open_regular(path)?;
        Ok(CheckpointFile {
            path: path.to_path_buf(),
            len,
            file: Mutex::new(file),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length when it was opened.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// `len` bytes at `offset`; a range past the end (the file shrank, or a corrupt offset) is
    /// an error, never a short read.
    pub(crate) fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, CheckpointError> {
        let end = u64::try_from(len).ok().and_then(|l| offset.checked_add(l));
        let io = |source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        };
        if end.is_none_or(|end| end > self.len) {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "bytes {offset}..{} are past the end of the {}-byte file",
                    end.map_or_else(|| "overflow".to_string(), |e| e.to_string()),
                    self.len
                ),
            )));
        }
        let mut buf = Vec::new();
        buf.try_reserve_exact(len).map_err(|_| {
            io(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot allocate {len} bytes"),
            ))
        })?;
        buf.resize(len, 0);
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        file.read_exact(&mut buf).map_err(|e| {
            io(std::io::Error::new(
                e.kind(),
                format!("reading bytes {offset}..{offset}+{len} (did the file change?): {e}"),
            ))
        })?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let e = open_regular(dir.path()).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        #[cfg(unix)]
        {
            let e = open_regular(Path::new("/dev/zero"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("/dev/zero") && e.contains("character device"),
                "{e}"
            );
        }
    }

    #[test]
    fn reads_ranges_inside_the_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let f = CheckpointFile::open(&p).unwrap();
        assert_eq!(f.read_at(2, 3).unwrap(), b"234");
        let e = f.read_at(8, 3).unwrap_err();
        assert!(format!("{e:?}").contains("past the end"), "{e:?}");
        assert!(f.read_at(u64::MAX, 3).is_err());
    }
}
