//! Reading a bootstrap from a file and `--config-yaml`, as Envoy's `-c` and `--config-yaml`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::bootstrap::Bootstrap;
use crate::merge::merge_from;
use crate::normalize::normalize;
use crate::path::{self, PathError};
use crate::validate;

/// Why a configuration could not be loaded. Each variant prints as one line per problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unable to read file: {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to parse {origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{0}")]
    Field(PathError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<PathError>),
    #[error("at least one of --config-path or --config-yaml is required")]
    Empty,
}

/// A bootstrap that passed parsing and validation, with the merged JSON tree it came from
/// (for `/config_dump`).
#[derive(Clone, Debug)]
pub struct LoadedBootstrap {
    pub bootstrap: Bootstrap,
    /// The merged tree as compact JSON text, read again by [`Self::raw`]: the tree itself, kept
    /// for the life of the server, cost ~15 times its text (44 MB for 10,000 clusters with a
    /// route each, against ~3 MB).
    raw_text: Box<str>,
    /// The tree's `node`, which `/server_info` shows without reading the whole text again.
    pub raw_node: Value,
}

impl LoadedBootstrap {
    /// The merged JSON tree the bootstrap was parsed from (the text is this tree's own
    /// serialization, so it always reads back).
    pub fn raw(&self) -> Value {
        serde_json::from_str(&self.raw_text).unwrap_or_default()
    }
}

/// Loads `config_path` (YAML, or JSON when it ends in `.json`) and merges `config_yaml` over it.
pub fn load_bootstrap(config_path: Option<&Path>, config_yaml: Option<&str>) -> Result<LoadedBootstrap, ConfigError> {
    let mut tree = match config_path {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
            let origin = path.display().to_string();
            let is_json = path.extension().is_some_and(|e| e == "json");
            let is_proto = path.extension().is_some_and(|e| e == "pb" || e == "pb_text");
            if is_proto {
                return Err(ConfigError::Syntax {
                    origin,
                    message: "binary and text protobuf configs are not supported by legate; use YAML or JSON".into(),
                });
            }
            if is_json {
                parse_json(&text, &origin)?
            } else {
                parse_yaml(&text, &origin)?
            }
        }
        None => Value::Object(Default::default()),
    };
    if let Some(yaml) = config_yaml {
        let overlay = parse_yaml(yaml, "--config-yaml")?;
        merge_from(&mut tree, overlay);
    }
    if config_path.is_none() && config_yaml.is_none() {
        return Err(ConfigError::Empty);
    }
    parse_bootstrap(tree)
}

/// Parses and validates an already-read JSON tree.
pub fn parse_bootstrap(mut tree: Value) -> Result<LoadedBootstrap, ConfigError> {
    if !tree.is_object() {
        return Err(ConfigError::Syntax { origin: "config".into(), message: "the bootstrap must be a mapping".into() });
    }
    normalize(&mut tree);
    let mut bootstrap: Bootstrap = path::from_value(tree.clone()).map_err(ConfigError::Field)?;
    for (i, cluster) in bootstrap.static_resources.clusters.iter_mut().enumerate() {
        cluster.apply_load_balancing_policy().map_err(|e| {
            ConfigError::Field(path::PathError {
                path: path::join(&format!("static_resources.clusters[{i}]"), &e.path),
                message: e.message,
            })
        })?;
    }
    let errors = validate::validate(&bootstrap);
    if !errors.is_empty() {
        return Err(ConfigError::Invalid(errors));
    }
    let raw_node = tree.get("node").cloned().unwrap_or_else(|| Value::Object(Default::default()));
    Ok(LoadedBootstrap { bootstrap, raw_text: tree.to_string().into_boxed_str(), raw_node })
}

pub fn parse_yaml(text: &str, origin: &str) -> Result<Value, ConfigError> {
    let value: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| ConfigError::Syntax { origin: origin.to_string(), message: e.to_string() })?;
    Ok(if value.is_null() { Value::Object(Default::default()) } else { value })
}

