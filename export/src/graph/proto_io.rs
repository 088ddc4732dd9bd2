//! Conversion between the builder's types and ONNX protobuf messages, and writing/reading
//! `.onnx` files with optional external data.
//!
//! External data layout: initializers of at least [`ExternalData::threshold_bytes`] are stored
//! in `<graph>.onnx.data` in initializer order, each at a 64-byte-aligned offset, with
//! `location`/`offset`/`length` entries in the `TensorProto` (ONNX external-data spec). This
//! keeps the `.onnx` small and lifts protobuf's 2 GB limit.

use crate::error::{ExportError, Result};
use crate::graph::FinishedModel;
use crate::graph::op::Attr;
use crate::graph::value::{ValueInfo, is_unknown};
use crate::proto;
use crate::tensor::TensorData;
use dalle_bundle::{DType, Dim};
use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Alignment of each tensor inside an external-data file.
pub const EXTERNAL_DATA_ALIGNMENT: u64 = 64;

/// ONNX `TensorProto.DataType` code of a dtype.
pub fn onnx_dtype(d: DType) -> i32 {
    use proto::tensor_proto::DataType as T;
    (match d {
        DType::F32 => T::Float,
        DType::F16 => T::Float16,
        DType::BF16 => T::Bfloat16,
        DType::F64 => T::Double,
        DType::I64 => T::Int64,
        DType::I32 => T::Int32,
        DType::I8 => T::Int8,
        DType::U8 => T::Uint8,
        DType::Bool => T::Bool,
    }) as i32
}

/// The dtype of an ONNX `TensorProto.DataType` code, if supported.
pub fn dtype_from_onnx(code: i32) -> Option<DType> {
    use proto::tensor_proto::DataType as T;
    Some(match T::try_from(code).ok()? {
        T::Float => DType::F32,
        T::Float16 => DType::F16,
        T::Bfloat16 => DType::BF16,
        T::Double => DType::F64,
        T::Int64 => DType::I64,
        T::Int32 => DType::I32,
        T::Int8 => DType::I8,
        T::Uint8 => DType::U8,
        T::Bool => DType::Bool,
        _ => return None,
    })
}

/// A `TensorProto` with the data inline in `raw_data`.
pub fn tensor_proto(name: &str, data: TensorData) -> Result<proto::TensorProto> {
    let mut t = tensor_header(name, &data);
    t.raw_data = Some(data.into_bytes()?);
    Ok(t)
}

/// A `TensorProto` with name, dtype and dims but no data yet.
pub fn tensor_header(name: &str, data: &TensorData) -> proto::TensorProto {
    proto::TensorProto {
        dims: data.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(onnx_dtype(data.dtype())),
        name: Some(name.to_string()),
        ..Default::default()
    }
}

