//! Images in and out: PNG bytes (the same encoder and settings `generate` writes files with, so
//! a seeded request gives the same bytes over HTTP), base64 for `b64_json`, and uploaded images
//! for `/v1/images/edits`, whose dimensions are checked from the header before any pixel is
//! decoded (a small file can claim a huge image).

use super::error::ApiError;
use base64::Engine as _;
use image::{ImageError, ImageFormat, ImageReader, Limits, RgbImage};
use std::io::Cursor;

/// Most bytes one uploaded image's decoder may allocate.
pub const MAX_DECODE_ALLOC: u64 = 256 << 20;

/// PNG bytes of `image`.
pub fn png(image: &RgbImage) -> Result<Vec<u8>, ApiError> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, ImageFormat::Png)
        .map_err(|e| ApiError::internal(format!("encoding a PNG: {e}")))?;
    Ok(out.into_inner())
}

/// Base64 (standard alphabet, padded), as OpenAI's `b64_json`.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes an uploaded PNG or JPEG (format from the content) as RGB, refusing images wider or
/// taller than `max_side` before decoding them.
pub fn decode_upload(bytes: &[u8], max_side: u32) -> Result<RgbImage, ApiError> {
    let bad = |m: String| ApiError::invalid(Some("image"), m);
    if bytes.is_empty() {
        return Err(bad("`image` is empty".into()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(format!("reading `image`: {e}")))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
        _ => return Err(bad("`image` must be a PNG or JPEG file".into())),
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(max_side);
    limits.max_image_height = Some(max_side);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    match reader.decode() {
        Ok(img) => Ok(img.to_rgb8()),
        Err(ImageError::Limits(e)) => Err(ApiError {
            param: Some("image".into()),
            ..ApiError::too_large(format!(
                "`image` is too large to decode (at most {max_side}x{max_side} pixels): {e}"
            ))
        }),
        Err(e) => Err(bad(format!("decoding `image`: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn png_round_trip_and_limits() {
        let img = RgbImage::from_fn(40, 20, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let bytes = png(&img).unwrap();
        assert_eq!(png(&img).unwrap(), bytes, "deterministic");
        assert_eq!(decode_upload(&bytes, 64).unwrap(), img);
        let e = decode_upload(&bytes, 32).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let e = decode_upload(b"not an image", 64).unwrap_err();
        assert_eq!(
            (e.status, e.param.as_deref()),
            (StatusCode::BAD_REQUEST, Some("image"))
        );
        assert_eq!(b64(b"hi"), "aGk=");
    }
}
