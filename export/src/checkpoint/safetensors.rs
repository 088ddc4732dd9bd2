//! safetensors files: an 8-byte little-endian header length, a JSON header mapping names to
//! `{dtype, shape, data_offsets}`, then the raw little-endian tensor bytes.
//!
//! Parsed by hand (the format is small) with every length and offset checked, so a corrupt
//! file is an error naming the tensor.

use super::error::CheckpointError;
use crate::tensor::TensorData;
use dalle_bundle::DType;
use std::collections::BTreeMap;
use std::path::Path;

/// Headers larger than this are refused (the reference implementation uses the same bound).
const MAX_HEADER: u64 = 100 << 20;

/// Reads every tensor of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, TensorData>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_safetensors(&bytes).map_err(|message| CheckpointError::Safetensors {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses safetensors bytes; the error is a message for [`CheckpointError::Safetensors`].
pub(crate) fn parse_safetensors(bytes: &[u8]) -> Result<BTreeMap<String, TensorData>, String> {
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or("file is shorter than the 8-byte header length")?;
    let header_len = u64::from_le_bytes(len_bytes);
    let available = bytes.len() as u64 - 8;
    if header_len > MAX_HEADER || header_len > available {
        return Err(format!(
            "header length {header_len} exceeds the file ({available} bytes after the length)"
        ));
    }
    let header_end = 8 + header_len as usize;
    let header = bytes.get(8..header_end).ok_or("header out of bounds")?;
    let data = bytes.get(header_end..).unwrap_or_default();
    let header: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| format!("header is not valid JSON: {e}"))?;
    let entries = header.as_object().ok_or("header is not a JSON object")?;

    let mut out = BTreeMap::new();
    let mut spans = Vec::new();
    for (name, info) in entries {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| format!("tensor `{name}`: {what}");
        let dtype_name = info
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad("missing dtype"))?;
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("missing shape"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("shape is not a list of non-negative integers"))?;
        let offsets: Vec<usize> = info
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .ok_or_else(|| bad("missing data_offsets"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("data_offsets are not non-negative integers"))?;
        let [begin, end] = offsets[..] else {
            return Err(bad("data_offsets must be [begin, end]"));
        };
        if begin > end || end > data.len() {
            return Err(bad(&format!(
                "data_offsets [{begin}, {end}] outside the {}-byte data section",
                data.len()
            )));
        }
        let (dtype, widen_i16) = match dtype_name {
            "F32" => (DType::F32, false),
            "F16" => (DType::F16, false),
            "BF16" => (DType::BF16, false),
            "F64" => (DType::F64, false),
            "I64" => (DType::I64, false),
            "I32" => (DType::I32, false),
            "I16" => (DType::I32, true),
            "I8" => (DType::I8, false),
            "U8" => (DType::U8, false),
            "BOOL" => (DType::Bool, false),
            other => return Err(bad(&format!("unsupported dtype {other}"))),
        };
        let stored_size = if widen_i16 { 2 } else { dtype.size() };
        let need = shape
            .iter()
            .try_fold(stored_size, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad("shape overflows"))?;
        if end - begin != need {
            return Err(bad(&format!(
                "{dtype_name}{shape:?} needs {need} bytes, data_offsets span {}",
                end - begin
            )));
        }
        let raw = data
            .get(begin..end)
            .ok_or_else(|| bad("data out of bounds"))?;
        let raw = if widen_i16 {
            raw.chunks_exact(2)
                .flat_map(|c| i32::from(i16::from_le_bytes([c[0], c[1]])).to_le_bytes())
                .collect()
        } else {
            raw.to_vec()
        };
        let tensor = TensorData::from_bytes(dtype, shape, raw).map_err(|e| bad(&e.to_string()))?;
        spans.push((begin, end, name.clone()));
        out.insert(name.clone(), tensor);
    }
    spans.sort();
    for pair in spans.windows(2) {
        if let [(_, end_a, a), (begin_b, _, b)] = pair
            && begin_b < end_a
        {
            return Err(format!("tensors `{a}` and `{b}` overlap"));
        }
    }
    Ok(out)
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
        data.extend_from_slice(t.bytes());
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

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(parse_safetensors(&encode_safetensors(&m)).unwrap(), m);
    }

    #[test]
    fn corrupt_files_are_errors() {
        let good = encode_safetensors(&sample());
        // Every truncation fails cleanly.
        for cut in 0..good.len() {
            assert!(parse_safetensors(&good[..cut]).is_err(), "cut at {cut}");
        }
        // A huge header length.
        let mut bad = good.clone();
        bad[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_safetensors(&bad).is_err());
        // Garbage JSON.
        let mut bad = good.clone();
        bad[8] = b'[';
        assert!(parse_safetensors(&bad).is_err());
        // Offsets that do not match the shape, dtype unknown, overlap.
        for header in [
            r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            r#"{"x":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#,
            r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
            r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#,
            r#"{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
        ] {
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(&[0u8; 8]);
            let err = parse_safetensors(&bytes).unwrap_err();
            assert!(err.contains('x') || err.contains("overlap"), "{err}");
        }
    }
}