/// A `ValueInfoProto` for a tensor; unknown dims are written without a name.
pub fn value_info_proto(info: &ValueInfo) -> proto::ValueInfoProto {
    use proto::tensor_shape_proto::{Dimension, dimension::Value as DimValue};
    let dim = info
        .shape
        .iter()
        .map(|d| Dimension {
            value: match d {
                Dim::Fixed(n) => Some(DimValue::DimValue(*n as i64)),
                d if is_unknown(d) => None,
                Dim::Symbolic(s) => Some(DimValue::DimParam(s.clone())),
            },
            ..Default::default()
        })
        .collect();
    proto::ValueInfoProto {
        name: Some(info.name.clone()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(
                proto::type_proto::Tensor {
                    elem_type: Some(onnx_dtype(info.dtype)),
                    shape: Some(proto::TensorShapeProto { dim }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An `AttributeProto`.
pub fn attribute_proto(name: &str, attr: &Attr) -> Result<proto::AttributeProto> {
    use proto::attribute_proto::AttributeType as A;
    let mut p = proto::AttributeProto {
        name: Some(name.to_string()),
        ..Default::default()
    };
    match attr {
        Attr::Int(i) => {
            p.r#type = Some(A::Int as i32);
            p.i = Some(*i);
        }
        Attr::Float(f) => {
            p.r#type = Some(A::Float as i32);
            p.f = Some(*f);
        }
        Attr::Ints(v) => {
            p.r#type = Some(A::Ints as i32);
            p.ints = v.clone();
        }
        Attr::Floats(v) => {
            p.r#type = Some(A::Floats as i32);
            p.floats = v.clone();
        }
        Attr::String(s) => {
            p.r#type = Some(A::String as i32);
            p.s = Some(s.as_bytes().to_vec());
        }
        Attr::Tensor(t) => {
            p.r#type = Some(A::Tensor as i32);
            p.t = Some(tensor_proto("", t.clone())?);
        }
    }
    Ok(p)
}

/// Where large initializers go when a model is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalData {
    /// Data file name, relative to the `.onnx` (conventionally `<graph>.onnx.data`).
    pub file_name: String,
    /// Initializers of at least this many bytes go to the data file.
    pub threshold_bytes: usize,
}

impl ExternalData {
    /// `<model file name>.data` with a 1 KiB threshold.
    pub fn beside(model_file_name: &str) -> ExternalData {
        ExternalData {
            file_name: format!("{model_file_name}.data"),
            threshold_bytes: 1024,
        }
    }
}

/// What [`write_model`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenModel {
    pub model_path: PathBuf,
    /// The external-data file, if any tensor went there.
    pub data_path: Option<PathBuf>,
    pub model_bytes: u64,
    pub data_bytes: u64,
}

/// Moves initializers at or above the threshold into an external-data blob (64-byte aligned)
/// and rewrites their `TensorProto`s to point at it. Returns the blob.
pub fn externalize(model: &mut proto::ModelProto, ext: &ExternalData) -> Vec<u8> {
    use proto::tensor_proto::DataLocation;
    let mut blob: Vec<u8> = Vec::new();
    let Some(graph) = model.graph.as_mut() else {
        return blob;
    };
    for t in &mut graph.initializer {
        let big = t
            .raw_data
            .as_ref()
            .is_some_and(|d| d.len() >= ext.threshold_bytes);
        if !big {
            continue;
        }
        let Some(data) = t.raw_data.take() else {
            continue;
        };
        let pad = (EXTERNAL_DATA_ALIGNMENT - blob.len() as u64 % EXTERNAL_DATA_ALIGNMENT)
            % EXTERNAL_DATA_ALIGNMENT;
        blob.resize(blob.len() + pad as usize, 0);
        let offset = blob.len();
        blob.extend_from_slice(&data);
        t.data_location = Some(DataLocation::External as i32);
        let entry = |k: &str, v: String| proto::StringStringEntryProto {
            key: Some(k.to_string()),
            value: Some(v),
        };
        t.external_data = vec![
            entry("location", ext.file_name.clone()),
            entry("offset", offset.to_string()),
            entry("length", data.len().to_string()),
        ];
    }
    blob
}

/// Writes `model` to `path`, moving large initializers to external data when `ext` is given.
/// Files are written in place; bundle-level atomicity comes from writing into a staging
/// directory (see `crate::bundle_writer`).
pub fn write_model(
    mut model: proto::ModelProto,
    path: &Path,
    ext: Option<&ExternalData>,
) -> Result<WrittenModel> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut data_path = None;
    let mut data_bytes = 0;
    if let Some(ext) = ext {
        let blob = externalize(&mut model, ext);
        if !blob.is_empty() {
            let p = dir.join(&ext.file_name);
            write_file(&p, &blob)?;
            data_bytes = blob.len() as u64;
            data_path = Some(p);
        }
    }
    write_model_file(path, &model, data_path, data_bytes)
}

/// Writes a [`FinishedModel`] to `path`, streaming initializers of at least the threshold to
/// the external-data file when `ext` is given: each is read (file-backed tensors from their
/// checkpoint), written at the next 64-byte-aligned offset and dropped before the next one,
/// so the data never sits in memory all at once. Smaller ones (all, without `ext`) go inline.
/// The files are byte-identical to [`write_model`] of the same graph's inline model.
pub fn write_finished(
    finished: FinishedModel,
    path: &Path,
    ext: Option<&ExternalData>,
) -> Result<WrittenModel> {
    use proto::tensor_proto::DataLocation;
    let FinishedModel { mut model, data } = finished;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut writer: Option<(PathBuf, std::io::BufWriter<std::fs::File>)> = None;
    let mut offset: u64 = 0;
    if let Some(graph) = model.graph.as_mut() {
        for (t, d) in graph.initializer.iter_mut().zip(data) {
            let Some(ext) = ext.filter(|e| d.byte_len() >= e.threshold_bytes) else {
                t.raw_data = Some(d.into_bytes()?);
                continue;
            };
            if writer.is_none() {
                let p = dir.join(&ext.file_name);
                let f = std::fs::File::create(&p).map_err(|e| ExportError::io(&p, e))?;
                writer = Some((p, std::io::BufWriter::with_capacity(1 << 20, f)));
            }
            let Some((p, w)) = writer.as_mut() else {
                continue;
            };
            let pad = (EXTERNAL_DATA_ALIGNMENT - offset % EXTERNAL_DATA_ALIGNMENT)
                % EXTERNAL_DATA_ALIGNMENT;
            let bytes = d.bytes()?;
            let io = |e| ExportError::io(p.as_path(), e);
            w.write_all(&[0u8; EXTERNAL_DATA_ALIGNMENT as usize][..pad as usize])
                .map_err(io)?;
            let start = offset + pad;
            w.write_all(&bytes).map_err(io)?;
            offset = start + bytes.len() as u64;
            t.data_location = Some(DataLocation::External as i32);
            let entry = |k: &str, v: String| proto::StringStringEntryProto {
                key: Some(k.to_string()),
                value: Some(v),
            };
            t.external_data = vec![
                entry("location", ext.file_name.clone()),
                entry("offset", start.to_string()),
                entry("length", bytes.len().to_string()),
            ];
        }
    }
    let mut data_path = None;
    if let Some((p, w)) = writer {
        let f = w
            .into_inner()
            .map_err(|e| ExportError::io(&p, e.into_error()))?;
        f.sync_all().map_err(|e| ExportError::io(&p, e))?;
        data_path = Some(p);
    }
    write_model_file(path, &model, data_path, offset)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| ExportError::io(path, e))?;
    f.write_all(bytes).map_err(|e| ExportError::io(path, e))?;
    f.sync_all().map_err(|e| ExportError::io(path, e))?;
    Ok(())
}

/// Reads an `.onnx` file (external data is left in place; see [`load_external_data`]).
pub fn read_model(path: &Path) -> Result<proto::ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| ExportError::io(path, e))?;
    proto::ModelProto::decode(bytes.as_slice()).map_err(|e| ExportError::InvalidGraph {
        graph: path.display().to_string(),
        message: format!("not an ONNX model (protobuf decode failed: {e})"),
    })
}

