//! PNG files that carry how they were made: a `parameters` text chunk, as AUTOMATIC1111's web UI
//! writes it, so an image found later still says its prompt, seed, settings and model
//! ([`crate::generate::ImageParameters`] is the text's format).
//!
//! Written with the `png` crate (the `image` crate cannot add text chunks), atomically
//! ([`crate::atomic`]). Latin-1 text goes into a `tEXt` chunk (what other tools read most
//! widely), anything else into an `iTXt` (UTF-8) chunk.

use crate::error::{Error, Result};
use image::RgbImage;
use std::path::Path;

/// The keyword of the text chunk.
pub const PARAMETERS_KEY: &str = "parameters";

fn png_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("{}: PNG: {e}", path.display()))
}

/// `image` as an 8-bit RGB PNG, with a `parameters` chunk holding `parameters` when given.
pub fn encode(image: &RgbImage, parameters: Option<&str>) -> std::result::Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, image.width(), image.height());
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        if let Some(text) = parameters {
            let latin1 = text.chars().all(|c| (c as u32) < 256 && c != '\0');
            let key = PARAMETERS_KEY.to_string();
            let added = if latin1 {
                encoder.add_text_chunk(key, text.to_string())
            } else {
                encoder.add_itxt_chunk(key, text.to_string())
            };
            added.map_err(|e| e.to_string())?;
        }
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer
            .write_image_data(image.as_raw())
            .map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(bytes)
}

/// Writes `image` to `path` (atomically, never through a symlink) with its parameters.
pub fn save(image: &RgbImage, path: &Path, parameters: Option<&str>) -> Result<()> {
    let bytes = encode(image, parameters).map_err(|e| png_error(path, e))?;
    crate::atomic::write(path, &bytes)
}

/// The `parameters` text of a PNG file, `None` when it has none.
pub fn read_parameters(path: &Path) -> Result<Option<String>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let reader = decoder.read_info().map_err(|e| png_error(path, e))?;
    let info = reader.info();
    if let Some(t) = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == PARAMETERS_KEY)
    {
        return Ok(Some(t.text.clone()));
    }
    if let Some(t) = info
        .compressed_latin1_text
        .iter()
        .find(|t| t.keyword == PARAMETERS_KEY)
    {
        return t.get_text().map(Some).map_err(|e| png_error(path, e));
    }
    if let Some(t) = info.utf8_text.iter().find(|t| t.keyword == PARAMETERS_KEY) {
        return t.get_text().map(Some).map_err(|e| png_error(path, e));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parameters_round_trip_in_latin1_and_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let img = RgbImage::from_pixel(3, 2, image::Rgb([1, 2, 3]));
        for text in ["a red circle\nSeed: 7", "ein Würfel — 立方体\nSeed: 1"] {
            let path = dir.path().join("a.png");
            save(&img, &path, Some(text)).unwrap();
            assert_eq!(read_parameters(&path).unwrap().as_deref(), Some(text));
            assert_eq!(crate::preprocess::load_image(&path).unwrap(), img);
        }
        let plain = dir.path().join("plain.png");
        save(&img, &plain, None).unwrap();
        assert_eq!(read_parameters(&plain).unwrap(), None);
    }
}
