//! Decoder input ids in the unified vocabulary (DALLE-pytorch layout, `shared/reference/models.md`
//! §2.2): `[BOS, text_0 .. text_{L-1}]` where a text id 0 (padding) at position `i` becomes the
//! position's own pad id `pad_id_base + i`, followed by any primed image codes shifted by
//! `image_token_offset`.

use crate::error::{Error, Result};
use dalle_bundle::TokenLayout;

fn id(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::InvalidInput(format!("token layout: {what} {v} too large")))
}

/// `[BOS, text with per-position pad ids]`, `1 + text_length` ids. `text` holds tokenizer ids
/// (0 = padding) and may be shorter than `text_length` (the rest is padding).
pub fn text_row(layout: &TokenLayout, text: &[u32]) -> Result<Vec<i64>> {
    let length = usize::try_from(layout.text_length)
        .map_err(|_| Error::InvalidInput("token layout: text_length too large".to_string()))?;
    if text.len() > length {
        return Err(Error::InvalidInput(format!(
            "{} text tokens, but the model reads at most {length} (truncate when tokenizing)",
            text.len()
        )));
    }
    if let Some((i, &t)) = text
        .iter()
        .enumerate()
        .find(|&(_, &t)| u64::from(t) >= layout.text_vocab_size)
    {
        return Err(Error::InvalidInput(format!(
            "text token {t} at position {i} is outside the text vocabulary 0..{}",
            layout.text_vocab_size
        )));
    }
    let pad_base = id(layout.pad_id_base, "pad_id_base")?;
    let mut row = Vec::with_capacity(length + 1);
    row.push(id(layout.bos_id, "bos_id")?);
    for i in 0..length {
        row.push(match text.get(i).copied().unwrap_or(0) {
            0 => pad_base + i as i64,
            t => i64::from(t),
        });
    }
    Ok(row)
}

/// The unconditional row for classifier-free guidance: every text position is its pad id
/// (DALLE-pytorch `null_cond_prob = 1`). Built fresh: the caller's text is never touched.
pub fn unconditional_row(layout: &TokenLayout) -> Result<Vec<i64>> {
    text_row(layout, &[])
}

/// Appends image codes (`0..image_vocab_size`) as unified ids.
pub fn push_image_codes(layout: &TokenLayout, row: &mut Vec<i64>, codes: &[u32]) -> Result<()> {
    let offset = id(layout.image_token_offset, "image_token_offset")?;
    for (i, &c) in codes.iter().enumerate() {
        if u64::from(c) >= layout.image_vocab_size {
            return Err(Error::InvalidInput(format!(
                "image code {c} at position {i} is outside the codebook 0..{}",
                layout.image_vocab_size
            )));
        }
        row.push(offset + i64::from(c));
    }
    Ok(())
}

/// The unified id of one image code (already range-checked by the sampler).
pub fn image_id(layout: &TokenLayout, code: u32) -> i64 {
    layout.image_token_offset as i64 + i64::from(code)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Text vocab 10 (+4 pads: ids 10..14), 2×2 image grid of 5 codes at offset 14.
    pub(crate) fn tiny_layout() -> TokenLayout {
        TokenLayout {
            text_length: 4,
            text_vocab_size: 10,
            bos_id: 0,
            pad_id_base: 10,
            image_grid: 2,
            image_vocab_size: 5,
            image_token_offset: 14,
            total_vocab_size: 19,
        }
    }

    #[test]
    fn zeros_become_per_position_pads() {
        let l = tiny_layout();
        assert_eq!(text_row(&l, &[3, 4]).unwrap(), vec![0, 3, 4, 12, 13]);
        assert_eq!(text_row(&l, &[3, 0, 5, 0]).unwrap(), vec![0, 3, 11, 5, 13]);
        assert_eq!(unconditional_row(&l).unwrap(), vec![0, 10, 11, 12, 13]);
        let mut row = vec![];
        push_image_codes(&l, &mut row, &[0, 4]).unwrap();
        assert_eq!(row, vec![14, 18]);
        assert_eq!(image_id(&l, 2), 16);
    }

    #[test]
    fn out_of_range_ids_are_errors() {
        let l = tiny_layout();
        let e = text_row(&l, &[1, 2, 3, 4, 5]).unwrap_err().to_string();
        assert!(e.contains("at most 4"), "{e}");
        let e = text_row(&l, &[10]).unwrap_err().to_string();
        assert!(e.contains("text token 10"), "{e}");
        let e = push_image_codes(&l, &mut vec![], &[5])
            .unwrap_err()
            .to_string();
        assert!(e.contains("image code 5"), "{e}");
    }
}