/// Reads the external data of every initializer back into `raw_data`, checking that each
/// location is a plain file name next to the model and each range lies inside the file.
pub fn load_external_data(model: &mut proto::ModelProto, model_path: &Path) -> Result<()> {
    let dir = model_path.parent().unwrap_or(Path::new("."));
    let Some(graph) = model.graph.as_mut() else {
        return Ok(());
    };
    let mut files: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    for t in &mut graph.initializer {
        if t.external_data.is_empty() {
            continue;
        }
        let get = |k: &str| {
            t.external_data
                .iter()
                .find(|e| e.key.as_deref() == Some(k))
                .and_then(|e| e.value.clone())
        };
        let tname = t.name.clone().unwrap_or_default();
        let bad = |m: String| ExportError::InvalidGraph {
            graph: model_path.display().to_string(),
            message: format!("initializer `{tname}`: {m}"),
        };
        let location =
            get("location").ok_or_else(|| bad("external data has no location".into()))?;
        if location.contains('/') || location.contains('\\') || location == ".." {
            return Err(bad(format!(
                "external data location `{location}` leaves the model's directory"
            )));
        }
        let offset: usize = get("offset")
            .unwrap_or_else(|| "0".into())
            .parse()
            .map_err(|_| bad("bad offset".into()))?;
        let length: Option<usize> = match get("length") {
            Some(l) => Some(l.parse().map_err(|_| bad("bad length".into()))?),
            None => None,
        };
        if !files.contains_key(&location) {
            let p = dir.join(&location);
            let bytes = std::fs::read(&p).map_err(|e| ExportError::io(&p, e))?;
            files.insert(location.clone(), bytes);
        }
        let file = files.get(&location).map(Vec::as_slice).unwrap_or_default();
        let end = match length {
            Some(l) => offset
                .checked_add(l)
                .ok_or_else(|| bad("offset overflow".into()))?,
            None => file.len(),
        };
        let slice = file.get(offset..end).ok_or_else(|| {
            bad(format!(
                "range {offset}..{end} is outside `{location}` ({} bytes)",
                file.len()
            ))
        })?;
        t.raw_data = Some(slice.to_vec());
        t.external_data.clear();
        t.data_location = None;
    }
    Ok(())
}

