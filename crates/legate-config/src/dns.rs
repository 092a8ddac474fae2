//! How DNS clusters resolve: the resolver extensions of `Cluster.typed_dns_resolver_config`
//! (`envoy.network.dns_resolver.cares`, `envoy.network.dns_resolver.getaddrinfo`) and the
//! older fields they replace (`dns_resolvers`, `dns_resolution_config`,
//! `use_tcp_for_dns_lookups`), folded into one [`DnsResolverConfig`].

use std::net::SocketAddr;

use serde::Deserialize;
use serde_json::Value;

use crate::core::Address;
use crate::extensions::{self, Extension};
use crate::path::{self, PathError};
use crate::unsupported::Unsupported;

/// `envoy.config.core.v3.TypedExtensionConfig` of a DNS resolver, resolved on use.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TypedDnsResolverConfig {
    #[serde(default)]
    pub name: String,
    pub typed_config: Option<Value>,
}

/// `envoy.config.core.v3.DnsResolutionConfig` (deprecated form).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsResolutionConfig {
    #[serde(default)]
    pub resolvers: Vec<Address>,
    pub dns_resolver_options: Option<DnsResolverOptions>,
}

/// `envoy.config.core.v3.DnsResolverOptions`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsResolverOptions {
    #[serde(default)]
    pub use_tcp_for_dns_lookups: bool,
    /// Names are always queried as given by legate's own resolver (no search domains).
    #[serde(default)]
    pub no_default_search_domain: bool,
}

/// `envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CaresDnsResolverConfig {
    #[serde(default)]
    pub resolvers: Vec<Address>,
    #[serde(default)]
    pub use_resolvers_as_fallback: bool,
    #[serde(default)]
    pub filter_unroutable_families: bool,
    pub dns_resolver_options: Option<DnsResolverOptions>,
    pub udp_max_queries: Option<u32>,
    /// Per-query timeout in seconds (c-ares' default 5).
    pub query_timeout_seconds: Option<u64>,
    /// Attempts per query (c-ares' default 4).
    pub query_tries: Option<u32>,
    pub edns0_max_payload_size: Option<u32>,
    pub rotate_nameservers: Option<bool>,
    pub max_udp_channel_duration: Option<Unsupported>,
}

/// `envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GetAddrInfoDnsResolverConfig {
    pub num_retries: Option<u32>,
    pub num_resolver_threads: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DnsResolverExtension {
    Cares(CaresDnsResolverConfig),
    GetAddrInfo(GetAddrInfoDnsResolverConfig),
}

pub static DNS_RESOLVERS: &[Extension<DnsResolverExtension>] = &[
    Extension {
        name: "envoy.network.dns_resolver.cares",
        type_url: "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
        parse: |v| path::from_value(v).map(DnsResolverExtension::Cares),
    },
    Extension {
        name: "envoy.network.dns_resolver.getaddrinfo",
        type_url: "envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig",
        parse: |v| path::from_value(v).map(DnsResolverExtension::GetAddrInfo),
    },
];

impl TypedDnsResolverConfig {
    pub fn resolve(&self) -> Result<DnsResolverExtension, PathError> {
        extensions::resolve(DNS_RESOLVERS, "DNS resolver", &self.name, self.typed_config.clone())
    }
}

/// What the data plane needs to resolve a cluster's names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DnsResolverConfig {
    /// Name servers to ask; empty means the system resolver (`getaddrinfo`, which also reads
    /// `/etc/hosts`).
    pub resolvers: Vec<SocketAddr>,
    pub use_tcp: bool,
    /// Per-query timeout (c-ares' 5 s by default).
    pub query_timeout: std::time::Duration,
    /// Attempts per query.
    pub query_tries: u32,
}

impl DnsResolverConfig {
    pub const DEFAULT_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
    pub const DEFAULT_QUERY_TRIES: u32 = 4;
}

/// Envoy's precedence: `typed_dns_resolver_config`, else `dns_resolution_config`, else the
/// deprecated `dns_resolvers` / `use_tcp_for_dns_lookups`. Addresses that are not IP literals
/// were refused at load.
pub(crate) fn resolver_config(
    typed: Option<&TypedDnsResolverConfig>,
    resolution: Option<&DnsResolutionConfig>,
    resolvers: &[Address],
    use_tcp: bool,
) -> DnsResolverConfig {
    let addresses = |list: &[Address]| -> Vec<SocketAddr> {
        list.iter()
            .filter_map(|a| a.socket())
            .filter_map(|s| {
                Some(SocketAddr::new(s.ip()?, u16::try_from(s.port_value).ok().filter(|p| *p > 0).unwrap_or(53)))
            })
            .collect()
    };
    let mut config = DnsResolverConfig {
        resolvers: Vec::new(),
        use_tcp: false,
        query_timeout: DnsResolverConfig::DEFAULT_QUERY_TIMEOUT,
        query_tries: DnsResolverConfig::DEFAULT_QUERY_TRIES,
    };
    match typed.map(TypedDnsResolverConfig::resolve) {
        Some(Ok(DnsResolverExtension::Cares(cares))) => {
            config.resolvers = addresses(&cares.resolvers);
            config.use_tcp = cares.dns_resolver_options.as_ref().is_some_and(|o| o.use_tcp_for_dns_lookups);
            if let Some(s) = cares.query_timeout_seconds.filter(|s| *s > 0) {
                config.query_timeout = std::time::Duration::from_secs(s);
            }
            if let Some(n) = cares.query_tries.filter(|n| *n > 0) {
                config.query_tries = n;
            }
        }
        Some(_) => {}
        None => match resolution {
            Some(r) => {
                config.resolvers = addresses(&r.resolvers);
                config.use_tcp = r.dns_resolver_options.as_ref().is_some_and(|o| o.use_tcp_for_dns_lookups);
            }
            None => {
                config.resolvers = addresses(resolvers);
                config.use_tcp = use_tcp;
            }
        },
    }
    config
}

