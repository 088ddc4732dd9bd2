//! Images ⇄ tensors for the dVAE: loading, resize + centre crop, and CHW float conversion.
//!
//! The encoder takes f32 `[batch, 3, size, size]` in [0, 1]: the shortest side is resized to
//! `size` with Lanczos3, then the centre `size × size` square is cropped. The decoder's f32
//! `[3, h, w]` output goes back to 8-bit RGB by clamping to [0, 1] and rounding.

use crate::error::{Error, Result};
use image::{ImageFormat, ImageReader, RgbImage, imageops};
use ndarray::{Array4, ArrayView3};
use std::path::Path;

/// Reads a PNG or JPEG (format taken from the content) as 8-bit RGB.
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let reader = ImageReader::open(path)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let image = reader.decode().map_err(|cause| Error::Image {
        path: path.to_path_buf(),
        cause,
    })?;
    Ok(image.to_rgb8())
}

/// Writes `image` as PNG (whatever the extension says).
pub fn save_png(image: &RgbImage, path: &Path) -> Result<()> {
    image
        .save_with_format(path, ImageFormat::Png)
        .map_err(|cause| Error::Image {
            path: path.to_path_buf(),
            cause,
        })
}

/// Resizes the shortest side to `size` (Lanczos3) and crops the centre `size × size` square.
pub fn resize_and_center_crop(image: &RgbImage, size: u32) -> Result<RgbImage> {
    let (w, h) = image.dimensions();
    if w == 0 || h == 0 || size == 0 {
        return Err(Error::InvalidInput(format!(
            "cannot resize a {w}x{h} image to {size}x{size}"
        )));
    }
    let short = u64::from(w.min(h));
    // Round to nearest, never below the target size.
    let scale = |side: u32| -> u32 {
        let scaled = (u64::from(side) * u64::from(size) + short / 2) / short;
        u32::try_from(scaled).unwrap_or(u32::MAX).max(size)
    };
    let (nw, nh) = (scale(w), scale(h));
    let resized = if (nw, nh) == (w, h) {
        image.clone()
    } else {
        imageops::resize(image, nw, nh, imageops::FilterType::Lanczos3)
    };
    let x = (nw - size) / 2;
    let y = (nh - size) / 2;
    Ok(imageops::crop_imm(&resized, x, y, size, size).to_image())
}

/// RGB → f32 `[1, 3, h, w]` in [0, 1].
pub fn to_chw_tensor(image: &RgbImage) -> Array4<f32> {
    let (w, h) = image.dimensions();
    Array4::from_shape_fn((1, 3, h as usize, w as usize), |(_, c, y, x)| {
        f32::from(image.get_pixel(x as u32, y as u32)[c]) / 255.0
    })
}

/// f32 `[3, h, w]` in [0, 1] → RGB (clamped; NaN becomes 0).
pub fn from_chw_tensor(pixels: ArrayView3<'_, f32>) -> Result<RgbImage> {
    let (c, h, w) = pixels.dim();
    if c != 3 {
        return Err(Error::InvalidInput(format!(
            "expected 3 colour channels, got {c}"
        )));
    }
    let (wu, hu) = (
        u32::try_from(w).map_err(|_| Error::InvalidInput(format!("image width {w} too large")))?,
        u32::try_from(h).map_err(|_| Error::InvalidInput(format!("image height {h} too large")))?,
    );
    let to_u8 = |v: f32| -> u8 {
        if v.is_nan() {
            0
        } else {
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        }
    };
    Ok(RgbImage::from_fn(wu, hu, |x, y| {
        let (x, y) = (x as usize, y as usize);
        image::Rgb([
            to_u8(pixels[[0, y, x]]),
            to_u8(pixels[[1, y, x]]),
            to_u8(pixels[[2, y, x]]),
        ])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        })
    }

    #[test]
    fn landscape_is_resized_on_height_and_cropped() {
        let out = resize_and_center_crop(&gradient(640, 480), 256).unwrap();
        assert_eq!(out.dimensions(), (256, 256));
    }

    #[test]
    fn portrait_and_small_images_work() {
        assert_eq!(
            resize_and_center_crop(&gradient(30, 100), 64)
                .unwrap()
                .dimensions(),
            (64, 64)
        );
        assert_eq!(
            resize_and_center_crop(&gradient(1, 1), 8)
                .unwrap()
                .dimensions(),
            (8, 8)
        );
    }

    #[test]
    fn square_at_target_size_is_unchanged() {
        let img = gradient(32, 32);
        assert_eq!(resize_and_center_crop(&img, 32).unwrap(), img);
    }

    #[test]
    fn crop_takes_the_centre() {
        // 3 columns of 4 px at the target height: the crop keeps the middle one exactly.
        let img = RgbImage::from_fn(12, 4, |x, _| {
            image::Rgb([if (4..8).contains(&x) { 200 } else { 10 }, 0, 0])
        });
        let out = resize_and_center_crop(&img, 4).unwrap();
        assert!(out.pixels().all(|p| p[0] == 200), "{out:?}");
    }

    #[test]
    fn tensor_layout_is_chw_in_unit_range() {
        let img = RgbImage::from_fn(3, 2, |x, y| {
            image::Rgb([255, (x * 10) as u8, (y * 20) as u8])
        });
        let t = to_chw_tensor(&img);
        assert_eq!(t.shape(), &[1, 3, 2, 3]);
        assert_eq!(t[[0, 0, 1, 2]], 1.0);
        assert!((t[[0, 1, 0, 2]] - 20.0 / 255.0).abs() < 1e-6);
        assert!((t[[0, 2, 1, 0]] - 20.0 / 255.0).abs() < 1e-6);
        let back = from_chw_tensor(t.index_axis(ndarray::Axis(0), 0)).unwrap();
        assert_eq!(back, img);
    }

    #[test]
    fn out_of_range_pixels_are_clamped() {
        let mut t = Array3::<f32>::zeros((3, 1, 2));
        t[[0, 0, 0]] = 1.7;
        t[[1, 0, 0]] = -3.0;
        t[[2, 0, 0]] = f32::NAN;
        let img = from_chw_tensor(t.view()).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0]);
        assert!(from_chw_tensor(Array3::<f32>::zeros((4, 1, 1)).view()).is_err());
    }

    #[test]
    fn png_round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        let img = gradient(5, 7);
        save_png(&img, &path).unwrap();
        assert_eq!(load_image(&path).unwrap(), img);
        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"nope").unwrap();
        let err = load_image(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.png"), "{err}");
        assert!(load_image(&dir.path().join("missing.png")).is_err());
    }
}
