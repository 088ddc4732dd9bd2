//! Materializes a tensor view of a storage as a dense, contiguous [`TensorData`].
//!
//! `torch.save` stores whole storages plus, per tensor, an element offset, a size and a
//! stride. Views (transposes, slices, tensors sharing one storage) are copied out here with
//! every index checked against the storage, so a corrupt size or stride is an error.

use crate::tensor::TensorData;
use dalle_bundle::DType;
use std::rc::Rc;

/// A tensor view larger than this that is also larger than its storage (stride-0 expansion)
/// is refused, so a tiny file cannot make us allocate unbounded memory.
const MAX_EXPANDED_BYTES: usize = 64 << 20;

/// One loaded storage: raw little-endian bytes and their element type.
#[derive(Clone, Debug)]
pub(crate) struct Storage {
    pub key: String,
    pub dtype: DType,
    pub bytes: Rc<Vec<u8>>,
}

/// Copies the view (`offset`, `size`, `stride`, all in elements of `dtype`) out of `bytes`.
pub(crate) fn materialize(
    bytes: &[u8],
    dtype: DType,
    offset: i64,
    size: &[i64],
    stride: &[i64],
) -> Result<TensorData, String> {
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
    let elem = dtype.size();
    let storage_len = bytes.len() / elem;
    let overflow = || format!("size {size:?} with stride {stride:?} overflows");
    let numel = size
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    if numel == 0 {
        return TensorData::from_bytes(dtype, size, Vec::new()).map_err(|e| e.to_string());
    }
    let last = size
        .iter()
        .zip(&stride)
        .try_fold(offset, |acc, (&d, &s)| {
            (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
        })
        .ok_or_else(overflow)?;
    if last >= storage_len {
        return Err(format!(
            "view (offset {offset}, size {size:?}, stride {stride:?}) reaches element {last} \
             of a storage with {storage_len} {dtype} elements"
        ));
    }
    let out_len = numel.checked_mul(elem).ok_or_else(overflow)?;
    if out_len > bytes.len() && out_len > MAX_EXPANDED_BYTES {
        return Err(format!(
            "view of size {size:?} would expand a {}-byte storage to {out_len} bytes",
            bytes.len()
        ));
    }
    let out = if is_contiguous(&size, &stride) {
        bytes
            .get(offset * elem..offset * elem + out_len)
            .ok_or_else(|| "view out of storage bounds".to_string())?
            .to_vec()
    } else {
        gather(bytes, elem, offset, &size, &stride, out_len)?
    };
    TensorData::from_bytes(dtype, size, out).map_err(|e| e.to_string())
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

/// Element-by-element copy with an odometer over the index; runs of the innermost dimension
/// are copied as slices when its stride is 1.
fn gather(
    bytes: &[u8],
    elem: usize,
    offset: usize,
    size: &[usize],
    stride: &[usize],
    out_len: usize,
) -> Result<Vec<u8>, String> {
    let oob = || "view out of storage bounds".to_string();
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
            .fold(offset, |acc, (&i, &s)| acc + i * s);
        if inner_stride == 1 {
            let run = bytes
                .get(base * elem..(base + inner_len) * elem)
                .ok_or_else(oob)?;
            out.extend_from_slice(run);
        } else {
            for i in 0..inner_len {
                let at = (base + i * inner_stride) * elem;
                out.extend_from_slice(bytes.get(at..at + elem).ok_or_else(oob)?);
            }
        }
        // Advance the odometer over the outer dimensions.
        let mut dim = outer;
        loop {
            if dim == 0 {
                return Ok(out);
            }
            dim -= 1;
            let (Some(i), Some(&d)) = (index.get_mut(dim), size.get(dim)) else {
                return Err(oob());
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

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn views() {
        let data: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let bytes = f32_bytes(&data);
        // Contiguous 3x4 at offset 0.
        let t = materialize(&bytes, DType::F32, 0, &[3, 4], &[4, 1]).unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), data);
        // Transposed 4x3.
        let t = materialize(&bytes, DType::F32, 0, &[4, 3], &[1, 4]).unwrap();
        assert_eq!(
            t.to_f32_vec().unwrap(),
            vec![0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]
        );
        // Slice [1:3, 1:3] with offset 5.
        let t = materialize(&bytes, DType::F32, 5, &[2, 2], &[4, 1]).unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), vec![5., 6., 9., 10.]);
        // Scalar.
        let t = materialize(&bytes, DType::F32, 7, &[], &[]).unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), vec![7.]);
        // Stride-0 broadcast.
        let t = materialize(&bytes, DType::F32, 2, &[3], &[0]).unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), vec![2., 2., 2.]);
        // Empty.
        let t = materialize(&bytes, DType::F32, 0, &[0, 4], &[4, 1]).unwrap();
        assert_eq!(t.numel(), 0);
    }

    #[test]
    fn bad_views_are_errors() {
        let bytes = f32_bytes(&[0.0; 12]);
        assert!(materialize(&bytes, DType::F32, 1, &[3, 4], &[4, 1]).is_err());
        assert!(materialize(&bytes, DType::F32, 0, &[3, 4], &[4]).is_err());
        assert!(materialize(&bytes, DType::F32, -1, &[1], &[1]).is_err());
        assert!(materialize(&bytes, DType::F32, 0, &[-2], &[1]).is_err());
        assert!(materialize(&bytes, DType::F32, 0, &[i64::MAX, i64::MAX], &[1, 1]).is_err());
        assert!(materialize(&bytes, DType::F32, 0, &[1 << 40], &[0]).is_err());
    }
}
