//! A subset of `ftfy.fix_text` (ftfy 6.3, default settings), as DALLE-pytorch's
//! `SimpleTokenizer` applies it to every prompt.
//!
//! Implemented, in ftfy's order and repeated per line until nothing changes:
//! - `unescape_html` (ftfy's strict form; off from the first line containing `<` onwards),
//! - `fix_encoding`, simplified: a line that contains UTF-8 mojibake (a character whose
//!   Latin-1 / Windows-1252 byte is a UTF-8 lead byte followed by one that is a continuation
//!   byte, like `Ã©`) and that, encoded as Latin-1 or sloppy Windows-1252, is valid UTF-8 is
//!   replaced by that decoding (`cafÃ©` → `café`),
//! - `decode_inconsistent_utf8`, simplified the same way: a run of such lead/continuation
//!   sequences inside otherwise correct text (`cafÃ© &nbsp;`) is decoded on its own,
//! - `fix_c1_controls` (U+0080–U+009F read as Windows-1252), `fix_latin_ligatures`,
//!   `fix_character_width` (full/half-width forms, U+3000), `uncurl_quotes`,
//!   `fix_line_breaks`, `remove_terminal_escapes` (ASCII digits only),
//!   `remove_control_chars`, then NFC.
//!
//! Not implemented (text is left as is): ftfy's badness heuristic (`is_bad`) beyond the
//! lead/continuation pair above, mojibake through other code pages (1250/1251/1253/1254/1257,
//! ISO-8859-2, MacRoman, CP437), `restore_byte_a0` (`voilÃ  le` stays), `replace_lossy_sequences`
//! (cut-off mojibake such as a final `â€`), ftfy's `is_bad` check on embedded runs, the
//! `utf-8-variants` decoder (CESU-8, Java's `C0 80`), and `fix_surrogates` (Rust strings
//! cannot hold surrogates).

use super::html::ftfy_unescape;
use unicode_normalization::UnicodeNormalization;

/// `ftfy.fix_text(text)` for the subset described in the module docs.
pub(crate) fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    for segment in text.split_inclusive('\n') {
        if segment.contains('<') {
            unescape = false;
        }
        let mut current = segment.to_string();
        loop {
            let next = fix_segment_once(&current, unescape);
            if next == current {
                break;
            }
            current = next;
        }
        out.push_str(&current);
    }
    out
}

fn fix_segment_once(text: &str, unescape: bool) -> String {
    let mut t = if unescape {
        ftfy_unescape(text)
    } else {
        text.to_string()
    };
    loop {
        let fixed = fix_encoding_step(&t);
        if fixed == t {
            break;
        }
        t = fixed;
    }
    let t: String = t.chars().map(fix_c1).collect();
    let t = fix_ligatures(&t);
    let t = fix_width(&t);
    let t: String = t
        .chars()
        .map(|c| match c {
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
            '\u{201c}'..='\u{201f}' => '"',
            c => c,
        })
        .collect();
    let t = t
        .replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
    let t = remove_terminal_escapes(&t);
    let t: String = t.chars().filter(|&c| !is_removed_control(c)).collect();
    t.nfc().collect()
}

/// Windows-1252 characters of bytes 0x80–0x9F (`None`: undefined, sloppy-decoded as the C1
/// control of the same value).
const CP1252_HIGH: [Option<char>; 32] = [
    Some('€'),
    None,
    Some('‚'),
    Some('ƒ'),
    Some('„'),
    Some('…'),
    Some('†'),
    Some('‡'),
    Some('ˆ'),
    Some('‰'),
    Some('Š'),
    Some('‹'),
    Some('Œ'),
    None,
    Some('Ž'),
    None,
    None,
    Some('‘'),
    Some('’'),
    Some('“'),
    Some('”'),
    Some('•'),
    Some('–'),
    Some('—'),
    Some('˜'),
    Some('™'),
    Some('š'),
    Some('›'),
    Some('œ'),
    None,
    Some('ž'),
    Some('Ÿ'),
];

/// The byte of `c` in Latin-1 (`latin1 = true`) or sloppy Windows-1252.
fn single_byte(c: char, latin1: bool) -> Option<u8> {
    let v = c as u32;
    if latin1 {
        return u8::try_from(v).ok();
    }
    if v < 0x80 || (0xA0..=0xFF).contains(&v) {
        return u8::try_from(v).ok();
    }
    (0x80u8..=0x9F).find(|&byte| {
        let decoded = CP1252_HIGH[usize::from(byte - 0x80)].unwrap_or(char::from(byte));
        decoded == c
    })
}

/// Whether `text` has a UTF-8 lead byte followed by a continuation byte when read back as
/// Latin-1 / Windows-1252: the signature of UTF-8 decoded in the wrong code page.
fn looks_like_mojibake(text: &str, latin1: bool) -> bool {
    let bytes: Vec<Option<u8>> = text.chars().map(|c| single_byte(c, latin1)).collect();
    bytes.windows(2).any(|w| {
        matches!(w, [Some(a), Some(b)] if (0xC2..=0xF4).contains(a) && (0x80..=0xBF).contains(b))
    })
}

