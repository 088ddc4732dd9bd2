//! `torch.save` zip archives: finds `<top>/data.pkl`, checks the byte order, and feeds the
//! storages `<top>/data/<key>` to the pickle VM as its persistent ids.
//!
//! The legacy (pre-1.6) non-zip format is recognised and refused with a clear message. Entries
//! must be stored uncompressed, which is how torch writes them.

use super::error::CheckpointError;
use super::globals::{ClassAllowList, StorageDtype, storage_dtype_of_global};
use super::pickle::{PersistentLoad, unpickle_with};
use super::strided::Storage;
use super::value::PickleValue;
use dalle_bundle::DType;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use zip::ZipArchive;
use zip::result::ZipError;

/// Reads a `torch.save` file into a value tree with every tensor materialized.
///
/// Only whitelisted torch globals and the classes in `allow` may appear; anything else (for
/// example `os.system`) is an error and nothing is ever executed.
pub fn read_pytorch(path: &Path, allow: &ClassAllowList) -> Result<PickleValue, CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut magic = [0u8; 4];
    let got = read_prefix(&mut file, &mut magic).map_err(io)?;
    check_magic(path, magic.get(..got).unwrap_or_default(), &mut file)?;

    let zip_err = |entry: Option<&str>, e: ZipError| CheckpointError::Zip {
        path: path.to_path_buf(),
        entry: entry.map(str::to_string),
        message: e.to_string(),
    };
    let file = File::open(path).map_err(io)?;
    let mut archive = ZipArchive::new(BufReader::new(file)).map_err(|e| zip_err(None, e))?;

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
    let mut loader = StorageLoader {
        reader,
        prefix,
        origin: origin.clone(),
        cache: HashMap::new(),
    };
    unpickle_with(&pkl, &origin, allow, &mut loader)
}

fn read_prefix(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(buf.get_mut(got..).unwrap_or_default())? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Zip archives pass; a pickle (0x80 PROTO) or a tar is the legacy format.
fn check_magic(path: &Path, magic: &[u8], file: &mut File) -> Result<(), CheckpointError> {
    if magic.starts_with(b"PK\x03\x04") || magic.starts_with(b"PK\x05\x06") {
        return Ok(());
    }
    if magic.first() == Some(&0x80) {
        return Err(CheckpointError::LegacyFormat {
            path: path.to_path_buf(),
        });
    }
    // Very old torch.save wrote a tar archive ("ustar" at byte 257).
    let mut header = [0u8; 262];
    use std::io::Seek;
    let is_tar = file.seek(std::io::SeekFrom::Start(0)).is_ok()
        && read_prefix(file, &mut header).is_ok_and(|n| n == header.len())
        && header.get(257..262) == Some(b"ustar".as_slice());
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

    /// The bytes of a stored (uncompressed) entry.
    fn read(&mut self, name: &str) -> Result<Vec<u8>, CheckpointError> {
        let zip_err = |message: String| CheckpointError::Zip {
            path: self.path.clone(),
            entry: Some(name.to_string()),
            message,
        };
        let Some(index) = self.archive.index_for_name(name) else {
            return Err(CheckpointError::MissingEntry {
                path: self.path.clone(),
                entry: name.to_string(),
            });
        };
        // Check the method on the raw entry first: opening a compressed entry whose method is not
        // built in fails with a generic message.
        let method = self
            .archive
            .by_index_raw(index)
            .map_err(|e| zip_err(e.to_string()))?
            .compression();
        if method != zip::CompressionMethod::Stored {
            return Err(CheckpointError::CompressedEntry {
                path: self.path.clone(),
                entry: name.to_string(),
                method: format!("{method:?}"),
            });
        }
        let mut entry = match self.archive.by_index(index) {
            Ok(e) => e,
            Err(ZipError::FileNotFound) => {
                return Err(CheckpointError::MissingEntry {
                    path: self.path.clone(),
                    entry: name.to_string(),
                });
            }
            Err(e) => return Err(zip_err(e.to_string())),
        };
        let size = entry.size();
        if size > self.file_len {
            return Err(zip_err(format!(
                "declared size {size} exceeds the file size {}",
                self.file_len
            )));
        }
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry
            .read_to_end(&mut buf)
            .map_err(|e| zip_err(e.to_string()))?;
        Ok(buf)
    }
}

/// Persistent ids `('storage', storage_type, key, location, numel)` → loaded storages, each
/// zip entry read once and shared by every tensor that views it.
struct StorageLoader<'a> {
    reader: EntryReader<'a>,
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
        let numel = usize::try_from(numel).map_err(|_| self.err(key, "negative numel"))?;
        let want = numel
            .checked_mul(sdtype.size())
            .ok_or_else(|| self.err(key, "numel overflows"))?;
        let entry = format!("{}data/{key}", self.prefix);
        let mut bytes = self.reader.read(&entry)?;
        if bytes.len() < want {
            return Err(self.err(
                key,
                format!(
                    "entry has {} bytes, {numel} elements of {ty} need {want}",
                    bytes.len()
                ),
            ));
        }
        bytes.truncate(want);
        let (dtype, bytes) = match sdtype {
            StorageDtype::Plain(d) => (d, bytes),
            // No int16 in the bundle's dtypes: widen losslessly.
            StorageDtype::I16 => (
                DType::I32,
                bytes
                    .chunks_exact(2)
                    .flat_map(|c| i32::from(i16::from_le_bytes([c[0], c[1]])).to_le_bytes())
                    .collect(),
            ),
        };
        let storage = Storage {
            key: key.to_string(),
            dtype,
            bytes: Rc::new(bytes),
        };
        self.cache.insert(key.to_string(), storage.clone());
        Ok(Some(storage))
    }
}
