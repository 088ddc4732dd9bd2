//! `torch.save` zip archives: finds `<top>/data.pkl`, checks the byte order, and feeds the
//! storages `<top>/data/<key>` to the pickle VM as its persistent ids.
//!
//! The legacy (pre-1.6) non-zip format is recognised and refused with a clear message. Entries
//! must be stored uncompressed, which is how torch writes them.

use super::budget::Budget;
use super::error::CheckpointError;
use super::file::{CheckpointFile, open_regular};
use super::globals::{ClassAllowList, storage_dtype_of_global};
use super::pickle::{PersistentLoad, unpickle_with};
use super::strided::Storage;
use super::value::PickleValue;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zip::ZipArchive;
use zip::result::ZipError;

/// Reads a `torch.save` file into a value tree whose tensors are file-backed views (read when
/// they are written; see `strided.rs`).
///
/// Only whitelisted torch globals and the classes in `allow` may appear; anything else (for
/// example `os.system`) is an error and nothing is ever executed. Only regular files are
/// opened; zip entries may not overlap; what the file yields is bounded by its budget
/// (`budget.rs`).
pub fn read_pytorch(path: &Path, allow: &ClassAllowList) -> Result<PickleValue, CheckpointError> {
    let file = Arc::new(CheckpointFile::open(path)?);
    let file_len = file.len();
    let magic = file.read_at(0, file_len.min(4) as usize)?;
    check_magic(path, &magic, &file)?;

    let (zip_file, _) = open_regular(path)?;
    let mut archive =
        ZipArchive::new(BufReader::new(zip_file)).map_err(|e| zip_error(path, None, e))?;
    check_no_overlaps(path, file_len, &mut archive)?;

    let pkl_name = find_data_pkl(&archive).ok_or_else(|| CheckpointError::MissingEntry {
        path: path.to_path_buf(),
        entry: "<top>/data.pkl".into(),
    })?;
    let prefix = pkl_name
        .strip_suffix("data.pkl")
        .unwrap_or_default()
        .to_string();

    let mut reader = EntryReader {
        path: path.to_path_buf(),
        file_len,
        archive: &mut archive,
    };
    let byteorder_name = format!("{prefix}byteorder");
    if reader.has(&byteorder_name) {
        let order = reader.read(&byteorder_name)?;
        let order = String::from_utf8_lossy(&order).trim().to_string();
        if order != "little" {
            return Err(CheckpointError::BigEndian {
                path: path.to_path_buf(),
                entry: byteorder_name,
                value: order,
            });
        }
    }
    let pkl = reader.read(&pkl_name)?;
    let origin = format!("{}: zip entry `{pkl_name}`", path.display());
    let mut budget = Budget::for_file(path.display().to_string(), file_len);
    let mut loader = StorageLoader {
        reader,
        file,
        prefix,
        origin: origin.clone(),
        cache: HashMap::new(),
    };
    unpickle_with(&pkl, &origin, allow, &mut loader, &mut budget)
}

/// A zip error in words a user can act on (a cut file reads as "truncated", not "i/o error").
fn zip_error(path: &Path, entry: Option<&str>, e: ZipError) -> CheckpointError {
    let message = match e {
        ZipError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => format!(
            "the archive is truncated (a read ran past the end of the file: {io}); the file is \
             incomplete or corrupt"
        ),
        ZipError::Io(io) => format!("cannot read the archive: {io}"),
        ZipError::InvalidArchive(m) => {
            format!("not a valid zip archive ({m}); the file is truncated or corrupt")
        }
        other => other.to_string(),
    };
    CheckpointError::Zip {
        path: path.to_path_buf(),
        entry: entry.map(str::to_string),
        message,
    }
}