/// One round of the simplified `fix_encoding`.
fn fix_encoding_step(text: &str) -> String {
    if text.is_ascii() {
        return text.to_string();
    }
    for latin1 in [true, false] {
        let Some(bytes) = text
            .chars()
            .map(|c| single_byte(c, latin1))
            .collect::<Option<Vec<u8>>>()
        else {
            continue;
        };
        if !looks_like_mojibake(text, latin1) {
            continue;
        }
        if let Ok(decoded) = String::from_utf8(bytes) {
            return decoded;
        }
    }
    decode_inconsistent_utf8(text)
}

/// The byte of `c` in Latin-1 or, failing that, sloppy Windows-1252.
fn any_byte(c: char) -> Option<u8> {
    single_byte(c, true).or_else(|| single_byte(c, false))
}

/// Simplified `decode_inconsistent_utf8`: runs of UTF-8 mojibake sequences (lead character
/// plus the right number of continuation characters, not preceded by a continuation
/// character) embedded in other text are decoded on their own.
fn decode_inconsistent_utf8(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let bytes: Vec<Option<u8>> = chars.iter().map(|&c| any_byte(c)).collect();
    let is_cont = |i: usize| matches!(bytes.get(i), Some(Some(0x80..=0xBF)));
    let sequence_len = |i: usize| -> Option<usize> {
        let n = match bytes.get(i).copied().flatten()? {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return None,
        };
        (1..n).all(|k| is_cont(i + k)).then_some(n)
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        if i == 0 || !is_cont(i - 1) {
            while let Some(n) = sequence_len(i) {
                i += n;
            }
        }
        if i > start && i - start < chars.len() {
            let run: Option<Vec<u8>> = bytes[start..i].iter().copied().collect();
            if let Some(decoded) = run.and_then(|b| String::from_utf8(b).ok()) {
                out.push_str(&decoded);
                continue;
            }
            out.extend(&chars[start..i]);
            continue;
        }
        if i > start {
            out.extend(&chars[start..i]);
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// `fix_c1_controls`: a C1 control read as its Windows-1252 character.
fn fix_c1(c: char) -> char {
    match (c as u32).checked_sub(0x80) {
        Some(i) if i < 0x20 => CP1252_HIGH.get(i as usize).copied().flatten().unwrap_or(c),
        _ => c,
    }
}

fn fix_ligatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let replacement = match c {
            'Ĳ' => "IJ",
            'ĳ' => "ij",
            'ŉ' => "ʼn",
            'Ǳ' => "DZ",
            'ǲ' => "Dz",
            'ǳ' => "dz",
            'Ǆ' => "DŽ",
            'ǅ' => "Dž",
            'ǆ' => "dž",
            'Ǉ' => "LJ",
            'ǈ' => "Lj",
            'ǉ' => "lj",
            'Ǌ' => "NJ",
            'ǋ' => "Nj",
            'ǌ' => "nj",
            'ﬀ' => "ff",
            'ﬁ' => "fi",
            'ﬂ' => "fl",
            'ﬃ' => "ffi",
            'ﬄ' => "ffl",
            'ﬅ' => "ſt",
            'ﬆ' => "st",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(replacement);
    }
    out
}

/// `fix_character_width`: U+3000 → space, U+FF01–U+FFEF → their NFKC form.
fn fix_width(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{3000}' => out.push(' '),
            '\u{ff01}'..='\u{ffef}' => out.extend(c.to_string().nfkc()),
            _ => out.push(c),
        }
    }
    out
}

/// `remove_terminal_escapes`: `ESC [ (digits|;)* letter`.
fn remove_terminal_escapes(text: &str) -> String {
    if !text.contains('\u{1b}') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("\u{1b}[") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let params = after
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b';')
            .count();
        if after
            .as_bytes()
            .get(params)
            .is_some_and(u8::is_ascii_alphabetic)
        {
            rest = &after[params + 1..];
        } else {
            out.push('\u{1b}');
            rest = &rest[pos + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// `remove_control_chars`: the control characters ftfy strips.
pub(crate) fn is_removed_control(c: char) -> bool {
    matches!(c as u32,
        0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mojibake_is_fixed_when_it_round_trips() {
        assert_eq!(fix_text("cafÃ©"), "café");
        assert_eq!(fix_text("â€œquotedâ€\u{9d}"), "\"quoted\"");
        assert_eq!(fix_text("Ã¼ber"), "über");
        // Legitimate Latin-1 text stays.
        assert_eq!(fix_text("café crème à la carte"), "café crème à la carte");
        assert_eq!(fix_text("ÃO"), "ÃO");
    }

    #[test]
    fn the_other_fixes() {
        assert_eq!(fix_text("\u{201c}hi\u{201d} it\u{2019}s"), "\"hi\" it's");
        assert_eq!(fix_text("ﬁne ＡＢＣ１\u{3000}x"), "fine ABC1 x");
        assert_eq!(fix_text("a\u{1b}[36;44mblue\u{1b}[0m"), "ablue");
        assert_eq!(fix_text("a\u{0}b\u{feff}c\u{85}"), "abc…");
        assert_eq!(fix_text("e\u{301}"), "é");
        assert_eq!(fix_text("a\r\nb\rc"), "a\nb\nc");
        assert_eq!(fix_text("&amp;lt; &EACUTE;"), "< É");
        assert_eq!(fix_text("<b> &amp;"), "<b> &amp;");
    }
}
