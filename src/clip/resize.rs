//! CLIP image preprocessing on f32 pixels: resize the shortest side to `size` with PIL's
//! bicubic resampling, centre crop, normalize (Hugging Face `CLIPImageProcessor`, transformers
//! 5.24.0 `models/clip/image_processing_clip.py`, which resizes with PIL; Pillow's
//! `libImaging/Resample.c`: separable, horizontal pass then vertical, Keys cubic `a = -0.5`, the
//! kernel widened by the scale when downsampling so it antialiases).
//!
//! PIL works on 8-bit images and rounds after each pass; this works on f32 in [0, 1] (decoded
//! candidates never go through 8 bits), so results differ from Hugging Face's by the 8-bit
//! rounding only (measured in `python-free-tests/tests/clip.rs`).

use crate::error::{Error, Result};
use ndarray::{Array3, ArrayView3};

fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output index: the first input index and the normalized weights (Pillow's
/// `precompute_coeffs`).
fn coefficients(input: usize, output: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = input as f64 / output as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    (0..output)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).trunc().max(0.0)) as usize;
            let hi = ((center + support + 0.5).trunc() as usize).min(input);
            let mut w: Vec<f64> = (lo..hi)
                .map(|x| cubic((x as f64 - center + 0.5) / filter_scale))
                .collect();
            let sum: f64 = w.iter().sum();
            if sum != 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            (lo, w.into_iter().map(|v| v as f32).collect())
        })
        .collect()
}

/// Output size for "shortest side to `size`" (Hugging Face `get_resize_output_image_size`
/// with `default_to_square=False`: the long side is truncated, `int(size · long / short)`).
pub fn shortest_side_size(h: usize, w: usize, size: usize) -> (usize, usize) {
    if h <= w {
        (size, (size as u64 * w as u64 / h.max(1) as u64) as usize)
    } else {
        ((size as u64 * h as u64 / w.max(1) as u64) as usize, size)
    }
}

/// Pixels `[3, h, w]` in [0, 1] → `[3, size, size]` normalized with `mean`/`std`.
pub fn preprocess(
    pixels: ArrayView3<'_, f32>,
    size: usize,
    mean: [f64; 3],
    std: [f64; 3],
) -> Result<Array3<f32>> {
    let (c, h, w) = pixels.dim();
    if c != 3 || h == 0 || w == 0 || size == 0 {
        return Err(Error::InvalidInput(format!(
            "CLIP preprocessing needs RGB pixels [3, h, w] with h, w > 0; got [{c}, {h}, {w}]"
        )));
    }
    let (nh, nw) = shortest_side_size(h, w, size);
    // Horizontal pass, then vertical (Pillow's order).
    let cx = coefficients(w, nw);
    let mut tmp = Array3::<f32>::zeros((3, h, nw));
    for ch in 0..3 {
        for y in 0..h {
            for (x, (lo, ws)) in cx.iter().enumerate() {
                let mut acc = 0.0f32;
                for (k, wt) in ws.iter().enumerate() {
                    acc += wt * pixels[[ch, y, lo + k]];
                }
                tmp[[ch, y, x]] = acc;
            }
        }
    }
    let cy = coefficients(h, nh);
    let (top, left) = ((nh - size) / 2, (nw - size) / 2);
    let mut out = Array3::<f32>::zeros((3, size, size));
    for ch in 0..3 {
        let (m, s) = (mean[ch] as f32, std[ch] as f32);
        for oy in 0..size {
            let (lo, ws) = &cy[oy + top];
            for ox in 0..size {
                let mut acc = 0.0f32;
                for (k, wt) in ws.iter().enumerate() {
                    acc += wt * tmp[[ch, lo + k, ox + left]];
                }
                // PIL clamps to the 8-bit range after resampling.
                out[[ch, oy, ox]] = (acc.clamp(0.0, 1.0) - m) / s;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_hugging_face() {
        assert_eq!(shortest_side_size(240, 320, 224), (224, 298));
        assert_eq!(shortest_side_size(200, 150, 224), (298, 224));
        assert_eq!(shortest_side_size(256, 256, 224), (224, 224));
    }

    #[test]
    fn constant_images_stay_constant() {
        let px = Array3::<f32>::from_elem((3, 30, 50), 0.5);
        let out = preprocess(px.view(), 16, [0.5; 3], [0.25; 3]).unwrap();
        assert!(out.iter().all(|v| v.abs() < 1e-5), "{out:?}");
    }
}
