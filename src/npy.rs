//! `.npy` files of image tokens (NumPy's format, via `ndarray-npy`).
//!
//! Tokens are written as int64 `[batch, height, width]`. Reading accepts int64 or int32, and
//! `[height, width]` (one image) or `[batch, height, width]`; anything else is a clear error that
//! names the file. Before any data is allocated, the header's shape × element size is checked
//! against the bytes the file really has (`ndarray-npy` would allocate what the header claims),
//! and only regular files are read (a FIFO or `/dev/zero` would never end).

use crate::error::{Error, Result};
use ndarray::{Array3, ArrayD, Axis, Ix3};
use ndarray_npy::npy::header::Header;
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
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
/// to open, not being a regular file, or declaring more data than it holds; the inner one is
/// the content.
fn read<T: ndarray_npy::ReadableElement>(
    path: &Path,
) -> Result<std::result::Result<ArrayD<T>, ReadNpyError>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    // Checked before opening: opening a FIFO blocks.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(npy_error(path, "not a regular file".into()));
    }
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    check_header_length(path, &mut file, file_len)?;
    let mut reader = Counting {
        inner: BufReader::new(file),
        read: 0,
    };
    let header = match Header::from_reader(&mut reader) {
        Ok(h) => h,
        Err(e) => return Ok(Err(ReadNpyError::from(e))),
    };
    check_declared_size(path, &header, reader.read, file_len)?;
    let mut file = reader.inner.into_inner();
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok(ArrayD::<T>::read_npy(BufReader::new(file)))
}

/// The largest `.npy` header read (numpy's own reader refuses headers over 10,000 bytes by
/// default; token arrays need under 200).
pub const MAX_HEADER_BYTES: u64 = 65_536;

/// The header length field (u16 in format 1, u32 in 2 and 3) is checked against the file and
/// [`MAX_HEADER_BYTES`] before `ndarray-npy` allocates a buffer of that length. Leaves `file`
/// at its start. Files too short or without the magic are left to the parser's own errors.
fn check_header_length(path: &Path, file: &mut File, file_len: u64) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut prefix = [0u8; 12];
    let mut got = 0;
    while got < prefix.len() {
        let n = file.read(&mut prefix[got..]).map_err(io)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    if got < 10 || &prefix[..6] != b"\x93NUMPY" {
        return Ok(());
    }
    let (fixed, claimed) = match prefix[6] {
        1 => (10u64, u64::from(u16::from_le_bytes([prefix[8], prefix[9]]))),
        _ if got == 12 => (
            12u64,
            u64::from(u32::from_le_bytes([
                prefix[8], prefix[9], prefix[10], prefix[11],
            ])),
        ),
        _ => return Ok(()),
    };
    if claimed > MAX_HEADER_BYTES {
        return Err(npy_error(
            path,
            format!("the header claims {claimed} bytes; the limit is {MAX_HEADER_BYTES} bytes"),
        ));
    }
    if fixed + claimed > file_len {
        return Err(npy_error(
            path,
            format!("the header claims {claimed} bytes, past the end of the {file_len}-byte file"),
        ));
    }
    // Bounded above: at most MAX_HEADER_BYTES, and within the file.
    let mut header = vec![0u8; claimed as usize];
    file.seek(SeekFrom::Start(fixed)).map_err(io)?;
    file.read_exact(&mut header).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let depth = nesting_depth(&header);
    if depth > MAX_HEADER_NESTING {
        return Err(npy_error(
            path,
            format!(
                "the header nests brackets {depth} deep; the limit is {MAX_HEADER_NESTING} \
                 (a token file's header nests 2: a dict holding the shape tuple)"
            ),
        ));
    }
    Ok(())
}

/// The deepest bracket nesting a `.npy` header may have. `ndarray-npy`'s header parser
/// (`py_literal`) takes time exponential in the nesting of `{`/`[`/`(` (about ×2.7 a level: a
/// 118-byte header nesting 61 deep ran for minutes; 12 deep, 20 s under the fuzzer's ASan).
/// Found by the `npy` fuzz target; reproducer `fuzz/seeds/npy/regression_nested_header.npy`.
/// Real headers nest 2 (`{'shape': (..)}`); structured dtypes, which this reader refuses
/// anyway, 4 (`{'descr': [('a', '<i8', (2,))]}`).
pub const MAX_HEADER_NESTING: usize = 4;

