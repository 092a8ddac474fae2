//! HTTP/1.1 response heads as the hand-written clients read them ([`crate::HttpClient`], the
//! admin client): the status line and header fields, and header lookup by name. One parser,
//! so that every client in these tests agrees on what a head is.

/// Parses a response head (the status line and header lines, without the blank line that ends
/// them): the status code and the header fields, names lowercased and values trimmed, in order.
pub(crate) fn parse_response_head(head: &str) -> Result<(u16, Vec<(String, String)>), String> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok((status, headers))
}

/// First value of header `name` (case-insensitive) among `headers`, whose names are lowercase.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
}

/// Every value of header `name` (case-insensitive) among `headers`, in order.
pub(crate) fn header_all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    let name = name.to_ascii_lowercase();
    headers.iter().filter(|(n, _)| *n == name).map(|(_, v)| v.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_headers() {
        let (status, headers) = parse_response_head("HTTP/1.1 404 Not Found\r\nX-A: 1\r\nx-a:  2 ").unwrap();
        assert_eq!(status, 404);
        assert_eq!((header(&headers, "X-A"), header_all(&headers, "x-a")), (Some("1"), vec!["1", "2"]));
        assert!(parse_response_head("HTTP/2 200").is_err());
        assert!(parse_response_head("HTTP/1.1 200 OK\r\nno colon").is_err());
    }
}