/// Every entry's local header and data must lie inside the file and apart from every other
/// entry's: a central directory whose entries share bytes (one blob listed thousands of times)
/// is refused.
fn check_no_overlaps(
    path: &Path,
    file_len: u64,
    archive: &mut ZipArchive<BufReader<File>>,
) -> Result<(), CheckpointError> {
    let mut spans = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| zip_error(path, None, e))?;
        let name = entry.name().to_string();
        let end = entry.data_start().checked_add(entry.compressed_size());
        match end {
            Some(end) if end <= file_len => spans.push((entry.header_start(), end, name)),
            _ => {
                return Err(CheckpointError::Zip {
                    path: path.to_path_buf(),
                    entry: Some(name),
                    message: format!(
                        "its data ({} bytes at offset {}) runs past the end of the {file_len}-byte \
                         file; the file is truncated or corrupt",
                        entry.compressed_size(),
                        entry.data_start()
                    ),
                });
            }
        }
    }
    spans.sort();
    for pair in spans.windows(2) {
        if let [(a_start, a_end, a), (b_start, _, b)] = pair
            && b_start < a_end
        {
            return Err(CheckpointError::Zip {
                path: path.to_path_buf(),
                entry: Some(b.clone()),
                message: format!(
                    "overlaps entry `{a}` (bytes {b_start}.. inside {a_start}..{a_end}); entries \
                     sharing bytes are refused"
                ),
            });
        }
    }
    Ok(())
}

/// Zip archives pass; a pickle (0x80 PROTO) or a tar is the legacy format.
fn check_magic(path: &Path, magic: &[u8], file: &CheckpointFile) -> Result<(), CheckpointError> {
    if magic.starts_with(b"PK\x03\x04") || magic.starts_with(b"PK\x05\x06") {
        return Ok(());
    }
    if magic.first() == Some(&0x80) {
        return Err(CheckpointError::LegacyFormat {
            path: path.to_path_buf(),
        });
    }
    // Very old torch.save wrote a tar archive ("ustar" at byte 257).
    let is_tar = file.len() >= 262
        && file
            .read_at(257, 5)
            .is_ok_and(|header| header == b"ustar".as_slice());
    Err(if is_tar {
        CheckpointError::LegacyFormat {
            path: path.to_path_buf(),
        }
    } else {
        CheckpointError::UnknownFormat {
            path: path.to_path_buf(),
        }
    })
}

/// `<top>/data.pkl` with any top folder name (the shallowest one if several).
fn find_data_pkl<R: Read + std::io::Seek>(archive: &ZipArchive<R>) -> Option<String> {
    archive
        .file_names()
        .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| (n.matches('/').count(), n.len()))
        .map(str::to_string)
}

struct EntryReader<'a> {
    path: PathBuf,
    file_len: u64,
    archive: &'a mut ZipArchive<BufReader<File>>,
}

