//! `.npy` files of image tokens (NumPy's format, via `ndarray-npy`).
//!
//! Tokens are written as int64 `[batch, height, width]`. Reading accepts int64 or int32, and
//! `[height, width]` (one image) or `[batch, height, width]`; anything else is a clear error that
//! names the file.

use crate::error::{Error, Result};
use ndarray::{Array3, ArrayD, Axis, Ix3};
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

/// Reads image tokens as int64 `[batch, height, width]`.
pub fn read_tokens(path: &Path) -> Result<Array3<i64>> {
    let any: ArrayD<i64> = match read::<i64>(path)? {
        Ok(a) => a,
        Err(ReadNpyError::WrongDescriptor(_)) => match read::<i32>(path)? {
            Ok(a) => a.mapv(i64::from),
            Err(ReadNpyError::WrongDescriptor(descr)) => {
                return Err(npy_error(
                    path,
                    format!("element type {descr} is not supported; tokens must be int64 or int32"),
                ));
            }
            Err(e) => return Err(npy_error(path, format!("not a valid .npy file: {e}"))),
        },
        Err(e) => return Err(npy_error(path, format!("not a valid .npy file: {e}"))),
    };
    let any = match any.ndim() {
        2 => any.insert_axis(Axis(0)),
        3 => any,
        _ => {
            return Err(npy_error(
                path,
                format!(
                    "tokens have shape {:?}; expected [height, width] or [batch, height, width]",
                    any.shape()
                ),
            ));
        }
    };
    if any.is_empty() {
        return Err(npy_error(
            path,
            format!("tokens have shape {:?}, which holds no tokens", any.shape()),
        ));
    }
    any.into_dimensionality::<Ix3>()
        .map_err(|e| npy_error(path, format!("unexpected shape: {e}")))
}

/// Writes image tokens as int64 `[batch, height, width]`, atomically and never through a
/// symlink ([`crate::atomic`]).
pub fn write_tokens(path: &Path, tokens: &Array3<i64>) -> Result<()> {
    crate::atomic::write_with(path, |file| {
        let mut writer = BufWriter::new(file);
        tokens
            .write_npy(&mut writer)
            .map_err(|e| std::io::Error::other(format!("cannot write .npy: {e}")))?;
        writer.flush()
    })
}

/// Opens `path` and tries to read it with element type `T`. The outer error is the file failing
/// to open; the inner one is the content.
fn read<T: ndarray_npy::ReadableElement>(
    path: &Path,
) -> Result<std::result::Result<ArrayD<T>, ReadNpyError>> {
    let file = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(ArrayD::<T>::read_npy(BufReader::new(file)))
}

fn npy_error(path: &Path, message: String) -> Error {
    Error::Npy {
        path: path.to_path_buf(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2, Array4};

    #[test]
    fn round_trips_int64_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.npy");
        let tokens = Array3::from_shape_fn((2, 3, 4), |(b, y, x)| (b * 100 + y * 10 + x) as i64);
        write_tokens(&path, &tokens).unwrap();
        assert_eq!(read_tokens(&path).unwrap(), tokens);
    }

    #[test]
    fn accepts_int32_and_two_dimensions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.npy");
        let grid = Array2::from_shape_fn((2, 3), |(y, x)| (y * 3 + x) as i32);
        grid.write_npy(File::create(&path).unwrap()).unwrap();
        let tokens = read_tokens(&path).unwrap();
        assert_eq!(tokens.shape(), &[1, 2, 3]);
        assert_eq!(tokens[[0, 1, 2]], 5);
    }

    #[test]
    fn rejects_floats_with_the_type_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.npy");
        Array2::<f32>::zeros((2, 2))
            .write_npy(File::create(&path).unwrap())
            .unwrap();
        let msg = read_tokens(&path).unwrap_err().to_string();
        assert!(msg.contains("f.npy") && msg.contains("<f4"), "{msg}");
        assert!(msg.contains("int64 or int32"), "{msg}");
    }

    #[test]
    fn rejects_wrong_ranks_and_empty_arrays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.npy");
        Array1::<i64>::zeros(4)
            .write_npy(File::create(&path).unwrap())
            .unwrap();
        let msg = read_tokens(&path).unwrap_err().to_string();
        assert!(
            msg.contains("[4]") && msg.contains("[batch, height, width]"),
            "{msg}"
        );
        Array4::<i64>::zeros((1, 1, 2, 2))
            .write_npy(File::create(&path).unwrap())
            .unwrap();
        assert!(read_tokens(&path).is_err());
        Array3::<i64>::zeros((1, 0, 2))
            .write_npy(File::create(&path).unwrap())
            .unwrap();
        let msg = read_tokens(&path).unwrap_err().to_string();
        assert!(msg.contains("no tokens"), "{msg}");
    }

    #[test]
    fn garbage_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.npy");
        std::fs::write(&path, b"definitely not numpy").unwrap();
        let msg = read_tokens(&path).unwrap_err().to_string();
        assert!(msg.contains("not a valid .npy"), "{msg}");
        let missing = read_tokens(&dir.path().join("nope.npy")).unwrap_err();
        assert!(missing.to_string().contains("nope.npy"), "{missing}");
    }
}
