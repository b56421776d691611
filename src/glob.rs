//! Redis's glob patterns, for `SCAN … MATCH`: `*`, `?`, `[abc]`, `[^a-z]`
//! and `\` escapes, over raw bytes, as Redis's `stringmatchlen` reads them.

/// Whether `text` matches the Redis glob `pattern`: a port of Redis's
/// `stringmatchlen` (util.c), quirks included, since tools compare results
/// with Redis: an unterminated `[` is a class running to the pattern's end,
/// and in `[b-]` the `]` is the end of a range, not of the class.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let mut skip_longer = false;
    match_from(pattern, text, &mut skip_longer, 0)
}

/// Redis's `stringmatchlen_impl`, on slices. `skip_longer` is set once the
/// rest of the pattern matched nowhere in the rest of the text, so earlier
/// `*`s need not try longer matches (no exponential blow-up); past 1,000
/// nested `*`s the pattern is refused, as Redis does.
fn match_from(mut pattern: &[u8], mut text: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    if nesting > 1000 {
        return false;
    }
    while !pattern.is_empty() && !text.is_empty() {
        match pattern[0] {
            b'*' => {
                while pattern.len() > 1 && pattern[1] == b'*' {
                    pattern = &pattern[1..];
                }
                if pattern.len() == 1 {
                    return true;
                }
                while !text.is_empty() {
                    if match_from(&pattern[1..], text, skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    text = &text[1..];
                }
                *skip_longer = true;
                return false;
            }
            b'?' => text = &text[1..],
            b'[' => {
                pattern = &pattern[1..];
                let negate = pattern.first() == Some(&b'^');
                if negate {
                    pattern = &pattern[1..];
                }
                let c = text[0];
                let mut matched = false;
                loop {
                    if pattern.first() == Some(&b'\\') && pattern.len() >= 2 {
                        pattern = &pattern[1..];
                        matched |= pattern[0] == c;
                    } else if pattern.first() == Some(&b']') {
                        break;
                    } else if pattern.is_empty() {
                        // Unterminated: the class ends with the pattern.
                        break;
                    } else if pattern.len() >= 3 && pattern[1] == b'-' {
                        let (lo, hi) = (pattern[0].min(pattern[2]), pattern[0].max(pattern[2]));
                        matched |= (lo..=hi).contains(&c);
                        pattern = &pattern[2..];
                    } else {
                        matched |= pattern[0] == c;
                    }
                    pattern = &pattern[1..];
                }
                if matched == negate {
                    return false;
                }
                text = &text[1..];
                if pattern.is_empty() {
                    // Redis steps back onto the class's last byte here, and
                    // past it below.
                    return finish(pattern, text);
                }
            }
            b'\\' if pattern.len() >= 2 => {
                if pattern[1] != text[0] {
                    return false;
                }
                pattern = &pattern[1..];
                text = &text[1..];
            }
            c => {
                if c != text[0] {
                    return false;
                }
                text = &text[1..];
            }
        }
        pattern = &pattern[1..];
        if text.is_empty() {
            return finish(pattern, text);
        }
    }
    finish(pattern, text)
}

/// The end of a match: the text is used up and what is left of the pattern
/// is only `*`s (or both are empty).
fn finish(pattern: &[u8], text: &[u8]) -> bool {
    text.is_empty() && pattern.iter().all(|&c| c == b'*')
}

/// The literal bytes every match must start with (up to the first special
/// character), so a scan can seek to them instead of reading every key.
pub fn literal_prefix(pattern: &[u8]) -> Vec<u8> {
    let mut prefix = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' | b'?' | b'[' => break,
            b'\\' if i + 1 < pattern.len() => {
                prefix.push(pattern[i + 1]);
                i += 2;
            }
            b'\\' => break,
            c => {
                prefix.push(c);
                i += 1;
            }
        }
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_glob_semantics() {
        let m = |p: &str, t: &str| matches(p.as_bytes(), t.as_bytes());
        assert!(m("*", ""));
        assert!(m("user:*", "user:1"));
        assert!(!m("user:*", "usr:1"));
        assert!(m("h?llo", "hello") && !m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && !m("h[a-b]llo", "hcllo"));
        assert!(m("a\\*b", "a*b") && !m("a\\*b", "axb"));
        assert!(m("*a*b*c", "xxaxxbxxc") && !m("*a*b*c", "xxaxxcxxb"));
        assert!(m("a*", "a") && !m("a", "ab") && !m("ab", "a"));
    }

    /// Cases from Redis's own tests (`tests/unit/keyspace.tcl`, util.c's
    /// `stringmatchlen` fuzz) and its quirks, checked against redis-server.
    #[test]
    fn matches_redis_on_its_edge_cases() {
        let m = |p: &[u8], t: &[u8]| matches(p, t);
        // An unterminated class runs to the end of the pattern.
        assert!(m(b"[abc", b"a") && m(b"[abc", b"c") && !m(b"[abc", b"d"));
        assert!(m(b"x[ab", b"xb") && !m(b"x[ab", b"xbz"));
        // In `[b-]` the `]` ends a range b..] (any of ] ^ _ ` a b), and the
        // class goes on to the end of the pattern.
        assert!(m(b"[b-]", b"a") && m(b"[b-]", b"]") && !m(b"[b-]", b"c"));
        assert!(!m(b"[b-]x", b"bx"));
        // Reversed ranges count; escapes inside and outside classes.
        assert!(m(b"[z-a]", b"m"));
        assert!(m(b"[\\]]", b"]") && m(b"a\\?", b"a?") && !m(b"a\\?", b"ab"));
        // A trailing backslash is a literal backslash.
        assert!(m(b"a\\", b"a\\"));
        assert!(m(b"a**b", b"ab") && m(b"*", b"") && !m(b"?", b""));
        // Long runs of stars do not blow up.
        let stars = [b'*'; 40].iter().chain(b"x").copied().collect::<Vec<u8>>();
        assert!(!m(&stars, &[b'a'; 60]));
    }

    #[test]
    fn literal_prefix_stops_at_the_first_wildcard() {
        assert_eq!(literal_prefix(b"user:*"), b"user:");
        assert_eq!(literal_prefix(b"a\\*b?"), b"a*b");
        assert_eq!(literal_prefix(b"*x"), b"");
        assert_eq!(literal_prefix(b"plain"), b"plain");
    }
}