impl EntryReader<'_> {
    fn has(&self, name: &str) -> bool {
        self.archive.index_for_name(name).is_some()
    }

    fn missing(&self, name: &str) -> CheckpointError {
        CheckpointError::MissingEntry {
            path: self.path.clone(),
            entry: name.to_string(),
        }
    }

    /// The index of a stored (uncompressed) entry.
    fn stored_index(&mut self, name: &str) -> Result<usize, CheckpointError> {
        let index = self
            .archive
            .index_for_name(name)
            .ok_or_else(|| self.missing(name))?;
        // Check the method on the raw entry first: opening a compressed entry whose method is not
        // built in fails with a generic message.
        let method = self
            .archive
            .by_index_raw(index)
            .map_err(|e| zip_error(&self.path, Some(name), e))?
            .compression();
        if method != zip::CompressionMethod::Stored {
            return Err(CheckpointError::CompressedEntry {
                path: self.path.clone(),
                entry: name.to_string(),
                method: format!("{method:?}"),
            });
        }
        Ok(index)
    }

    /// The bytes of a stored entry (only for the small ones: `data.pkl`, `byteorder`).
    fn read(&mut self, name: &str) -> Result<Vec<u8>, CheckpointError> {
        let index = self.stored_index(name)?;
        let (path, file_len) = (self.path.clone(), self.file_len);
        let mut entry = match self.archive.by_index(index) {
            Ok(e) => e,
            Err(ZipError::FileNotFound) => {
                return Err(CheckpointError::MissingEntry {
                    path,
                    entry: name.to_string(),
                });
            }
            Err(e) => return Err(zip_error(&path, Some(name), e)),
        };
        let size = entry.size();
        if size > file_len {
            return Err(CheckpointError::Zip {
                path,
                entry: Some(name.to_string()),
                message: format!("declared size {size} exceeds the file size {file_len}"),
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry
            .read_to_end(&mut buf)
            .map_err(|e| zip_error(&path, Some(name), ZipError::Io(e)))?;
        Ok(buf)
    }

    /// Where a stored entry's bytes are in the file (offset, length), after reading them once
    /// through the zip reader to check their CRC (in small chunks: nothing is kept).
    fn locate(&mut self, name: &str) -> Result<(u64, u64), CheckpointError> {
        let index = self.stored_index(name)?;
        let path = self.path.clone();
        let mut entry = match self.archive.by_index(index) {
            Ok(e) => e,
            Err(ZipError::FileNotFound) => {
                return Err(CheckpointError::MissingEntry {
                    path,
                    entry: name.to_string(),
                });
            }
            Err(e) => return Err(zip_error(&path, Some(name), e)),
        };
        let (start, size) = (entry.data_start(), entry.size());
        std::io::copy(&mut entry, &mut std::io::sink())
            .map_err(|e| zip_error(&path, Some(name), ZipError::Io(e)))?;
        Ok((start, size))
    }
}

/// Persistent ids `('storage', storage_type, key, location, numel)` → storages (byte ranges of
/// the file), each zip entry located and CRC-checked once and shared by every tensor that
/// views it.
struct StorageLoader<'a> {
    reader: EntryReader<'a>,
    file: Arc<CheckpointFile>,
    prefix: String,
    origin: String,
    cache: HashMap<String, Storage>,
}

impl StorageLoader<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> CheckpointError {
        CheckpointError::Storage {
            origin: self.origin.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

impl PersistentLoad for StorageLoader<'_> {
    fn load(&mut self, pid: &PickleValue) -> Result<Option<Storage>, CheckpointError> {
        let parts = pid.as_list().unwrap_or_default();
        let (Some("storage"), Some(ty), Some(key), Some(numel)) = (
            parts.first().and_then(PickleValue::as_str),
            parts.get(1),
            parts.get(2).and_then(PickleValue::as_str),
            parts.get(4).and_then(PickleValue::as_int),
        ) else {
            return Err(self.err("?", format!("unsupported persistent id {pid:?}")));
        };
        if let Some(s) = self.cache.get(key) {
            return Ok(Some(s.clone()));
        }
        let ty = match ty {
            PickleValue::Global(name) => name.as_str(),
            other => return Err(self.err(key, format!("storage type is a {}", other.type_name()))),
        };
        let sdtype = storage_dtype_of_global(ty)
            .ok_or_else(|| self.err(key, format!("unsupported storage type {ty}")))?;
        let numel = u64::try_from(numel).map_err(|_| self.err(key, "negative numel"))?;
        let want = numel
            .checked_mul(sdtype.size() as u64)
            .ok_or_else(|| self.err(key, "numel overflows"))?;
        let entry = format!("{}data/{key}", self.prefix);
        let (start, len) = self.reader.locate(&entry)?;
        if len < want {
            return Err(self.err(
                key,
                format!("entry has {len} bytes, {numel} elements of {ty} need {want}"),
            ));
        }
        let storage = Storage {
            key: key.to_string(),
            dtype: sdtype,
            file: self.file.clone(),
            start,
            len: want,
        };
        self.cache.insert(key.to_string(), storage.clone());
        Ok(Some(storage))
    }
}