/// The largest nesting of `(`, `[` and `{` in `header`, counting brackets in quoted strings
/// too (a token file's header has none there).
fn nesting_depth(header: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for &b in header {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The header's shape × element size must be exactly the bytes after the header; the error
/// names the shape and both sizes. Descriptors without a size (e.g. `|O`) are left to the
/// element-type check.
fn check_declared_size(path: &Path, header: &Header, header_len: u64, file_len: u64) -> Result<()> {
    // A plain dtype string prints as a quoted Python literal: `'<i8'`.
    let text = header.type_descriptor.to_string();
    let descr = text.trim_matches(['\'', '"']);
    let Some(item) = descr.get(2..).and_then(|n| n.parse::<u64>().ok()) else {
        return Ok(());
    };
    let have = file_len.saturating_sub(header_len);
    let declared = header
        .shape
        .iter()
        .try_fold(item, |acc, &d| acc.checked_mul(d as u64));
    match declared {
        Some(n) if n == have => Ok(()),
        declared => Err(npy_error(
            path,
            format!(
                "the header declares shape {:?} of {descr} ({} bytes), but the file has {have} \
                 bytes of data after its header",
                header.shape,
                declared.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
            ),
        )),
    }
}

/// Counts the bytes read through it (the header's length).
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
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

    /// Issue 13 (`npy` fuzz target): a header of deeply nested brackets is refused before the
    /// header parser, whose time is exponential in the nesting, sees it.
    #[test]
    fn deeply_nested_headers_are_refused_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested.npy");
        let mut header = b"{{'de',".to_vec();
        header.extend(std::iter::repeat_n(b'{', 59));
        header.extend_from_slice(b"  \n");
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&[0u8; 8]);
        std::fs::write(&path, &bytes).unwrap();
        let started = std::time::Instant::now();
        let err = read_tokens(&path).unwrap_err().to_string();
        assert!(
            err.contains("nests brackets 61 deep; the limit is 4"),
            "{err}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // A real header (nesting 2) still reads.
        let ok = dir.path().join("ok.npy");
        write_tokens(&ok, &Array3::<i64>::zeros((1, 2, 3))).unwrap();
        assert_eq!(read_tokens(&ok).unwrap().dim(), (1, 2, 3));
        assert_eq!(nesting_depth(b"{'descr': [('a', '<i8', (2,))]}"), 4);
    }

    /// Issue 13: a header claiming `[1, 65536, 65536]` int64 (32 GiB) in a tiny file is refused
    /// before anything is allocated; so are files that are not regular files.
    #[test]
    fn issue13_oversized_headers_and_special_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.npy");
        let mut bytes = Vec::new();
        Array3::<i64>::zeros((1, 2, 2))
            .write_npy(&mut bytes)
            .unwrap();
        let at = bytes.windows(9).position(|w| w == b"(1, 2, 2)").unwrap();
        let mut header = bytes[..at].to_vec();
        header.extend_from_slice(b"(1, 65536, 65536)");
        // Keep the header length: eat the padding spaces the longer shape needs.
        let rest = &bytes[at + "(1, 2, 2)".len()..];
        let grow = "(1, 65536, 65536)".len() - "(1, 2, 2)".len();
        let pad_end = rest.iter().position(|&b| b == b'\n').unwrap();
        header.extend_from_slice(&rest[..pad_end - grow]);
        header.extend_from_slice(&rest[pad_end..]);
        std::fs::write(&path, &header).unwrap();
        let msg = read_tokens(&path).unwrap_err().to_string();
        assert!(
            msg.contains("[1, 65536, 65536]") && msg.contains("34359738368 bytes"),
            "{msg}"
        );
        let msg = read_tokens(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("not a regular file"), "{msg}");
        #[cfg(unix)]
        {
            let msg = read_tokens(Path::new("/dev/zero")).unwrap_err().to_string();
            assert!(msg.contains("not a regular file"), "{msg}");
        }
    }

    /// Issue 13 (found by the `npy` fuzz campaign): a format-2 header whose length field
    /// claims 4 GiB is refused before `ndarray-npy` allocates it; so is one past the file.
    #[test]
    fn header_lengths_are_checked_before_they_allocate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.npy");
        let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
        bytes.extend_from_slice(&0xffff_fff0u32.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let msg = read_tokens(&path).unwrap_err().to_string();
        assert!(
            msg.contains("the header claims 4294967280 bytes; the limit is 65536 bytes"),
            "{msg}"
        );
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&600u16.to_le_bytes());
        bytes.extend_from_slice(b"{'descr'");
        std::fs::write(&path, &bytes).unwrap();
        let msg = read_tokens(&path).unwrap_err().to_string();
        assert!(
            msg.contains("the header claims 600 bytes, past the end of the 18-byte file"),
            "{msg}"
        );
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
