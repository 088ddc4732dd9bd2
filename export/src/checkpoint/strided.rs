//! Tensor views of a storage, read from the checkpoint file when they are needed.
//!
//! `torch.save` stores whole storages plus, per tensor, an element offset, a size and a
//! stride. [`view`] checks a view against its storage (every index in bounds, checked
//! arithmetic) and returns a file-backed [`TensorData`] whose [`StorageView`] reads just the
//! bytes the view spans and copies strided views (transposes, slices, broadcasts) out densely.
//! Nothing is read or allocated until the tensor is used.

use super::file::CheckpointFile;
use super::globals::StorageDtype;
use crate::error::{ExportError, Result as ExportResult};
use crate::tensor::{TensorData, TensorSource};
use dalle_bundle::DType;
use std::sync::Arc;

/// One storage: a byte range of the checkpoint file and its element type.
#[derive(Clone, Debug)]
pub(crate) struct Storage {
    pub key: String,
    pub dtype: StorageDtype,
    pub file: Arc<CheckpointFile>,
    /// Absolute offset of the storage's first byte in the file.
    pub start: u64,
    /// Length in bytes (whole elements).
    pub len: u64,
}

impl Storage {
    /// The element type its tensors have (int16 is widened to int32).
    pub fn tensor_dtype(&self) -> DType {
        match self.dtype {
            StorageDtype::Plain(d) => d,
            StorageDtype::I16 => DType::I32,
        }
    }
}

/// A checked view of a storage; see the module docs.
#[derive(Debug)]
pub(crate) struct StorageView {
    storage: Storage,
    /// The element type in the file (`Plain(d)` may reinterpret an untyped byte storage).
    element: StorageDtype,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
    numel: usize,
}

/// The view (`offset`, `size`, `stride`, all in elements) of `storage` as a file-backed
/// tensor of `dtype` (the storage's own type, or any type over an untyped `uint8` storage).
/// Errors describe the bad number.
pub(crate) fn view(
    storage: &Storage,
    dtype: Option<DType>,
    offset: i64,
    size: &[i64],
    stride: &[i64],
) -> Result<TensorData, String> {
    let element = match dtype {
        None => storage.dtype,
        Some(d) if StorageDtype::Plain(d) == storage.dtype => storage.dtype,
        Some(d) if storage.dtype == StorageDtype::Plain(DType::U8) => StorageDtype::Plain(d),
        Some(d) => {
            return Err(format!(
                "the storage holds {} but the tensor is {d}",
                storage.tensor_dtype()
            ));
        }
    };
    if size.len() != stride.len() {
        return Err(format!(
            "size {size:?} and stride {stride:?} have different ranks"
        ));
    }
    let to_usize = |v: i64, what: &str| {
        usize::try_from(v)
            .map_err(|_| format!("negative {what} {v} (size {size:?}, stride {stride:?})"))
    };
    let offset = to_usize(offset, "storage offset")?;
    let size: Vec<usize> = size
        .iter()
        .map(|&s| to_usize(s, "size"))
        .collect::<Result<_, _>>()?;
    let stride: Vec<usize> = stride
        .iter()
        .map(|&s| to_usize(s, "stride"))
        .collect::<Result<_, _>>()?;
    let elem = element.size();
    let storage_len = usize::try_from(storage.len / elem as u64)
        .map_err(|_| "storage too large for this machine".to_string())?;
    let overflow = || format!("size {size:?} with stride {stride:?} overflows");
    let numel = size
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    numel.checked_mul(elem).ok_or_else(overflow)?;
    if numel > 0 {
        let last = last_element(offset, &size, &stride).ok_or_else(overflow)?;
        if last >= storage_len {
            return Err(format!(
                "view (offset {offset}, size {size:?}, stride {stride:?}) reaches element {last} \
                 of a storage with {storage_len} elements"
            ));
        }
    }
    let source = StorageView {
        storage: storage.clone(),
        element,
        offset,
        size: size.clone(),
        stride,
        numel,
    };
    TensorData::from_source(size, Arc::new(source)).map_err(|e| e.to_string())
}

/// The storage index of the view's last element (`None` on overflow); `size` has no zeros.
fn last_element(offset: usize, size: &[usize], stride: &[usize]) -> Option<usize> {
    size.iter().zip(stride).try_fold(offset, |acc, (&d, &s)| {
        d.checked_sub(1)
            .and_then(|d| d.checked_mul(s))
            .and_then(|x| acc.checked_add(x))
    })
}

impl TensorSource for StorageView {
    fn dtype(&self) -> DType {
        match self.element {
            StorageDtype::Plain(d) => d,
            StorageDtype::I16 => DType::I32,
        }
    }

    fn numel(&self) -> usize {
        self.numel
    }

