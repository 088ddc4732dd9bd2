//! HTML character references, decoded exactly as Python does it.
//!
//! - [`unescape`]: Python's `html.unescape` (all HTML5 named references, the legacy ones
//!   without `;` matched by longest prefix, numeric references with the HTML5 replacement
//!   rules for invalid code points).
//! - [`ftfy_unescape`]: ftfy's stricter `unescape_html` (only `&name;` forms, plus upper-cased
//!   Latin names such as `&EACUTE;`).

use super::html_entities::{FTFY_UPPER, HTML5, INVALID_CHARREFS, INVALID_CODEPOINTS};

fn lookup(table: &'static [(&'static str, &'static str)], name: &str) -> Option<&'static str> {
    table
        .binary_search_by(|(k, _)| k.as_bytes().cmp(name.as_bytes()))
        .ok()
        .and_then(|i| table.get(i))
        .map(|(_, v)| *v)
}

/// Python's `html.unescape`.
pub(crate) fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match charref(after) {
            Some((len, replacement)) => {
                out.push_str(&replacement);
                rest = &after[len..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Matches Python's `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)` right after an
/// `&`; returns the matched length (bytes) and its replacement.
fn charref(after: &str) -> Option<(usize, String)> {
    if let Some(num) = after.strip_prefix('#') {
        let (digits, radix, prefix) = match num.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16, 2),
            None => (num, 10, 1),
        };
        let len = digits
            .bytes()
            .take_while(|b| {
                if radix == 16 {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
            })
            .count();
        if len == 0 {
            return None;
        }
        let semicolon = usize::from(digits.as_bytes().get(len) == Some(&b';'));
        let value = digits[..len].bytes().fold(0u64, |acc, b| {
            let d = u64::from((b as char).to_digit(radix).unwrap_or(0));
            acc.saturating_mul(u64::from(radix)).saturating_add(d)
        });
        return Some((prefix + len + semicolon, numeric(value)));
    }
    let name_len: usize = after
        .chars()
        .take_while(|c| !matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';'))
        .take(32)
        .map(char::len_utf8)
        .sum();
    if name_len == 0 {
        return None;
    }
    let len = name_len + usize::from(after.as_bytes().get(name_len) == Some(&b';'));
    let name = &after[..len];
    if let Some(v) = lookup(&HTML5, name) {
        return Some((len, v.to_string()));
    }
    // The longest prefix (at least two characters) that is an entity, the rest kept as is.
    let boundaries: Vec<usize> = name.char_indices().map(|(i, _)| i).skip(2).collect();
    for &end in boundaries.iter().rev() {
        if let Some(v) = lookup(&HTML5, &name[..end]) {
            return Some((len, format!("{v}{}", &name[end..])));
        }
    }
    Some((len, format!("&{name}")))
}

/// The replacement for a numeric reference (Python `html._replace_charref`).
fn numeric(value: u64) -> String {
    if let Ok(v) = u32::try_from(value) {
        if let Ok(i) = INVALID_CHARREFS.binary_search_by_key(&v, |(k, _)| *k) {
            return INVALID_CHARREFS
                .get(i)
                .map(|(_, c)| c.to_string())
                .unwrap_or_default();
        }
        if (0xD800..=0xDFFF).contains(&v) || v > 0x10FFFF {
            return '\u{FFFD}'.to_string();
        }
        if INVALID_CODEPOINTS.binary_search(&v).is_ok() {
            return String::new();
        }
        return char::from_u32(v)
            .map(String::from)
            .unwrap_or_else(|| '\u{FFFD}'.to_string());
    }
    '\u{FFFD}'.to_string()
}

/// ftfy's `unescape_html`: replaces `&#?[0-9A-Za-z]{1,24};` when it is a known entity (HTML5
/// names ending in `;`, ftfy's upper-case extras) or a numeric reference that `html.unescape`
/// decodes completely.
pub(crate) fn ftfy_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let hash = usize::from(after.starts_with('#'));
        let run = after[hash..]
            .bytes()
            .take_while(u8::is_ascii_alphanumeric)
            .count();
        if (1..=24).contains(&run) && after.as_bytes().get(hash + run) == Some(&b';') {
            let len = hash + run + 1;
            let name = &after[..len];
            let whole = &rest[amp..amp + 1 + len];
            if let Some(v) = lookup(&HTML5, name).or_else(|| lookup(&FTFY_UPPER, name)) {
                out.push_str(v);
            } else if hash == 1 {
                let decoded = unescape(whole);
                out.push_str(if decoded.contains(';') {
                    whole
                } else {
                    &decoded
                });
            } else {
                out.push_str(whole);
            }
            rest = &after[len..];
        } else {
            out.push('&');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_html_unescape_cases() {
        let cases = [
            ("a &amp; b", "a & b"),
            ("&amp;amp;", "&amp;"),
            ("&lt;tag&gt; &quot;x&quot; &#39;y&apos;", "<tag> \"x\" 'y'"),
            ("&nbsp;", "\u{a0}"),
            ("&#233;&#xE9;&#XE9", "ééé"),
            ("&amp", "&"),
            ("&ampere", "&ere"),
            ("&notit;", "¬it;"),
            ("&bogus; & &# &#x;", "&bogus; & &# &#x;"),
            (
                "&#128;&#0;&#1;&#xD800;&#99999999999999999999;",
                "€\u{fffd}\u{fffd}\u{fffd}",
            ),
            ("caf&eacute;", "café"),
        ];
        for (input, want) in cases {
            assert_eq!(unescape(input), want, "{input}");
        }
    }

    #[test]
    fn ftfy_unescape_cases() {
        let cases = [
            ("P&EACUTE;REZ", "PÉREZ"),
            ("&amp;amp;", "&amp;"),
            ("this&not that", "this&not that"),
            ("&#59;", "&#59;"),
            ("&#x41;&#65;", "AA"),
            ("&SZLIG;", "SS"),
            ("&AMP;", "&"),
            ("&nosuch;", "&nosuch;"),
        ];
        for (input, want) in cases {
            assert_eq!(ftfy_unescape(input), want, "{input}");
        }
    }
}
