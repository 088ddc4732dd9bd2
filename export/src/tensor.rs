//! Tensor data as read from checkpoints and written as ONNX initializers.
//!
//! A [`TensorData`] is a dtype, a shape and little-endian element bytes that are either held in
//! memory or still in the checkpoint file ([`TensorSource`]): checkpoint readers hand out
//! file-backed tensors, so an export holds only the tensors it computes, and the bundle writer
//! reads each file-backed tensor once, writes it to the external-data file and drops it (peak
//! memory: the largest tensor, not the checkpoint). Clones share the bytes (reference-counted),
//! so a tensor referenced many times by a pickle is stored once. Float conversions of a
//! file-backed tensor are deferred to the same read.

use crate::error::{ExportError, Result};
use dalle_bundle::DType;
use half::{bf16, f16};
use std::borrow::Cow;
use std::sync::Arc;

/// Element bytes that stay in a checkpoint file until they are needed.
pub trait TensorSource: Send + Sync + std::fmt::Debug {
    /// The element type of the bytes [`TensorSource::read`] returns.
    fn dtype(&self) -> DType;
    /// The number of elements [`TensorSource::read`] returns.
    fn numel(&self) -> usize;
    /// Reads the elements (row-major, little-endian `dtype()`), checking the file still holds them.
    fn read(&self) -> Result<Vec<u8>>;
}

#[derive(Clone, Debug)]
enum Data {
    Memory(Arc<Vec<u8>>),
    /// Read from `source` when needed, then converted to the tensor's dtype if it differs.
    File(Arc<dyn TensorSource>),
}

/// Dense, row-major tensor bytes (little-endian), in memory or in a checkpoint file.
#[derive(Clone)]
pub struct TensorData {
    dtype: DType,
    shape: Vec<usize>,
    data: Data,
}

impl std::fmt::Debug for TensorData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = match self.data {
            Data::Memory(_) => "",
            Data::File(_) => ", in the file",
        };
        write!(
            f,
            "TensorData({}{:?}, {} bytes{place})",
            self.dtype,
            self.shape,
            self.byte_len()
        )
    }
}

/// Equal dtype, shape and element bytes (file-backed tensors are read to compare; a read error
/// compares unequal).
impl PartialEq for TensorData {
    fn eq(&self, other: &TensorData) -> bool {
        if self.dtype != other.dtype || self.shape != other.shape {
            return false;
        }
        if let (Data::Memory(a), Data::Memory(b)) = (&self.data, &other.data) {
            return a == b;
        }
        match (self.bytes(), other.bytes()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl TensorData {
    /// Wraps raw little-endian bytes; errors when the byte count does not match dtype × shape.
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> Result<TensorData> {
        let expected = element_count(&shape)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| ExportError::Tensor(format!("shape {shape:?} overflows")))?;
        if data.len() != expected {
            return Err(ExportError::Tensor(format!(
                "{dtype}{shape:?} needs {expected} bytes, got {}",
                data.len()
            )));
        }
        Ok(TensorData {
            dtype,
            shape,
            data: Data::Memory(Arc::new(data)),
        })
    }

    /// A tensor whose bytes stay in a file until read; `shape` must hold `source.numel()`
    /// elements.
    pub fn from_source(shape: Vec<usize>, source: Arc<dyn TensorSource>) -> Result<TensorData> {
        if element_count(&shape) != Some(source.numel()) {
            return Err(ExportError::Tensor(format!(
                "shape {shape:?} does not hold the source's {} elements",
                source.numel()
            )));
        }
        Ok(TensorData {
            dtype: source.dtype(),
            shape,
            data: Data::File(source),
        })
    }

    /// An f32 tensor; errors when `values.len()` does not match the shape.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<TensorData> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        TensorData::from_bytes(DType::F32, shape, data)
    }

    /// An i64 tensor; errors when `values.len()` does not match the shape.
    pub fn from_i64(shape: Vec<usize>, values: &[i64]) -> Result<TensorData> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        TensorData::from_bytes(DType::I64, shape, data)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the element bytes, without reading them.
    pub fn byte_len(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    /// Whether the bytes are still in the checkpoint file (read by [`TensorData::bytes`]).
    pub fn is_file_backed(&self) -> bool {
        matches!(self.data, Data::File(_))
    }

    /// Raw little-endian bytes: borrowed when in memory, read (and converted) when file-backed.
    pub fn bytes(&self) -> Result<Cow<'_, [u8]>> {
        match &self.data {
            Data::Memory(bytes) => Ok(Cow::Borrowed(bytes.as_slice())),
            Data::File(source) => {
                let raw = source.read()?;
                let expected = source.numel().checked_mul(source.dtype().size());
                if expected != Some(raw.len()) {
                    return Err(ExportError::Tensor(format!(
                        "{source:?} returned {} bytes for {} {} elements",
                        raw.len(),
                        source.numel(),
                        source.dtype()
                    )));
                }
                if source.dtype() == self.dtype {
                    Ok(Cow::Owned(raw))
                } else {
                    let values = f32_values(&raw, source.dtype())?;
                    Ok(Cow::Owned(encode_float(&values, self.dtype)?))
                }
            }
        }
    }

    /// Consumes the tensor, returning its bytes (read from the file when file-backed; copied
    /// only when a clone still shares them).
    pub fn into_bytes(self) -> Result<Vec<u8>> {
        match self.data {
            Data::Memory(bytes) => {
                Ok(Arc::try_unwrap(bytes).unwrap_or_else(|b| b.as_ref().clone()))
            }
            Data::File(_) => self.bytes().map(Cow::into_owned),
        }
    }

    /// Values widened to f32 (from f32, f16, bf16 or f64); errors for integer tensors.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        f32_values(&self.bytes()?, self.dtype)
    }

