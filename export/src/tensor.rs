//! Tensor data as read from checkpoints and written as ONNX initializers.
//!
//! A [`TensorData`] owns little-endian element bytes plus dtype and shape. Checkpoint readers
//! produce them; the graph builder turns them into initializers without reinterpreting bytes.

use crate::error::{ExportError, Result};
use dalle_bundle::DType;
use half::{bf16, f16};

/// Owned, dense, row-major tensor bytes (little-endian).
#[derive(Clone, PartialEq)]
pub struct TensorData {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl std::fmt::Debug for TensorData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TensorData({}{:?}, {} bytes)",
            self.dtype,
            self.shape,
            self.data.len()
        )
    }
}

impl TensorData {
    /// Wraps raw little-endian bytes; errors when the byte count does not match dtype × shape.
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> Result<TensorData> {
        let expected = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| ExportError::Tensor(format!("shape {shape:?} overflows")))?;
        if data.len() != expected {
            return Err(ExportError::Tensor(format!(
                "{dtype}{shape:?} needs {expected} bytes, got {}",
                data.len()
            )));
        }
        Ok(TensorData { dtype, shape, data })
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

    /// Raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Consumes the tensor, returning its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Values widened to f32 (from f32, f16, bf16 or f64); errors for integer tensors.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let d = &self.data;
        Ok(match self.dtype {
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
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            other => {
                return Err(ExportError::Tensor(format!(
                    "expected a floating-point tensor, got {other}"
                )));
            }
        })
    }

    /// Values as i64 (from any integer type); errors for float tensors.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        let d = &self.data;
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

    /// The same values in another float dtype (f32, f16 or bf16), rounding to nearest.
    pub fn to_float_dtype(&self, dtype: DType) -> Result<TensorData> {
        if dtype == self.dtype {
            return Ok(self.clone());
        }
        let values = self.to_f32_vec()?;
        let data: Vec<u8> = match dtype {
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
        };
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
        if shape.iter().product::<usize>() != self.numel() {
            return Err(ExportError::Tensor(format!(
                "cannot reshape {:?} to {shape:?}",
                self.shape
            )));
        }
        Ok(TensorData { shape, ..self })
    }
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
            assert_eq!(h.bytes().len(), 6);
            assert_eq!(h.to_f32_vec().unwrap(), vec![1.0, -2.5, 0.125]);
        }
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
