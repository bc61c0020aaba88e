//! Where a problem is in the text: key paths (`Seg`) as the validation
//! reports them, the byte offset and line of a key path in the parsed TOML
//! document (the `file:line` prefixes), and the "did you mean" suggestion
//! added to serde's unknown-key errors.

/// One step of a key path, used to find the line a problem is on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

pub(super) fn key_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Byte offset of the deepest part of `path` found in the document.
pub(super) fn locate(table: &toml::de::DeTable, path: &[Seg]) -> Option<usize> {
    let (Seg::Key(first), rest) = path.split_first()? else { return None };
    let (key, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *first)?;
    let here = key.span().start;
    Some(locate_value(value, rest).unwrap_or(here))
}

fn locate_value(value: &toml::Spanned<toml::de::DeValue>, path: &[Seg]) -> Option<usize> {
    let Some((seg, rest)) = path.split_first() else { return Some(value.span().start) };
    match (seg, value.get_ref()) {
        (Seg::Key(_), toml::de::DeValue::Table(t)) => locate(t, path),
        (Seg::Index(i), toml::de::DeValue::Array(a)) => {
            let item = a.get(*i)?;
            Some(locate_value(item, rest).unwrap_or(item.span().start))
        }
        _ => None,
    }
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Add "did you mean" to serde's "unknown field `x`, expected one of ..." message.
pub(super) fn suggest_nearest_key(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else { return message.to_string() };
    let Some((field, expected)) = rest.split_once('`') else { return message.to_string() };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let best = candidates.iter().map(|c| (edit_distance(field, c), *c)).min();
    match best {
        Some((d, c)) if d <= 3.max(field.len() / 3) => format!("{message} (did you mean `{c}`?)"),
        _ => message.to_string(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