pub fn parse_json(text: &str, origin: &str) -> Result<Value, ConfigError> {
    serde_json::from_str(text).map_err(|e| ConfigError::Syntax { origin: origin.to_string(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<LoadedBootstrap, ConfigError> {
        load_bootstrap(None, Some(yaml))
    }

    const MINIMAL: &str = r#"
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: backend
  clusters:
  - name: backend
    connect_timeout: 0.25s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8080}}}
"#;

    #[test]
    fn loads_a_tcp_proxy_config() {
        let b = load(MINIMAL).unwrap().bootstrap;
        assert_eq!(b.static_resources.clusters[0].connect_timeout(), std::time::Duration::from_millis(250));
        assert_eq!(b.static_resources.listeners[0].per_connection_buffer_limit_bytes(), 1024 * 1024);
    }

    #[test]
    fn the_raw_tree_reads_back_as_loaded() {
        let yaml = format!("{MINIMAL}node: {{id: n1, metadata: {{ratio: 0.5, big: 18446744073709551615}}}}\n");
        let loaded = load(&yaml).unwrap();
        let raw = loaded.raw();
        assert_eq!(raw["static_resources"]["clusters"][0]["name"], "backend");
        assert_eq!(raw["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"], 10000);
        assert_eq!(raw["node"], loaded.raw_node);
        assert_eq!(loaded.raw_node["metadata"]["ratio"], 0.5);
        assert_eq!(loaded.raw_node["metadata"]["big"], u64::MAX);
        let without_node = load(MINIMAL).unwrap();
        assert_eq!(without_node.raw_node, serde_json::json!({}), "no node: an empty object");
    }

    #[test]
    fn misspelled_enum_names_the_field() {
        let yaml = MINIMAL.replace("connect_timeout: 0.25s", "connect_timeout: 0.25s\n    lb_policy: ROUND_ROBBIN");
        let err = load(&yaml).unwrap_err().to_string();
        assert!(err.starts_with("static_resources.clusters[0].lb_policy: unknown variant `ROUND_ROBBIN`"), "{err}");
    }

    /// Envoy's parser takes enum names in lower case and one element for a list of them (its
    /// quick-start configs are written so).
    #[test]
    fn lower_case_enums_and_a_lone_list_element_load_as_in_envoy() {
        let yaml = MINIMAL.replace(
            "connect_timeout: 0.25s",
            "connect_timeout: 0.25s\n    type: strict_dns\n    lb_policy: least_request\n    dns_lookup_family: v4_only",
        );
        let b = load(&yaml).unwrap().bootstrap;
        let cluster = &b.static_resources.clusters[0];
        assert_eq!(cluster.discovery_type, crate::cluster::DiscoveryType::StrictDns);
        assert_eq!(cluster.lb_policy, crate::cluster::LbPolicy::LeastRequest);
        assert_eq!(cluster.dns_lookup_family, crate::cluster::DnsLookupFamily::V4Only);
        let text = serde_json::to_string(&parse_yaml(MINIMAL, "test").unwrap()).unwrap();
        let mut tree: Value = serde_json::from_str(&text).unwrap();
        let chain = tree["static_resources"]["listeners"][0]["filter_chains"][0].take();
        tree["static_resources"]["listeners"][0]["filter_chains"] = chain;
        let b = parse_bootstrap(tree).unwrap().bootstrap;
        assert_eq!(b.static_resources.listeners[0].filter_chains.len(), 1);
        // A name that is neither as written nor in upper case is still refused.
        let yaml = MINIMAL.replace("connect_timeout: 0.25s", "connect_timeout: 0.25s\n    type: strict-dns");
        let err = load(&yaml).unwrap_err().to_string();
        assert!(err.starts_with("static_resources.clusters[0].type: unknown variant `strict-dns`"), "{err}");
    }

    #[test]
    fn error_inside_typed_config_has_the_full_path() {
        let yaml = MINIMAL.replace("stat_prefix: tcp", "stat_prefix: tcp\n          idle_timeout: 10");
        let err = load(&yaml).unwrap_err().to_string();
        assert!(
            err.starts_with("static_resources.listeners[0].filter_chains[0].filters[0].typed_config.idle_timeout:"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_is_refused() {
        let yaml = MINIMAL.replace("connect_timeout: 0.25s", "connect_timeout: 0.25s\n    conect_timeout: 1s");
        let err = load(&yaml).unwrap_err().to_string();
        assert_eq!(err, "static_resources.clusters[0].conect_timeout: unknown field `conect_timeout`");
    }

    #[test]
    fn unsupported_envoy_field_says_so() {
        let yaml = MINIMAL.replace("connect_timeout: 0.25s", "connect_timeout: 0.25s\n    lb_subset_config: {}");
        let err = load(&yaml).unwrap_err().to_string();
        assert_eq!(
            err,
            "static_resources.clusters[0].lb_subset_config: this Envoy field is not supported by legate yet"
        );
    }

    #[test]
    fn camel_case_and_durations_as_objects() {
        let yaml = MINIMAL.replace("connect_timeout: 0.25s", "connectTimeout: {seconds: 2}");
        let b = load(&yaml).unwrap().bootstrap;
        assert_eq!(b.static_resources.clusters[0].connect_timeout(), std::time::Duration::from_secs(2));
    }

    #[test]
    fn bad_yaml_is_a_syntax_error() {
        let err = load("static_resources: [").unwrap_err().to_string();
        assert!(err.starts_with("unable to parse --config-yaml:"), "{err}");
    }

    #[test]
    fn missing_file_names_it() {
        let err = load_bootstrap(Some(Path::new("/nonexistent/envoy.yaml")), None).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/envoy.yaml"), "{err}");
    }
}
