//! What an operator sees when the config is wrong: exit code 1, one line on stderr naming the
//! file or the field (`static_resources.clusters[0].lb_policy`, Envoy's proto field path), and
//! never a panic. `--mode validate` checks without binding anything (Envoy's validation server).

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use legate_testing::config::{static_cluster, tcp_proxy_bootstrap, unreadable_upstream_tls, UNREADABLE_CERT};
use legate_testing::{json, legate_bin, run_bounded, ClosedPort, RunOutput, Value};

/// A config file in a per-test directory, removed on drop.
struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn new(test: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("legate-config-errors-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{test}.yaml"));
        std::fs::write(&path, text).unwrap();
        Self { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(args: &[&str]) -> RunOutput {
    run_bounded(legate_bin!(), args, Duration::from_secs(20))
}

/// Serve mode with `config`: must exit 1 with exactly one stderr line containing every one of
/// `needles`. Returns that line.
fn serve_fails(test: &str, config: &str, needles: &[&str]) -> String {
    let file = ConfigFile::new(test, config);
    serve_fails_at(&file, needles)
}

/// Runs `-c file` at `-l warning` (at the default `info` the startup log lines precede the
/// error, as Envoy's do) and checks the failure as [`serve_fails`] describes.
fn serve_fails_at(file: &ConfigFile, needles: &[&str]) -> String {
    let out = run(&["-l", "warning", "-c", file.path()]);
    assert_eq!(out.code(), 1, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains("panicked"), "legate panicked:\n{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line on stderr, got:\n{}", out.stderr);
    for needle in needles {
        assert!(lines[0].contains(needle), "error line does not mention {needle:?}: {}", lines[0]);
    }
    lines[0].to_string()
}

fn valid_config() -> Value {
    tcp_proxy_bootstrap(&[ClosedPort::new().addr()])
}

#[test]
fn unparsable_yaml_names_the_file() {
    let file = ConfigFile::new("bad_yaml", "static_resources: [unclosed\n  listeners: {");
    serve_fails_at(&file, &["bad_yaml.yaml"]);
}

#[test]
fn missing_file_names_the_file() {
    let out = run(&["-l", "warning", "-c", "/nonexistent/legate-missing-config.yaml"]);
    assert_eq!(out.code(), 1, "stderr:\n{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(lines[0].contains("/nonexistent/legate-missing-config.yaml"), "{}", lines[0]);
}

#[test]
fn unknown_field_names_its_path() {
    let mut config = valid_config();
    config["static_resources"]["clusters"][0]["bogus_field"] = json!(1);
    serve_fails("unknown_field", &config.to_string(), &["static_resources.clusters[0]", "bogus_field"]);
}

/// A cluster's TLS context that cannot be built (its certificate file is missing) fails the
/// start, naming the cluster and the field.
#[test]
fn an_unbuildable_cluster_tls_context_names_its_path() {
    let mut config = valid_config();
    config["static_resources"]["clusters"][0]["transport_socket"] = unreadable_upstream_tls();
    serve_fails(
        "cluster_tls",
        &config.to_string(),
        &["static_resources.clusters[0]", "transport_socket.typed_config", UNREADABLE_CERT],
    );
}

#[test]
fn unknown_lb_policy_names_its_path() {
    let mut config = valid_config();
    config["static_resources"]["clusters"][0]["lb_policy"] = json!("FANCY");
    serve_fails("lb_policy", &config.to_string(), &["static_resources.clusters[0].lb_policy", "FANCY"]);
}

#[test]
fn unknown_cluster_in_tcp_proxy_is_refused() {
    let mut config = valid_config();
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["cluster"] =
        json!("nope");
    serve_fails("unknown_cluster", &config.to_string(), &["static_resources.listeners[0]", "nope"]);
}

#[test]
fn bad_listener_address_names_its_path() {
    let mut config = valid_config();
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] = json!("not-an-ip");
    serve_fails("bad_address", &config.to_string(), &["static_resources.listeners[0].address", "not-an-ip"]);
}

#[test]
fn port_already_taken_is_one_line_naming_the_port() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut config = valid_config();
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = json!(port);
    serve_fails("port_taken", &config.to_string(), &[&port.to_string()]);
    drop(taken);
}

#[test]
fn validate_mode_accepts_a_good_config() {
    let file = ConfigFile::new("validate_ok", &valid_config().to_string());
    let out = run(&["--mode", "validate", "-c", file.path()]);
    assert_eq!(out.code(), 0, "stderr:\n{}", out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains(&format!("configuration '{}' OK", file.path())), "output:\n{all}");
}

/// The validation server binds nothing: a config whose port is taken still validates.
#[test]
fn validate_mode_does_not_bind_listeners() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = valid_config();
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] =
        json!(taken.local_addr().unwrap().port());
    let file = ConfigFile::new("validate_nobind", &config.to_string());
    let out = run(&["--mode", "validate", "-c", file.path()]);
    assert_eq!(out.code(), 0, "stderr:\n{}", out.stderr);
}

#[test]
fn validate_mode_reports_every_error_one_per_line() {
    let mut config = valid_config();
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["cluster"] =
        json!("nope");
    let mut second = static_cluster("second", &[ClosedPort::new().addr()]);
    second["connect_timeout"] = json!("0s");
    config["static_resources"]["clusters"].as_array_mut().unwrap().push(second);
    let file = ConfigFile::new("validate_errors", &config.to_string());

    let out = run(&["--mode", "validate", "-c", file.path()]);

    assert_eq!(out.code(), 1, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let starts = |prefix: &str| out.stderr.lines().any(|l| l.strip_prefix("error: ").unwrap_or(l).starts_with(prefix));
    assert!(starts("static_resources.listeners[0].filter_chains[0].filters[0]"), "stderr:\n{}", out.stderr);
    assert!(starts("static_resources.clusters[1].connect_timeout"), "stderr:\n{}", out.stderr);
}
