//! Compatibility report: `legate --mode validate` over real Envoy configs written by others
//! (`../shared/envoy-configs/`, DESIGN.md §9). A refusal with a clear reason is an accepted
//! outcome — this is a score, not a gate — but a crash, a panic or an exit code other than
//! 0 (loaded) or 1 (refused) fails the test.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use legate_testing::{legate_bin, run_bounded};

const CONFIGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/envoy-configs");

#[test]
fn validate_every_shared_envoy_config() {
    let dir = Path::new(CONFIGS);
    let Ok(entries) = std::fs::read_dir(dir) else {
        eprintln!("note: {} is absent; no compatibility report", dir.display());
        return;
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();

    let (mut loaded, mut refused, mut broken) = (Vec::new(), Vec::new(), Vec::new());
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let out =
            run_bounded(legate_bin!(), &["--mode", "validate", "-c", path.to_str().unwrap()], Duration::from_secs(30));
        let first_error =
            out.stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("(no message on stderr)").to_string();
        match out.status.code() {
            _ if out.stderr.contains("panicked") => broken.push(format!("{name}: panicked: {first_error}")),
            Some(0) => loaded.push(name),
            Some(1) => refused.push(format!("{name}: {first_error}")),
            _ => broken.push(format!("{name}: exit {}: {first_error}", out.status)),
        }
    }

    let mut report = String::new();
    writeln!(report, "legate --mode validate over {} Envoy configs in {}", files.len(), dir.display()).unwrap();
    writeln!(report, "loaded: {}  refused: {}  crashed: {}", loaded.len(), refused.len(), broken.len()).unwrap();
    writeln!(report, "\n== loaded ==").unwrap();
    for name in &loaded {
        writeln!(report, "  {name}").unwrap();
    }
    writeln!(report, "\n== refused (first error line) ==").unwrap();
    for line in &refused {
        writeln!(report, "  {line}").unwrap();
    }
    if !broken.is_empty() {
        writeln!(report, "\n== CRASHED ==").unwrap();
        for line in &broken {
            writeln!(report, "  {line}").unwrap();
        }
    }
    let report_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("envoy-configs-report.txt");
    std::fs::write(&report_path, &report).unwrap();
    println!("{report}\n(report written to {})", report_path.display());

    assert!(broken.is_empty(), "validate must exit 0 or 1 without panicking:\n{}", broken.join("\n"));
}