    fn read(&self) -> ExportResult<Vec<u8>> {
        if self.numel == 0 {
            return Ok(Vec::new());
        }
        let bad = |m: String| {
            ExportError::Tensor(format!(
                "{}: storage `{}`: {m}",
                self.storage.file.path().display(),
                self.storage.key
            ))
        };
        let elem = self.element.size();
        // Checked when the view was made.
        let last = last_element(self.offset, &self.size, &self.stride)
            .ok_or_else(|| bad("view overflows".into()))?;
        let span = (last - self.offset + 1) * elem;
        let start = self.storage.start + (self.offset * elem) as u64;
        let raw = self.storage.file.read_at(start, span)?;
        let dense = if is_contiguous(&self.size, &self.stride) {
            raw
        } else {
            gather(&raw, elem, &self.size, &self.stride, self.numel * elem)
                .ok_or_else(|| bad("view out of storage bounds".into()))?
        };
        Ok(match self.element {
            StorageDtype::Plain(_) => dense,
            // No int16 in the bundle's dtypes: widen losslessly.
            StorageDtype::I16 => dense
                .chunks_exact(2)
                .flat_map(|c| i32::from(i16::from_le_bytes([c[0], c[1]])).to_le_bytes())
                .collect(),
        })
    }
}

/// Row-major contiguous (dimensions of size 1 may have any stride).
fn is_contiguous(size: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&d, &s) in size.iter().zip(stride).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(d);
    }
    true
}

/// Element-by-element copy of the view starting at element 0 of `bytes`, with an odometer
/// over the index; runs of the innermost dimension are copied as slices when its stride is 1.
fn gather(
    bytes: &[u8],
    elem: usize,
    size: &[usize],
    stride: &[usize],
    out_len: usize,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(out_len);
    let (inner_len, inner_stride) = match (size.last(), stride.last()) {
        (Some(&d), Some(&s)) => (d, s),
        _ => (1, 1),
    };
    let outer = size.len().saturating_sub(1);
    let mut index = vec![0usize; outer];
    loop {
        let base = index
            .iter()
            .zip(stride)
            .fold(0usize, |acc, (&i, &s)| acc + i * s);
        if inner_stride == 1 {
            out.extend_from_slice(bytes.get(base * elem..(base + inner_len) * elem)?);
        } else {
            for i in 0..inner_len {
                let at = (base + i * inner_stride) * elem;
                out.extend_from_slice(bytes.get(at..at + elem)?);
            }
        }
        // Advance the odometer over the outer dimensions.
        let mut dim = outer;
        loop {
            if dim == 0 {
                return Some(out);
            }
            dim -= 1;
            let (Some(i), Some(&d)) = (index.get_mut(dim), size.get(dim)) else {
                return None;
            };
            *i += 1;
            if *i < d {
                break;
            }
            *i = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(dir: &tempfile::TempDir, values: &[f32]) -> Storage {
        let path = dir.path().join("storage");
        // Two bytes of padding first, so the storage does not start at offset 0.
        let mut bytes = vec![0xaa, 0xbb];
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        std::fs::write(&path, &bytes).unwrap();
        Storage {
            key: "0".into(),
            dtype: StorageDtype::Plain(DType::F32),
            file: Arc::new(CheckpointFile::open(&path).unwrap()),
            start: 2,
            len: (values.len() * 4) as u64,
        }
    }

    fn read(s: &Storage, offset: i64, size: &[i64], stride: &[i64]) -> Vec<f32> {
        view(s, None, offset, size, stride)
            .unwrap()
            .to_f32_vec()
            .unwrap()
    }

    #[test]
    fn views() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let s = storage(&dir, &data);
        // Contiguous 3x4 at offset 0.
        assert_eq!(read(&s, 0, &[3, 4], &[4, 1]), data);
        // Transposed 4x3.
        assert_eq!(
            read(&s, 0, &[4, 3], &[1, 4]),
            vec![0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]
        );
        // Slice [1:3, 1:3] with offset 5.
        assert_eq!(read(&s, 5, &[2, 2], &[4, 1]), vec![5., 6., 9., 10.]);
        // Scalar.
        assert_eq!(read(&s, 7, &[], &[]), vec![7.]);
        // Stride-0 broadcast.
        assert_eq!(read(&s, 2, &[3], &[0]), vec![2., 2., 2.]);
        // Empty.
        let t = view(&s, None, 0, &[0, 4], &[4, 1]).unwrap();
        assert_eq!(t.numel(), 0);
        assert!(t.bytes().unwrap().is_empty());
    }

    #[test]
    fn bad_views_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(&dir, &[0.0; 12]);
        assert!(view(&s, None, 1, &[3, 4], &[4, 1]).is_err());
        assert!(view(&s, None, 0, &[3, 4], &[4]).is_err());
        assert!(view(&s, None, -1, &[1], &[1]).is_err());
        assert!(view(&s, None, 0, &[-2], &[1]).is_err());
        assert!(view(&s, None, 0, &[i64::MAX, i64::MAX], &[1, 1]).is_err());
        assert!(view(&s, Some(DType::I64), 0, &[1], &[1]).is_err());
    }
}
