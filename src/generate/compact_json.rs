//! JSON for people and diffs: serde_json's pretty layout (fields in declaration order, one per
//! line), except that an array of plain values (numbers, strings, booleans, null) is written on
//! one line, so a candidate's 1024 image tokens take one line of the sidecar instead of 1024.
//! Valid JSON, read back by any parser.

use serde::Serialize;

/// `value` as text (see the module docs), ending with a newline.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let pretty = serde_json::to_string_pretty(value)?;
    let lines: Vec<&str> = pretty.lines().collect();
    let mut out = String::with_capacity(pretty.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.ends_with('[')
            && let Some((items, end)) = scalar_block(&lines[i + 1..])
        {
            let close = lines[i + 1 + end].trim_start();
            out.push_str(line);
            out.push_str(&items.join(", "));
            out.push_str(close);
            out.push('\n');
            i += end + 2;
            continue;
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    Ok(out)
}

/// The items of an array block whose lines are all plain values, and the index of its closing
/// `]` line; `None` when an item is an array or an object.
fn scalar_block<'a>(lines: &[&'a str]) -> Option<(Vec<&'a str>, usize)> {
    let mut items = vec![];
    for (j, line) in lines.iter().enumerate() {
        let t = line.trim();
        if t == "]" || t == "]," {
            return Some((items, j));
        }
        let item = t.strip_suffix(',').unwrap_or(t);
        match serde_json::from_str::<serde_json::Value>(item) {
            Ok(v) if !v.is_array() && !v.is_object() => items.push(item),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn scalar_arrays_stay_on_one_line_and_parse_back() {
        let v = serde_json::json!({
            "a": [1, 2, 3],
            "b": [{"t": [4, "x, \"y\""]}, {}],
            "c": [[1], [2, 3]],
            "e": []
        });
        let text = to_string(&v).unwrap();
        assert!(text.contains("\"a\": [1, 2, 3],\n"), "{text}");
        assert!(text.contains("\"t\": [4, \"x, \\\"y\\\"\"]\n"), "{text}");
        assert!(text.contains("    [2, 3]\n"), "{text}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), v);
    }
}
