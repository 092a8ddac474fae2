//! The shared HTTP malformed-input vectors (`../shared/http-vectors/vectors.json`, see
//! `../shared/README.md`): each an exact byte string and the handling it wants, in words; and
//! the scaffolding of a survey over them: [`run_vectors_in_parallel`], [`print_vector_report`].

use std::collections::BTreeMap;
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

/// Where the shared vectors are, from the workspace: `../shared/http-vectors/vectors.json`.
const SHARED_VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/http-vectors/vectors.json");

/// The shared vectors of protocol `proto` (`h1`, `h2`); panics if the file cannot be read.
pub fn shared_http_vectors(proto: &str) -> Vec<HttpVector> {
    load_http_vectors(Path::new(SHARED_VECTORS)).into_iter().filter(|v| v.proto == proto).collect()
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

/// Runs `vectors` on `workers` targets at once (most of a vector's time goes to waiting for
/// the reply to go quiet): each worker thread starts its own target with `start`, runs its
/// share of the vectors in order with `run`, then hands the target to `finish` (to assert it
/// survived them all). Returns each vector with what `run` made of it, worker by worker;
/// panics if a worker panicked.
pub fn run_vectors_in_parallel<T, R: Send>(
    vectors: &[HttpVector],
    workers: usize,
    start: impl Fn() -> T + Sync,
    run: impl Fn(&mut T, &HttpVector) -> R + Sync,
    finish: impl Fn(&mut T) + Sync,
) -> Vec<(HttpVector, R)> {
    let (start, run, finish) = (&start, &run, &finish);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let mine: Vec<HttpVector> = vectors.iter().skip(w).step_by(workers).cloned().collect();
                s.spawn(move || {
                    let mut target = start();
                    let out: Vec<(HttpVector, R)> = mine
                        .into_iter()
                        .map(|v| {
                            let r = run(&mut target, &v);
                            (v, r)
                        })
                        .collect();
                    finish(&mut target);
                    out
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("vector worker panicked")).collect()
    })
}

/// One line of a vector survey's report.
#[derive(Debug)]
pub struct VectorReport<'a> {
    /// The vector.
    pub vector: &'a HttpVector,
    /// Whether it was handled as wanted (a skipped vector counts as handled).
    pub passed: bool,
    /// The verdict in words: `pass`, `FAIL`, `skipped (why)`…
    pub result: String,
    /// What happened, in words.
    pub observed: String,
}

/// Prints a survey (see it with `--nocapture`) as two Markdown tables: per category, how many
/// vectors passed and which failed; then one row a vector with what was observed and wanted.
pub fn print_vector_report(reports: &[VectorReport<'_>]) {
    let mut by_category: BTreeMap<&str, Vec<&VectorReport<'_>>> = BTreeMap::new();
    for r in reports {
        by_category.entry(r.vector.category.as_str()).or_default().push(r);
    }
    eprintln!("\n| category | pass | fail | failing vectors |\n|---|---|---|---|");
    for (category, rs) in &by_category {
        let failing: Vec<&str> = rs.iter().filter(|r| !r.passed).map(|r| r.vector.id.as_str()).collect();
        eprintln!("| {category} | {} | {} | {} |", rs.len() - failing.len(), failing.len(), failing.join(", "));
    }
    eprintln!("\n| vector | result | observed | want |\n|---|---|---|---|");
    for r in reports {
        eprintln!("| {} | {} | {} | {} |", r.vector.id, r.result, r.observed, r.vector.want.replace('|', "/"));
    }
}