/// Load-time checks: the extension is known and well formed, resolvers are IP addresses.
pub(crate) fn validate(
    at: &str,
    typed: Option<&TypedDnsResolverConfig>,
    resolution: Option<&DnsResolutionConfig>,
    resolvers: &[Address],
    v: &mut crate::validate::Validator,
) {
    let check_addresses = |field: &str, list: &[Address], v: &mut crate::validate::Validator| {
        for (i, a) in list.iter().enumerate() {
            if a.socket().and_then(|s| s.ip()).is_none() {
                v.error(&format!("{at}.{field}[{i}]"), "a DNS resolver must be an IP address");
            }
        }
    };
    if let Some(typed) = typed {
        match typed.resolve() {
            Ok(DnsResolverExtension::Cares(cares)) => {
                check_addresses("typed_dns_resolver_config.typed_config.resolvers", &cares.resolvers, v)
            }
            Ok(DnsResolverExtension::GetAddrInfo(_)) => {}
            Err(e) => v.error(&path::join(&format!("{at}.typed_dns_resolver_config"), &e.path), e.message),
        }
    }
    if let Some(r) = resolution {
        check_addresses("dns_resolution_config.resolvers", &r.resolvers, v);
    }
    check_addresses("dns_resolvers", resolvers, v);
}

#[cfg(test)]
mod tests {
    use crate::load::load_bootstrap;

    fn cluster_yaml(fields: &str) -> String {
        format!(
            r#"
static_resources:
  clusters:
  - name: backend
    type: STRICT_DNS
{fields}
"#
        )
    }

    #[test]
    fn every_form_of_the_resolvers_folds_into_one() {
        let cares = cluster_yaml(
            r#"    typed_dns_resolver_config:
      name: envoy.network.dns_resolver.cares
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
        resolvers: [{socket_address: {address: 10.0.0.2, port_value: 5353}}]
        dns_resolver_options: {use_tcp_for_dns_lookups: true}
        query_timeout_seconds: 2"#,
        );
        let b = load_bootstrap(None, Some(&cares)).unwrap().bootstrap;
        let r = b.static_resources.clusters[0].dns_resolver();
        assert_eq!(r.resolvers, vec!["10.0.0.2:5353".parse().unwrap()]);
        assert!(r.use_tcp);
        assert_eq!(r.query_timeout, std::time::Duration::from_secs(2));

        let old = cluster_yaml("    dns_resolvers: [{socket_address: {address: 10.0.0.3}}]");
        let b = load_bootstrap(None, Some(&old)).unwrap().bootstrap;
        assert_eq!(b.static_resources.clusters[0].dns_resolver().resolvers, vec!["10.0.0.3:53".parse().unwrap()]);

        let none = cluster_yaml("    respect_dns_ttl: true");
        let b = load_bootstrap(None, Some(&none)).unwrap().bootstrap;
        assert!(b.static_resources.clusters[0].dns_resolver().resolvers.is_empty(), "the system resolver");
    }

    #[test]
    fn bad_resolvers_and_back_off_name_the_field() {
        let name = cluster_yaml("    dns_resolvers: [{socket_address: {address: dns.example.com, port_value: 53}}]");
        let err = load_bootstrap(None, Some(&name)).unwrap_err().to_string();
        assert!(err.contains("clusters[0].dns_resolvers[0]: a DNS resolver must be an IP address"), "{err}");
        let unknown = cluster_yaml(
            r#"    typed_dns_resolver_config: {name: x, typed_config: {"@type": type.googleapis.com/example.Resolver}}"#,
        );
        let err = load_bootstrap(None, Some(&unknown)).unwrap_err().to_string();
        assert!(err.contains("clusters[0].typed_dns_resolver_config.typed_config: Didn't find a registered"), "{err}");
        let backoff = cluster_yaml("    dns_failure_refresh_rate: {base_interval: 2s, max_interval: 1s}");
        let err = load_bootstrap(None, Some(&backoff)).unwrap_err().to_string();
        assert!(err.contains("dns_failure_refresh_rate.max_interval: value must be greater than or equal"), "{err}");
    }
}