    /// Values as i64 (from any integer type); errors for float tensors.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        let d = self.bytes()?;
        Ok(match self.dtype {
            DType::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
            DType::I32 => d
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            DType::I8 => d.iter().map(|&b| i64::from(b as i8)).collect(),
            DType::U8 | DType::Bool => d.iter().map(|&b| i64::from(b)).collect(),
            other => {
                return Err(ExportError::Tensor(format!(
                    "expected an integer tensor, got {other}"
                )));
            }
        })
    }

    /// The same values in another float dtype (f32, f16 or bf16), rounding to nearest. A
    /// file-backed tensor stays file-backed: the conversion happens when it is read.
    pub fn to_float_dtype(&self, dtype: DType) -> Result<TensorData> {
        if dtype == self.dtype {
            return Ok(self.clone());
        }
        if !self.dtype.is_float() {
            return Err(ExportError::Tensor(format!(
                "expected a floating-point tensor, got {}",
                self.dtype
            )));
        }
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(ExportError::Tensor(format!(
                "cannot convert to {dtype}: not a supported float type"
            )));
        }
        if let Data::File(source) = &self.data
            && source.dtype() == self.dtype
        {
            return Ok(TensorData {
                dtype,
                shape: self.shape.clone(),
                data: self.data.clone(),
            });
        }
        let data = encode_float(&self.to_f32_vec()?, dtype)?;
        TensorData::from_bytes(dtype, self.shape.clone(), data)
    }

    /// Like [`to_float_dtype`](Self::to_float_dtype), but magnitudes past the target's largest
    /// finite value become that value (float16's ±65504, bfloat16's ±3.39e38) instead of
    /// ±infinity: `−f32::MAX` mask fills stay finite masks. Infinities and NaN are kept.
    pub fn to_float_dtype_saturating(&self, dtype: DType) -> Result<TensorData> {
        let limit = match dtype {
            DType::F16 => f16::MAX.to_f32(),
            DType::BF16 => bf16::MAX.to_f32(),
            _ => return self.to_float_dtype(dtype),
        };
        let values: Vec<f32> = self
            .to_f32_vec()?
            .into_iter()
            .map(|v| {
                if v.is_finite() {
                    v.clamp(-limit, limit)
                } else {
                    v
                }
            })
            .collect();
        TensorData::from_f32(self.shape.clone(), &values)?.to_float_dtype(dtype)
    }

    /// The same bytes with a new shape of equal element count.
    pub fn reshape(self, shape: Vec<usize>) -> Result<TensorData> {
        if element_count(&shape) != Some(self.numel()) {
            return Err(ExportError::Tensor(format!(
                "cannot reshape {:?} to {shape:?}",
                self.shape
            )));
        }
        Ok(TensorData { shape, ..self })
    }
}

/// Little-endian float bytes of `dtype` widened to f32.
fn f32_values(d: &[u8], dtype: DType) -> Result<Vec<f32>> {
    Ok(match dtype {
        DType::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => d
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => d
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        other => {
            return Err(ExportError::Tensor(format!(
                "expected a floating-point tensor, got {other}"
            )));
        }
    })
}

/// f32 values as little-endian bytes of `dtype` (f32, f16 or bf16), rounding to nearest.
fn encode_float(values: &[f32], dtype: DType) -> Result<Vec<u8>> {
    Ok(match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        other => {
            return Err(ExportError::Tensor(format!(
                "cannot convert to {other}: not a supported float type"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_byte_count() {
        let err = TensorData::from_bytes(DType::F32, vec![2, 2], vec![0; 15]).unwrap_err();
        assert!(err.to_string().contains("needs 16 bytes, got 15"), "{err}");
    }

    #[test]
    fn converts_half_types() {
        let t = TensorData::from_f32(vec![3], &[1.0, -2.5, 0.125]).unwrap();
        for dt in [DType::F16, DType::BF16] {
            let h = t.to_float_dtype(dt).unwrap();
            assert_eq!(h.bytes().unwrap().len(), 6);
            assert_eq!(h.to_f32_vec().unwrap(), vec![1.0, -2.5, 0.125]);
        }
    }

    #[derive(Debug)]
    struct Halves(Vec<u8>);

    impl TensorSource for Halves {
        fn dtype(&self) -> DType {
            DType::F16
        }
        fn numel(&self) -> usize {
            self.0.len() / 2
        }
        fn read(&self) -> Result<Vec<u8>> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn file_backed_tensors_convert_when_read() {
        let bytes = [1.0f32, -2.5, 0.125]
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect();
        let t = TensorData::from_source(vec![3], Arc::new(Halves(bytes))).unwrap();
        assert!(t.is_file_backed());
        let f = t.to_float_dtype(DType::F32).unwrap();
        assert!(f.is_file_backed());
        assert_eq!(f.byte_len(), 12);
        assert_eq!(
            f,
            TensorData::from_f32(vec![3], &[1.0, -2.5, 0.125]).unwrap()
        );
        assert!(TensorData::from_source(vec![4], Arc::new(Halves(vec![0; 6]))).is_err());
    }

    #[test]
    fn saturates_to_the_largest_finite_value() {
        let t = TensorData::from_f32(vec![3], &[-f32::MAX, 1e6, f32::INFINITY]).unwrap();
        let h = t.to_float_dtype_saturating(DType::F16).unwrap();
        assert_eq!(
            h.to_f32_vec().unwrap(),
            vec![-65504.0, 65504.0, f32::INFINITY]
        );
        let b = t
            .to_float_dtype_saturating(DType::BF16)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        assert!(b[0].is_finite() && b[0] < -3.3e38, "{b:?}");
    }
}
