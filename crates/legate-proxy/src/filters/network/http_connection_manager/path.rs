//! Path normalization of the connection manager: `normalize_path` (RFC 3986 §5.2.4 dot
//! segments), `merge_slashes` and `path_with_escaped_slashes_action`.

/// Whether a segment is `.` or `..`, plain or percent-encoded (any case).
fn is_dot_segment(segment: &str) -> bool {
    [".", "%2e", "..", "%2e%2e", ".%2e", "%2e."].iter().any(|d| segment.eq_ignore_ascii_case(d))
}

/// Whether [`remove_dot_segments`] would change `path` (so that most requests skip the copy).
pub fn has_dot_segments(path: &str) -> bool {
    path.split('/').skip(1).any(is_dot_segment)
}

/// Whether `//` occurs, which [`merge_slashes`] would collapse.
pub fn has_repeated_slashes(path: &str) -> bool {
    path.contains("//")
}

/// Removes `.` and `..` segments. `None` when the path is not absolute.
pub fn remove_dot_segments(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        let single = [".", "%2e"].iter().any(|d| segment.eq_ignore_ascii_case(d));
        let double = ["..", "%2e%2e", ".%2e", "%2e."].iter().any(|d| segment.eq_ignore_ascii_case(d));
        if single || double {
            if double {
                out.pop();
            }
            if i == last {
                out.push("");
            }
        } else {
            out.push(segment);
        }
    }
    Some(format!("/{}", out.join("/")))
}

/// `//a///b` → `/a/b`.
pub fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut previous_slash = false;
    for c in path.chars() {
        if c == '/' && previous_slash {
            continue;
        }
        previous_slash = c == '/';
        out.push(c);
    }
    out
}

/// Whether the path holds an escaped slash or backslash (`%2F`, `%5C`, any case).
pub fn has_escaped_slashes(path: &str) -> bool {
    path.as_bytes().windows(3).any(|w| {
        w.first() == Some(&b'%')
            && matches!(
                (w.get(1), w.get(2).map(u8::to_ascii_lowercase)),
                (Some(b'2'), Some(b'f')) | (Some(b'5'), Some(b'c'))
            )
    })
}

/// `%2F` → `/`, `%5C` → `\`, any case.
pub fn unescape_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            match (bytes[i + 1], bytes[i + 2].to_ascii_lowercase()) {
                (b'2', b'f') => {
                    out.push('/');
                    i += 3;
                    continue;
                }
                (b'5', b'c') => {
                    out.push('\\');
                    i += 3;
                    continue;
                }
                _ => {}
            }
        }
        // Copy one whole UTF-8 character.
        // `i` only ever advances by whole characters or by three ASCII bytes.
        let Some(ch) = path.get(i..).and_then(|rest| rest.chars().next()) else { break };
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments() {
        assert_eq!(remove_dot_segments("/a/b/../c/./d").as_deref(), Some("/a/c/d"));
        assert_eq!(remove_dot_segments("/../../x").as_deref(), Some("/x"));
        assert_eq!(remove_dot_segments("/a/..").as_deref(), Some("/"));
        assert_eq!(remove_dot_segments("/a/%2e%2e/b").as_deref(), Some("/b"));
        assert_eq!(remove_dot_segments("a"), None);
    }

    #[test]
    fn slashes() {
        assert_eq!(merge_slashes("//a///b/"), "/a/b/");
        assert!(has_escaped_slashes("/a%2fb"));
        assert_eq!(unescape_slashes("/a%2Fb%5cc%2"), "/a/b\\c%2");
        assert_eq!(unescape_slashes("/é%2F"), "/é/");
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    #[test]
    fn the_checks_agree_with_the_transformations() {
        for path in [
            "/a/b",
            "/a/./b",
            "/a/../b",
            "/a/%2E%2e/b",
            "/a/.%2E",
            "/.well-known/x",
            "/a//b",
            "/a%2fb",
            "/a%5Cb",
            "/%2",
            "/",
        ] {
            assert_eq!(has_dot_segments(path), remove_dot_segments(path).as_deref() != Some(path), "{path}");
            assert_eq!(has_repeated_slashes(path), merge_slashes(path) != path, "{path}");
            assert_eq!(has_escaped_slashes(path), unescape_slashes(path) != path, "{path}");
        }
    }
}
