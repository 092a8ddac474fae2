//! Every config in `examples/` loads: `--mode validate` builds its listeners (route tables,
//! access log files, filters, TLS contexts) and accepts it. The README shows the same configs.
//! Examples that read certificates from `/etc/legate/certs/` get fresh ones made for the test
//! in a temp dir, the path substituted.

use std::path::PathBuf;
use std::time::Duration;

use legate_testing::{legate_bin, run_bounded, TempDir, TestCa};

const CERTS: &str = "/etc/legate/certs/";

/// Writes the certificates the TLS examples name into `dir`.
fn write_certificates(dir: &TempDir) {
    let ca = TestCa::new("legate examples CA");
    ca.issue("edge", &["edge.example.com", "localhost"]).write(dir, "edge");
    std::fs::write(dir.join("internal-ca.pem"), ca.pem()).unwrap();
}

#[test]
fn every_example_config_validates() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut examples: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 2, "examples found: {examples:?}");
    let certs = TempDir::new();
    write_certificates(&certs);
    for example in &examples {
        let mut path = example.to_string_lossy().into_owned();
        let text = std::fs::read_to_string(example).unwrap();
        if text.contains(CERTS) {
            let name = example.file_name().unwrap().to_string_lossy().into_owned();
            let copy = certs.join(&name);
            let dir = format!("{}/", certs.path().display());
            std::fs::write(&copy, text.replace(CERTS, &dir)).unwrap();
            path = copy.to_string_lossy().into_owned();
        }
        let out = run_bounded(legate_bin!(), &["--mode", "validate", "-c", &path], Duration::from_secs(20));
        assert_eq!(out.code(), 0, "{path}: {}", out.stderr);
        assert!(out.stdout.starts_with(&format!("configuration '{path}' OK")), "{path}: {}", out.stdout);
    }
}
