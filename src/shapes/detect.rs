//! Finds the coloured shapes in an image of the shape world.

use super::spec::World;
use crate::{Error, Result};
use image::RgbImage;

/// Components smaller than this (in labelled pixels) are speckle, not objects. The smallest
/// object of the world (an 8-pixel triangle) covers about 32 pixels.
pub const MIN_AREA: usize = 12;
/// A pixel belongs to a colour when that colour covers at least this share of it.
const MIN_COVERAGE: f32 = 0.5;
/// Largest distance (RGB units) between a pixel and its background/colour blend.
const MAX_RESIDUAL: f32 = 70.0;
/// Top-half area share below which a component is a triangle (apex up: 1/4, about 1/3 once
/// blurred by a dVAE; circles and squares: 1/2).
const TRIANGLE_TOP_SHARE: f32 = 0.38;
/// Corner fill above which a non-triangle is a square (square ≈ 1, circle ≈ 0.3).
const SQUARE_CORNER_FILL: f32 = 0.6;

/// One detected object.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectedObject {
    pub colour: String,
    pub shape: String,
    /// Labelled pixels.
    pub area: usize,
    /// Bounding-box extent, `max(width, height)`, in pixels.
    pub extent: f32,
    /// Centroid (x, y), pixel centres at `i + 0.5`.
    pub centre: [f32; 2],
    /// Share of the area in the top half of the bounding box.
    pub top_share: f32,
    /// Filled share of the bounding box's four corner squares (side = extent / 4).
    pub corner_fill: f32,
}

impl DetectedObject {
    /// The size name whose extent is nearest (`sizes`: a world's `sizes` or `pair_sizes`).
    pub fn size_name<'a>(&self, sizes: &'a std::collections::BTreeMap<String, f32>) -> &'a str {
        sizes
            .iter()
            .min_by(|a, b| {
                (a.1 - self.extent)
                    .abs()
                    .total_cmp(&(b.1 - self.extent).abs())
            })
            .map(|(k, _)| k.as_str())
            .unwrap_or("")
    }

    /// The position name whose anchor is nearest to the centre.
    pub fn position_name<'a>(&self, world: &'a World) -> &'a str {
        let d = |p: &[f32; 2]| (p[0] - self.centre[0]).powi(2) + (p[1] - self.centre[1]).powi(2);
        world
            .positions
            .iter()
            .min_by(|a, b| d(a.1).total_cmp(&d(b.1)))
            .map(|(k, _)| k.as_str())
            .unwrap_or("")
    }
}

/// Labels each pixel with the palette colour (index into `colours`) that, blended with the
/// background, explains it; `None` for background.
fn label(pixel: [u8; 3], bg: [f32; 3], colours: &[[f32; 3]]) -> Option<usize> {
    let p = pixel.map(f32::from);
    let mut best: Option<(usize, f32)> = None;
    for (i, c) in colours.iter().enumerate() {
        let dir = [c[0] - bg[0], c[1] - bg[1], c[2] - bg[2]];
        let len2 = dir.iter().map(|v| v * v).sum::<f32>();
        if len2 == 0.0 {
            continue;
        }
        let rel = [p[0] - bg[0], p[1] - bg[1], p[2] - bg[2]];
        let t = ((rel[0] * dir[0] + rel[1] * dir[1] + rel[2] * dir[2]) / len2).clamp(0.0, 1.2);
        let residual = (0..3)
            .map(|k| (rel[k] - t * dir[k]).powi(2))
            .sum::<f32>()
            .sqrt();
        if t >= MIN_COVERAGE && residual <= MAX_RESIDUAL && best.is_none_or(|(_, r)| residual < r) {
            best = Some((i, residual));
        }
    }
    best.map(|(i, _)| i)
}

/// The objects in `image` (the world's canvas size), largest first.
pub fn detect(image: &RgbImage, world: &World) -> Result<Vec<DetectedObject>> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    if w != world.canvas as usize || h != world.canvas as usize {
        return Err(Error::InvalidInput(format!(
            "shape world images are {c}x{c} pixels, got {w}x{h}",
            c = world.canvas
        )));
    }
    let names: Vec<&String> = world.colours.keys().collect();
    let palette: Vec<[f32; 3]> = world.colours.values().map(|c| c.map(f32::from)).collect();
    let bg = world.background.map(f32::from);
    let labels: Vec<Option<usize>> = image.pixels().map(|p| label(p.0, bg, &palette)).collect();

    let mut seen = vec![false; w * h];
    let mut objects = Vec::new();
    for start in 0..w * h {
        let Some(colour) = labels[start] else {
            continue;
        };
        if seen[start] {
            continue;
        }
        // flood fill (4-connected) one component of this colour
        let mut members = Vec::new();
        let mut stack = vec![start];
        seen[start] = true;
        while let Some(i) = stack.pop() {
            members.push(i);
            let (x, y) = (i % w, i / w);
            let mut visit = |j: usize| {
                if !seen[j] && labels[j] == Some(colour) {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        if members.len() >= MIN_AREA {
            objects.push(measure(&members, w, names[colour].clone()));
        }
    }
    objects.sort_by_key(|o| std::cmp::Reverse(o.area));
    Ok(objects)
}

fn measure(members: &[usize], w: usize, colour: String) -> DetectedObject {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    let (mut sx, mut sy) = (0.0f32, 0.0f32);
    for &i in members {
        let (x, y) = (i % w, i / w);
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
        sx += x as f32 + 0.5;
        sy += y as f32 + 0.5;
    }
    let n = members.len() as f32;
    let (bw, bh) = (x1 - x0 + 1, y1 - y0 + 1);
    let mid_y = (y0 + y1 + 1) as f32 / 2.0;
    let top = members
        .iter()
        .map(|&i| (i / w) as f32 + 0.5)
        .filter(|&y| y < mid_y)
        .count() as f32;
    let corner = (bw.max(bh) / 4).max(1);
    let in_corner = |x: usize, y: usize| {
        (x < x0 + corner || x > x1.saturating_sub(corner))
            && (y < y0 + corner || y > y1.saturating_sub(corner))
    };
    let corner_members = members.iter().filter(|&&i| in_corner(i % w, i / w)).count() as f32;
    let corner_cells = (4 * corner * corner).min(bw * bh) as f32;
    let top_share = top / n;
    let corner_fill = corner_members / corner_cells;
    let shape = if top_share < TRIANGLE_TOP_SHARE {
        "triangle"
    } else if corner_fill > SQUARE_CORNER_FILL {
        "square"
    } else {
        "circle"
    };
    DetectedObject {
        colour,
        shape: shape.to_string(),
        area: members.len(),
        extent: bw.max(bh) as f32,
        centre: [sx / n, sy / n],
        top_share,
        corner_fill,
    }
}
