//! The shared HTTP malformed-input vectors (`../shared/http-vectors/vectors.json`, see
//! `../shared/README.md`): each an exact byte string and the handling it wants, in words.

use std::path::Path;

use base64::Engine;

/// One vector.
#[derive(Clone, Debug)]
pub struct HttpVector {
    /// `h1-cl-te`…
    pub id: String,
    /// `h1` or `h2`.
    pub proto: String,
    /// `framing`, `chunked`, `syntax`…
    pub category: String,
    /// The bytes to send, decoded from `raw_b64`.
    pub raw: Vec<u8>,
    /// The expected handling, in words.
    pub want: String,
    /// How to run it, when sending the bytes at once is not enough.
    pub notes: String,
}

/// Loads every vector of `vectors.json`; panics with the reason if the file cannot be read.
pub fn load_http_vectors(path: &Path) -> Vec<HttpVector> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()));
    let entries = json.as_array().unwrap_or_else(|| panic!("{}: not a JSON array", path.display()));
    let field = |e: &serde_json::Value, name: &str| e[name].as_str().unwrap_or_default().to_string();
    entries
        .iter()
        .map(|e| HttpVector {
            id: field(e, "id"),
            proto: field(e, "proto"),
            category: field(e, "category"),
            raw: base64::engine::general_purpose::STANDARD
                .decode(field(e, "raw_b64"))
                .unwrap_or_else(|err| panic!("vector {}: raw_b64: {err}", field(e, "id"))),
            want: field(e, "want"),
            notes: field(e, "notes"),
        })
        .collect()
}
