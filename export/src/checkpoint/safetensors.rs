//! safetensors files: an 8-byte little-endian header length, a JSON header mapping names to
//! `{dtype, shape, data_offsets}`, then the raw little-endian tensor bytes.
//!
//! The header is checked by the `safetensors` crate's own `Metadata` (offsets contiguous from
//! 0, no overlaps, each size matching dtype × shape, checked arithmetic), plus the checks its
//! `SafeTensors::deserialize` makes on the whole file: the header length limit and full
//! coverage of the data section (bytes inserted or appended are refused). Duplicate names,
//! which a JSON map would silently collapse, are refused too. Tensors are file-backed: only
//! the header is read here.

use super::error::CheckpointError;
use super::file::CheckpointFile;
use super::globals::StorageDtype;
use super::strided::{Storage, view};
use crate::tensor::TensorData;
use dalle_bundle::DType;
use safetensors::Dtype;
use safetensors::tensor::Metadata;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The `safetensors` crate's header limit (its `MAX_HEADER_SIZE`, 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// Reads every tensor of a safetensors file (file-backed; see the module docs).
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, TensorData>, CheckpointError> {
    let file = Arc::new(CheckpointFile::open(path)?);
    let err = |message: String| CheckpointError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    if file.len() < 8 {
        return Err(err(format!(
            "the file has {} bytes, fewer than the 8-byte header length; not a safetensors file",
            file.len()
        )));
    }
    let len_bytes: [u8; 8] = file
        .read_at(0, 8)?
        .try_into()
        .map_err(|_| err("cannot read the header length".into()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    let available = file.len() - 8;
    if header_len > MAX_HEADER {
        return Err(err(format!(
            "header length {header_len} exceeds the safetensors limit of {MAX_HEADER} bytes"
        )));
    }
    if header_len > available {
        return Err(err(format!(
            "header length {header_len} runs past the end of the file ({available} bytes follow \
             the length field): truncated, or not a safetensors file"
        )));
    }
    // Both fit in usize: at most 100 MB, and inside the file.
    let header = file.read_at(8, header_len as usize)?;
    let data_start = 8 + header_len;
    let tensors = parse_header(&header, file.len() - data_start).map_err(err)?;
    let mut out = BTreeMap::new();
    for (name, dtype, shape, begin, end) in tensors {
        let storage = Storage {
            key: name.clone(),
            dtype,
            file: file.clone(),
            start: data_start + begin,
            len: end - begin,
        };
        let numel = shape.iter().product::<usize>();
        let numel = i64::try_from(numel).map_err(|_| err(format!("tensor `{name}`: too large")))?;
        let tensor = view(&storage, None, 0, &[numel], &[1])
            .and_then(|t| t.reshape(shape).map_err(|e| e.to_string()))
            .map_err(|m| err(format!("tensor `{name}`: {m}")))?;
        out.insert(name, tensor);
    }
    Ok(out)
}

/// One tensor of a header: name, element type in the file, shape, data-section byte range.
type HeaderEntry = (String, StorageDtype, Vec<usize>, u64, u64);

/// Checks a header against a data section of `data_len` bytes; the error is a message for
/// [`CheckpointError::Safetensors`].
pub(crate) fn parse_header(header: &[u8], data_len: u64) -> Result<Vec<HeaderEntry>, String> {
    let text = std::str::from_utf8(header).map_err(|e| format!("header is not UTF-8: {e}"))?;
    let keys: KeysInOrder =
        serde_json::from_str(text).map_err(|e| format!("header is not valid JSON: {e}"))?;
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = keys.0.iter().find(|k| !seen.insert(k.as_str())) {
        return Err(format!("tensor `{dup}` is listed twice in the header"));
    }
    let metadata: Metadata =
        serde_json::from_str(text).map_err(|e| format!("invalid header: {e}"))?;
    let covered = metadata.data_len() as u64;
    if covered != data_len {
        return Err(format!(
            "the tensors cover {covered} bytes but the data section has {data_len}: the file is \
             not fully covered by its tensors (bytes inserted, appended or cut)"
        ));
    }
    let mut out = Vec::new();
    for name in metadata.offset_keys() {
        let info = metadata
            .info(&name)
            .ok_or_else(|| format!("tensor `{name}`: missing from the header"))?;
        let dtype = match info.dtype {
            Dtype::F32 => StorageDtype::Plain(DType::F32),
            Dtype::F16 => StorageDtype::Plain(DType::F16),
            Dtype::BF16 => StorageDtype::Plain(DType::BF16),
            Dtype::F64 => StorageDtype::Plain(DType::F64),
            Dtype::I64 => StorageDtype::Plain(DType::I64),
            Dtype::I32 => StorageDtype::Plain(DType::I32),
            Dtype::I16 => StorageDtype::I16,
            Dtype::I8 => StorageDtype::Plain(DType::I8),
            Dtype::U8 => StorageDtype::Plain(DType::U8),
            Dtype::BOOL => StorageDtype::Plain(DType::Bool),
            other => return Err(format!("tensor `{name}`: unsupported dtype {other:?}")),
        };
        let (begin, end) = info.data_offsets;
        out.push((name, dtype, info.shape.clone(), begin as u64, end as u64));
    }
    Ok(out)
}

/// The header's keys in file order (values skipped), to find duplicates.
struct KeysInOrder(Vec<String>);

impl<'de> serde::Deserialize<'de> for KeysInOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = KeysInOrder;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<KeysInOrder, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(KeysInOrder(keys))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// Encodes tensors as safetensors bytes (for tests and small tools).
#[cfg(test)]
pub(crate) fn encode_safetensors(tensors: &BTreeMap<String, TensorData>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, t) in tensors {
        let dtype = match t.dtype() {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F64 => "F64",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I8 => "I8",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
        };
        let begin = data.len();
        data.extend_from_slice(&t.bytes().expect("test tensor"));
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": t.shape(), "data_offsets": [begin, data.len()]}),
        );
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BTreeMap<String, TensorData> {
        let mut m = BTreeMap::new();
        m.insert(
            "a.w".into(),
            TensorData::from_f32(vec![2, 2], &[1., 2., 3., 4.]).unwrap(),
        );
        m.insert(
            "ids".into(),
            TensorData::from_i64(vec![3], &[-1, 0, 7]).unwrap(),
        );
        m
    }

    fn read(bytes: &[u8]) -> Result<BTreeMap<String, TensorData>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        std::fs::write(&path, bytes).unwrap();
        read_safetensors(&path).map_err(|e| e.to_string())
    }

    fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let got = read(&encode_safetensors(&m)).unwrap();
        assert!(got.values().all(TensorData::is_file_backed));
        assert_eq!(got, m);
    }

    #[test]
    fn corrupt_files_are_errors() {
        let good = encode_safetensors(&sample());
        // Every truncation fails cleanly.
        for cut in 0..good.len() {
            assert!(read(&good[..cut]).is_err(), "cut at {cut}");
        }
        // A huge header length, and one just past the end of the file.
        let mut bad = good.clone();
        bad[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = read(&bad).unwrap_err();
        assert!(
            e.contains("exceeds the safetensors limit of 100000000 bytes"),
            "{e}"
        );
        let mut bad = good.clone();
        bad[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
        let e = read(&bad).unwrap_err();
        assert!(e.contains("runs past the end of the file"), "{e}");
        // Garbage JSON.
        let mut bad = good.clone();
        bad[8] = b'[';
        assert!(read(&bad).unwrap_err().contains("JSON"));
        // Offsets that do not match the shape, dtype unknown, reversed, overlapping, negative.
        for header in [
            r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            r#"{"x":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#,
            r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
            r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#,
            r#"{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
        ] {
            let e = read(&with_header(header, &[0u8; 8])).unwrap_err();
            assert!(e.contains("x.safetensors"), "{e}");
        }
    }

    /// Issue 13: bytes inserted into the data section (shifting every later tensor) and a
    /// duplicate name pointing at appended bytes are refused, as the `safetensors` library does.
    #[test]
    fn issue13_inserted_bytes_and_duplicate_names() {
        let header = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        assert_eq!(read(&with_header(header, &[0u8; 8])).unwrap().len(), 2);
        let e = read(&with_header(header, &[0u8; 12])).unwrap_err();
        assert!(
            e.contains("not fully covered") && e.contains("cover 8 bytes"),
            "{e}"
        );
        let dup = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
        let e = read(&with_header(dup, &[0u8; 12])).unwrap_err();
        assert!(e.contains("tensor `a` is listed twice"), "{e}");
    }
}
