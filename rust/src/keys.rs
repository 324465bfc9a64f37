//! The canonical string of a composite key, shared with `online_feature_store/store/keys.py`: values
//! in the entity's (registry) key order, each with `\`, `|` and `:` backslash-escaped, joined by `|`.
//! Stores and caches name a key by this string, so reads, writes and invalidations always meet.

/// Appends one escaped key value to `out`.
pub fn push_escaped(out: &mut String, value: &str) {
    if !value.contains(['\\', '|', ':']) {
        out.push_str(value);
        return;
    }
    for ch in value.chars() {
        if matches!(ch, '\\' | '|' | ':') {
            out.push('\\');
        }
        out.push(ch);
    }
}

/// Appends value number `i` (from 0) of a key to `out`: the separator before all but the first, then
/// the value escaped.
pub fn push_value(out: &mut String, i: usize, value: &str) {
    if i > 0 {
        out.push('|');
    }
    push_escaped(out, value);
}

/// The canonical string of `values` (already in canonical key order).
pub fn encode_key<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, v) in values.into_iter().enumerate() {
        push_value(&mut out, i, v);
    }
    out
}

/// The values of a canonical key string ([`encode_key`]'s inverse): split at unescaped `|`, escapes
/// removed. A string of one value has no separator.
pub fn decode_key(key: &str) -> Vec<String> {
    let mut values = vec![String::new()];
    let mut chars = key.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => values.last_mut().expect("one value at least").extend(chars.next()),
            '|' => values.push(String::new()),
            _ => values.last_mut().expect("one value at least").push(ch),
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_separators_so_keys_never_collide() {
        assert_eq!(encode_key(["u1"]), "u1");
        assert_eq!(encode_key(["a", "b"]), "a|b");
        assert_eq!(encode_key(["a|b"]), "a\\|b");
        assert_eq!(encode_key(["a\\", "b:c"]), "a\\\\|b\\:c");
        assert_ne!(encode_key(["a|b", "c"]), encode_key(["a", "b|c"]));
        assert_eq!(encode_key(["é|ü"]), "é\\|ü");
    }

    #[test]
    fn decode_key_inverts_encode_key() {
        for values in [vec!["u1"], vec!["a|b", "c"], vec!["", ""], vec!["a\\", "|c:"], vec!["é|ü", "\0", "x"]] {
            assert_eq!(decode_key(&encode_key(values.iter().copied())), values);
        }
    }
}
