//! Every config in `examples/` loads: `--mode validate` builds its listeners (route tables,
//! access log files, filters) and accepts it. The README shows the same configs.

use std::path::PathBuf;
use std::time::Duration;

use legate_testing::{legate_bin, run_bounded};

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
    for example in &examples {
        let path = example.to_string_lossy().into_owned();
        let out = run_bounded(legate_bin!(), &["--mode", "validate", "-c", &path], Duration::from_secs(20));
        assert_eq!(out.code(), 0, "{path}: {}", out.stderr);
        assert!(out.stdout.starts_with(&format!("configuration '{path}' OK")), "{path}: {}", out.stdout);
    }
}