/// Writes the `.onnx` file itself (protobuf's 2 GB limit checked first), once any external data
/// is written: the last step of [`write_model`] and [`write_finished`].
fn write_model_file(
    path: &Path,
    model: &proto::ModelProto,
    data_path: Option<PathBuf>,
    data_bytes: u64,
) -> Result<WrittenModel> {
    let bytes = model.encode_to_vec();
    if bytes.len() as u64 >= 2 * 1024 * 1024 * 1024 {
        return Err(ExportError::Unsupported(format!(
            "{}: the model is {} bytes, over protobuf's 2 GB limit; write it with external data",
            path.display(),
            bytes.len()
        )));
    }
    write_file(path, &bytes)?;
    Ok(WrittenModel {
        model_path: path.to_path_buf(),
        data_path,
        model_bytes: bytes.len() as u64,
        data_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::GraphBuilder;
    use crate::graph::ops::Add;
    use crate::tensor::TensorSource;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A file-backed stand-in that counts its reads.
    #[derive(Debug)]
    struct Counted {
        values: Vec<f32>,
        reads: AtomicUsize,
    }

    impl TensorSource for Counted {
        fn dtype(&self) -> DType {
            DType::F32
        }
        fn numel(&self) -> usize {
            self.values.len()
        }
        fn read(&self) -> Result<Vec<u8>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(self.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
    }

    fn graph(sources: &[Arc<Counted>]) -> GraphBuilder {
        let mut g = GraphBuilder::new("g");
        let mut x = g.input("x", DType::F32, crate::dims![1000]).unwrap();
        for (i, s) in sources.iter().enumerate() {
            let t = TensorData::from_source(vec![1000], s.clone()).unwrap();
            let w = g.initializer(&format!("w{i}"), t).unwrap();
            x = g.node1(Add, &[x, w]).unwrap();
        }
        // A small one stays inline.
        let b = g
            .initializer("b", TensorData::from_f32(vec![1], &[0.5]).unwrap())
            .unwrap();
        let y = g.node1(Add, &[x, b]).unwrap();
        g.output("y", y).unwrap();
        g
    }

    /// Streaming writes the same files as the inline path, reading each file-backed tensor
    /// exactly once (and none before writing).
    #[test]
    fn streamed_external_data_matches_inline_write() {
        let sources: Vec<Arc<Counted>> = (0..3)
            .map(|i| {
                Arc::new(Counted {
                    values: (0..1000).map(|j| (i * 1000 + j) as f32).collect(),
                    reads: AtomicUsize::new(0),
                })
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let ext = ExternalData::beside("a.onnx");
        let inline = graph(&sources).finish().unwrap();
        write_model(inline, &dir.path().join("a.onnx"), Some(&ext)).unwrap();
        for s in &sources {
            s.reads.store(0, Ordering::SeqCst);
        }
        let finished = graph(&sources).finish_streaming().unwrap();
        assert_eq!(finished.initializer_bytes(), 3 * 4000 + 4);
        assert!(sources.iter().all(|s| s.reads.load(Ordering::SeqCst) == 0));
        let out = tempfile::tempdir().unwrap();
        let ext_b = ExternalData::beside("a.onnx");
        let written = write_finished(finished, &out.path().join("a.onnx"), Some(&ext_b)).unwrap();
        assert!(sources.iter().all(|s| s.reads.load(Ordering::SeqCst) == 1));
        // 4000-byte tensors at offsets 0, 4032 and 8064 (64-byte aligned).
        assert_eq!(written.data_bytes, 4032 * 2 + 4000);
        for f in ["a.onnx", "a.onnx.data"] {
            assert_eq!(
                std::fs::read(dir.path().join(f)).unwrap(),
                std::fs::read(out.path().join(f)).unwrap(),
                "{f}"
            );
        }
    }
}
