//! Path normalization of the connection manager: `normalize_path` (RFC 3986 §5.2.4 dot
//! segments), `merge_slashes` and `path_with_escaped_slashes_action`.

/// Removes `.` and `..` segments. `None` when the path is not absolute.
pub fn remove_dot_segments(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | "%2e" | "%2E" => {
                if i == last {
                    out.push("");
                }
            }
            ".." | "%2e%2e" | "%2E%2E" | ".%2e" | ".%2E" | "%2e." | "%2E." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
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
    let lower = path.to_ascii_lowercase();
    lower.contains("%2f") || lower.contains("%5c")
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
