//! Envoy's default tag extractors: turn `cluster.x.upstream_rq_2xx` into the tag-extracted
//! name `cluster.upstream_rq_xx` with tags `envoy.response_code_class="2"`,
//! `envoy.cluster_name="x"` (docs: "Statistics" > tags; `TagNameValues` in
//! `source/common/config/well_known_names.cc`, `TagProducerImpl`, `TagExtractorImplBase`).
//!
//! Two kinds of extractor, as in Envoy:
//! - regex: the first capture group is removed from the name, the second (or the first when
//!   the second is empty) is the tag value; a `substr` that must occur in the name is checked
//!   first, and a "negative" value (e.g. `admin` for listener addresses) is never a tag;
//! - tokens: a dot-separated pattern where `$` is the tag value, `*` any one token and `**`
//!   any number of tokens; the value token and one adjoining dot are removed.
//!
//! Every extractor runs against the original name and the removals are applied together.
//! Extractors whose pattern starts with a fixed first token only run on names starting with it.
//! The tag order is Envoy's: extractors without such a prefix first, then those keyed by the
//! name's first token, each group in declaration order with all regex extractors before the
//! token ones (`TagProducerImpl::addDefaultExtractors`); only the first extractor of a tag name
//! that matches contributes (two exist for `envoy.http_conn_manager_prefix`).
//!
//! The regexes are Envoy's RE2 ones rewritten for the `regex` crate with ASCII classes.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

/// A tag: Envoy's tag name (e.g. `envoy.cluster_name`) and the value taken from the stat name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// Tag name, e.g. `envoy.cluster_name`.
    pub name: &'static str,
    /// Tag value, e.g. the cluster name.
    pub value: String,
}

/// A stat name split into its tag-extracted name and tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagExtraction {
    /// The name with every tag value removed, e.g. `cluster.upstream_rq_xx`.
    pub extracted_name: String,
    /// The tags, in Envoy's order.
    pub tags: Vec<Tag>,
}

/// Applies Envoy's default tag extractors to a full stat name.
pub fn extract_tags(name: &str) -> TagExtraction {
    DEFAULT_EXTRACTORS.produce(name)
}

// Envoy's tag names (`TagNameValues`).
const CLUSTER_NAME: &str = "envoy.cluster_name";
const LISTENER_ADDRESS: &str = "envoy.listener_address";
const HTTP_CONN_MANAGER_PREFIX: &str = "envoy.http_conn_manager_prefix";
const HTTP_USER_AGENT: &str = "envoy.http_user_agent";
const SSL_CIPHER: &str = "envoy.ssl_cipher";
const SSL_CURVE: &str = "envoy.ssl_curve";
const SSL_SIGALG: &str = "envoy.ssl_sigalg";
const SSL_VERSION: &str = "envoy.ssl_version";
const SSL_CIPHER_SUITE: &str = "cipher_suite";
const CLIENTSSL_PREFIX: &str = "envoy.clientssl_prefix";
const MONGO_PREFIX: &str = "envoy.mongo_prefix";
const MONGO_CMD: &str = "envoy.mongo_cmd";
const MONGO_COLLECTION: &str = "envoy.mongo_collection";
const MONGO_CALLSITE: &str = "envoy.mongo_callsite";
const RATELIMIT_PREFIX: &str = "envoy.ratelimit_prefix";
const LOCAL_HTTP_RATELIMIT_PREFIX: &str = "envoy.local_http_ratelimit_prefix";
const LOCAL_NETWORK_RATELIMIT_PREFIX: &str = "envoy.local_network_ratelimit_prefix";
const LOCAL_LISTENER_RATELIMIT_PREFIX: &str = "envoy.local_listener_ratelimit_prefix";
const DNS_FILTER_PREFIX: &str = "envoy.dns_filter_prefix";
const CONNECTION_LIMIT_PREFIX: &str = "envoy.connection_limit_prefix";
const TCP_PREFIX: &str = "envoy.tcp_prefix";
const UDP_PREFIX: &str = "envoy.udp_prefix";
const FAULT_DOWNSTREAM_CLUSTER: &str = "envoy.fault_downstream_cluster";
const DYNAMO_OPERATION: &str = "envoy.dynamo_operation";
const DYNAMO_TABLE: &str = "envoy.dynamo_table";
const DYNAMO_PARTITION_ID: &str = "envoy.dynamo_partition_id";
const GRPC_BRIDGE_SERVICE: &str = "envoy.grpc_bridge_service";
const GRPC_BRIDGE_METHOD: &str = "envoy.grpc_bridge_method";
const VIRTUAL_HOST: &str = "envoy.virtual_host";
const VIRTUAL_CLUSTER: &str = "envoy.virtual_cluster";
const RESPONSE_CODE: &str = "envoy.response_code";
const RESPONSE_CODE_CLASS: &str = "envoy.response_code_class";
const RDS_ROUTE_CONFIG: &str = "envoy.rds_route_config";
const SCOPED_RDS_CONFIG: &str = "envoy.scoped_rds_config";
const ROUTE: &str = "envoy.route";
const EXT_AUTHZ_PREFIX: &str = "envoy.ext_authz_prefix";
const WORKER_ID: &str = "envoy.worker_id";
const THRIFT_PREFIX: &str = "envoy.thrift_prefix";
const REDIS_PREFIX: &str = "envoy.redis_prefix";
const RBAC_PREFIX: &str = "envoy.rbac_prefix";
const RBAC_HTTP_PREFIX: &str = "envoy.rbac_http_prefix";
const RBAC_POLICY_NAME: &str = "envoy.rbac_policy_name";
const PROXY_PROTOCOL_PREFIX: &str = "envoy.proxy_protocol_prefix";
const PROXY_PROTOCOL_VERSION: &str = "envoy.proxy_protocol_version";
const GOOGLE_GRPC_CLIENT_PREFIX: &str = "envoy.google_grpc_client_prefix";
const TLS_CERTIFICATE: &str = "envoy.tls_certificate";
const XDS_RESOURCE_NAME: &str = "envoy.xds_resource_name";

/// Envoy's regex extractors, in its order: (tag name, regex with `<..>` placeholders, substr,
/// negative value).
const REGEX_DESCRIPTORS: &[(&str, &str, &str, &str)] = &[
    // *_rq(_<response_code>)
    (RESPONSE_CODE, r"_rq(_([0-9]{3}))$", "_rq_", ""),
    // *_rq_(<response_code_class>)xx
    (RESPONSE_CODE_CLASS, r"_rq_(([0-9]))xx$", "_rq_", ""),
    // http.[<stat_prefix>.]dynamodb.table.[<table>.]capacity.[<op>.](__partition_id=<id>)
    (
        DYNAMO_PARTITION_ID,
        r"^http\.<TAG_VALUE>\.dynamodb\.table\.<TAG_VALUE>\.capacity\.<TAG_VALUE>(\.__partition_id=([0-9A-Za-z_]{7}))$",
        ".dynamodb.table.",
        "",
    ),
    // http.[<stat_prefix>.]dynamodb.operation.(<operation_name>.)* or ...capacity.(<op>.)
    (
        DYNAMO_OPERATION,
        r"^http\.<TAG_VALUE>\.dynamodb.(?:operation|table\.<TAG_VALUE>\.capacity)(\.(<TAG_VALUE>))(?:\.|$)",
        ".dynamodb.",
        "",
    ),
    // http.[<stat_prefix>.]dynamodb.table.(<table_name>.)* or dynamodb.error.(<table_name>.)*
    (DYNAMO_TABLE, r"^http\.<TAG_VALUE>\.dynamodb.(?:table|error)\.((<TAG_VALUE>)\.)", ".dynamodb.", ""),
    // listener.[<address>.]ssl.ciphers.(<cipher>)
    (SSL_CIPHER, r"^listener\..*?\.ssl\.ciphers(\.(<CIPHER>))$", ".ssl.ciphers.", ""),
    // listener|cluster.[<name>.]ssl.curves.(<curve>)
    (SSL_CURVE, r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.curves(\.(<CIPHER>))$", ".ssl.curves.", ""),
    // listener|cluster.[<name>.]ssl.sigalgs.(<algorithm>)
    (SSL_SIGALG, r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.sigalgs(\.(<CIPHER>))$", ".ssl.sigalgs.", ""),
    // listener|cluster.[<name>.]ssl.versions.(<version>)
    (SSL_VERSION, r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.versions(\.(<TLS_VERSION>))$", ".ssl.versions.", ""),
    // cluster.[<cluster_name>.]ssl.ciphers.(<cipher>)
    (SSL_CIPHER_SUITE, r"^cluster\.<TAG_VALUE>\.ssl\.ciphers(\.(<CIPHER>))$", ".ssl.ciphers.", ""),
    // listener.[<address>.]http.(<stat_prefix>.)*
    (HTTP_CONN_MANAGER_PREFIX, r"^listener\..*?\.http\.((<TAG_VALUE>)\.)", ".http.", ""),
    // listener.<address|stat_prefix>.(worker_<id>.)*, listener_manager.(worker_<id>.)*, ...
    (
        WORKER_ID,
        r"^(?:listener\.(?:<ADDRESS>|<TAG_VALUE>)|server|listener_manager|thread_local_cluster_manager)\.worker_(([0-9]+)\.)",
        "",
        "",
    ),
    // listener.(<address|stat_prefix>.)*, but not "admin"
    (LISTENER_ADDRESS, r"^listener\.((<ADDRESS>|<TAG_VALUE>)\.)", "", "admin"),
    // http.[<stat_prefix>.]rds.(<route_config_name>.)<base_stat>
    (RDS_ROUTE_CONFIG, r"^http\.<TAG_VALUE>\.rds\.((<ROUTE_CONFIG_NAME>)\.)[0-9A-Za-z_]+?$", ".rds.", ""),
    // http.[<stat_prefix>.]scoped_rds.(<scoped_route_config_name>.)<base_stat>
    (
        SCOPED_RDS_CONFIG,
        r"^http\.<TAG_VALUE>\.scoped_rds\.((<SCOPED_ROUTE_CONFIG_NAME>)\.)[0-9A-Za-z_]+?$",
        ".scoped_rds.",
        "",
    ),
    // http.[<stat_prefix>.]rbac.[<prefix>.]policy.(<policy_name>.)(allowed|denied|...)
    (
        RBAC_POLICY_NAME,
        r"^http\.<TAG_VALUE>\.rbac\.(?:<TAG_VALUE>\.)?policy\.((<TAG_VALUE>)\.)(allowed|shadow_allowed|denied|shadow_denied)$",
        "",
        "",
    ),
    // http.<stat_prefix>.rbac.(<rules_stat_prefix>.)* but not policy
    (RBAC_HTTP_PREFIX, r"^http\.<TAG_VALUE>\.rbac\.((<TAG_VALUE>)\.).*?", "", "policy"),
    // proxy_proto.(<stat_prefix>.)**
    (PROXY_PROTOCOL_PREFIX, r"^proxy_proto\.((<TAG_VALUE>)\.).+$", "", "versions"),
    // proxy_proto.([<stat_prefix>.]versions.v(<version>).)(found|disallowed|error)
    (
        PROXY_PROTOCOL_VERSION,
        r"^proxy_proto\.((?:<TAG_VALUE>\.)?versions\.v(<PROXY_PROTOCOL_VERSION>)\.)[0-9A-Za-z_]+$",
        "",
        "",
    ),
    // listener|cluster.[<name>.]ssl.certificate.(<cert_name>).<metric_name>
    (
        TLS_CERTIFICATE,
        r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.certificate\.((<TAG_VALUE>)\.).*$",
        ".ssl.certificate",
        "",
    ),
    // sds.(<resource_name>.)**
    (XDS_RESOURCE_NAME, r"^sds\.((<TAG_VALUE>)\.).+", "", ""),
];

/// Envoy's token extractors, in its order: (tag name, pattern).
const TOKEN_DESCRIPTORS: &[(&str, &str)] = &[
    (MONGO_CALLSITE, "mongo.*.collection.*.callsite.$.query.**"),
    (MONGO_COLLECTION, "mongo.*.collection.$.**.query.*"),
    (MONGO_CMD, "mongo.*.cmd.$.**"),
    (GRPC_BRIDGE_METHOD, "cluster.*.grpc.*.$.**"),
    (HTTP_USER_AGENT, "http.*.user_agent.$.**"),
    (VIRTUAL_CLUSTER, "vhost.*.vcluster.$.**"),
    (FAULT_DOWNSTREAM_CLUSTER, "http.*.fault.$.**"),
    (GRPC_BRIDGE_SERVICE, "cluster.*.grpc.$.**"),
    (TCP_PREFIX, "tcp.$.**"),
    (UDP_PREFIX, "udp.$.**"),
    (CLIENTSSL_PREFIX, "auth.clientssl.$.**"),
    (RATELIMIT_PREFIX, "ratelimit.$.**"),
    (CLUSTER_NAME, "cluster.$.**"),
    (EXT_AUTHZ_PREFIX, "cluster.*.ext_authz.$.**"),
    (EXT_AUTHZ_PREFIX, "http.*.ext_authz.$.**"),
    (HTTP_CONN_MANAGER_PREFIX, "http.$.**"),
    (VIRTUAL_HOST, "vhost.$.**"),
    (MONGO_PREFIX, "mongo.$.**"),
    (ROUTE, "vhost.*.route.$.**"),
    (THRIFT_PREFIX, "thrift.$.**"),
    (REDIS_PREFIX, "redis.$.**"),
    (LOCAL_HTTP_RATELIMIT_PREFIX, "$.http_local_rate_limit.**"),
    (LOCAL_NETWORK_RATELIMIT_PREFIX, "local_rate_limit.$.**"),
    (LOCAL_LISTENER_RATELIMIT_PREFIX, "listener_local_ratelimit.$.**"),
    (DNS_FILTER_PREFIX, "dns_filter.$.**"),
    (CONNECTION_LIMIT_PREFIX, "connection_limit.$.**"),
    (RBAC_PREFIX, "$.rbac.**"),
    (GOOGLE_GRPC_CLIENT_PREFIX, "grpc.$.**"),
];

/// Envoy's `expandRegex` substitutions, with ASCII classes for `\d` and `\w`.
fn expand_regex(regex: &str) -> String {
    const SUBSTITUTIONS: &[(&str, &str)] = &[
        // IPv4 or bracketed IPv6 address, then `_port`.
        ("<ADDRESS>", r"(?:(?:[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|\[[a-fA-F_0-9]+\])_[0-9]+)"),
        ("<CIPHER>", r"[0-9A-Za-z_\-]+"),
        ("<TLS_VERSION>", r"TLSv[0-9]\.[0-9]"),
        ("<TAG_VALUE>", r"[^.]+"),
        ("<ROUTE_CONFIG_NAME>", r"[0-9A-Za-z_\-./]+"),
        ("<SCOPED_ROUTE_CONFIG_NAME>", r"[0-9A-Za-z_\-.]+"),
        ("<LISTENER_OR_CLUSTER_WITH_NAME>", r"(?:listener|cluster)\..*?"),
        ("<PROXY_PROTOCOL_VERSION>", r"[0-9]"),
    ];
    SUBSTITUTIONS.iter().fold(regex.to_string(), |acc, (from, to)| acc.replace(from, to))
}

/// Envoy's `extractRegexPrefix`: for `^word\.` (or `^word$`) the first token `word`, which
/// every matching name must start with; otherwise none.
fn regex_prefix(regex: &str) -> &str {
    let Some(rest) = regex.strip_prefix('^') else {
        return "";
    };
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
    let after = &rest[end..];
    if end > 0 && (after.starts_with(r"\.") || after.starts_with(r"(?=\.)") || after == "$") {
        &rest[..end]
    } else {
        ""
    }
}

enum Matcher {
    Regex { regex: Regex, substr: &'static str, negative: &'static str },
    Tokens { tokens: Vec<&'static str>, value_index: usize },
}

struct TagExtractor {
    name: &'static str,
    matcher: Matcher,
    /// Another extractor produces the same tag name; only the first match counts.
    shared_name: bool,
}

/// A tag found in a name: its value and the byte range to remove.
struct Found<'a> {
    value: &'a str,
    remove: (usize, usize),
}

impl TagExtractor {
    fn extract<'a>(&self, name: &'a str, tokens: &[&'a str]) -> Option<Found<'a>> {
        match &self.matcher {
            Matcher::Regex { regex, substr, negative } => {
                if !substr.is_empty() && !name.contains(substr) {
                    return None;
                }
                let captures = regex.captures(name)?;
                let remove = captures.get(1).filter(|m| !m.is_empty())?;
                let value = captures.get(2).filter(|m| !m.is_empty()).unwrap_or(remove).as_str();
                if !negative.is_empty() && value == *negative {
                    return None;
                }
                Some(Found { value, remove: (remove.start(), remove.end()) })
            }
            Matcher::Tokens { tokens: pattern, value_index } => {
                let (start, input_index) = search_tokens(pattern, *value_index, tokens, (0, 0, 0), None)?;
                let value = tokens.get(input_index)?;
                let mut start = start;
                let mut end = start + value.len();
                // Remove the dot after the value, or before it when the value is the last token.
                if input_index + 1 < tokens.len() {
                    end += 1;
                } else {
                    start = start.saturating_sub(1);
                }
                Some(Found { value, remove: (start, end) })
            }
        }
    }
}

/// Envoy's `TagExtractorTokensImpl::searchTags`: matches `input[input_index..]` against
/// `pattern[pattern_index..]`; on a match returns the byte offset and token index of the
/// input token matched by `$` (`found` carries it when `$` came before a `**`).
fn search_tokens(
    pattern: &[&str],
    value_index: usize,
    input: &[&str],
    (mut input_index, mut pattern_index, mut char_index): (usize, usize, usize),
    mut found: Option<(usize, usize)>,
) -> Option<(usize, usize)> {
    while let (Some(&token), Some(&expected)) = (input.get(input_index), pattern.get(pattern_index)) {
        if pattern_index == value_index {
            found = Some((char_index, input_index));
        } else if expected == "**" {
            if pattern_index + 1 == pattern.len() {
                return found;
            }
            // `**` in the middle matches zero or more tokens: the rest of the pattern must
            // match some suffix of the input.
            for (i, skipped) in input.iter().enumerate().skip(input_index) {
                let hit = search_tokens(pattern, value_index, input, (i, pattern_index + 1, char_index), found);
                if hit.is_some() {
                    return hit;
                }
                char_index += skipped.len() + 1;
            }
            return None;
        } else if expected != "*" && expected != token {
            return None;
        }
        char_index += token.len() + 1;
        input_index += 1;
        pattern_index += 1;
    }
    if pattern_index == pattern.len() && input_index == input.len() {
        found
    } else {
        None
    }
}

/// The set of extractors, keyed by the first token they require (Envoy's `TagProducerImpl`).
struct TagProducer {
    without_prefix: Vec<TagExtractor>,
    by_prefix: HashMap<&'static str, Vec<TagExtractor>>,
}

static DEFAULT_EXTRACTORS: LazyLock<TagProducer> = LazyLock::new(TagProducer::default_extractors);

impl TagProducer {
    fn default_extractors() -> TagProducer {
        let mut producer = TagProducer { without_prefix: Vec::new(), by_prefix: HashMap::new() };
        let shared = |name: &str| {
            REGEX_DESCRIPTORS.iter().filter(|d| d.0 == name).count()
                + TOKEN_DESCRIPTORS.iter().filter(|d| d.0 == name).count()
                > 1
        };
        for &(name, regex, substr, negative) in REGEX_DESCRIPTORS {
            let expanded = expand_regex(regex);
            let prefix = regex_prefix(&expanded).to_string();
            let regex = Regex::new(&expanded).expect("built-in tag extraction regexes compile");
            let extractor =
                TagExtractor { name, matcher: Matcher::Regex { regex, substr, negative }, shared_name: shared(name) };
            producer.add(prefix_static(&prefix), extractor);
        }
        for &(name, pattern) in TOKEN_DESCRIPTORS {
            let tokens: Vec<&'static str> = pattern.split('.').collect();
            let value_index = tokens.iter().position(|t| *t == "$").unwrap_or(usize::MAX);
            let prefix = match tokens.first() {
                Some(&first) if !matches!(first, "$" | "*" | "**") => first,
                _ => "",
            };
            let extractor =
                TagExtractor { name, matcher: Matcher::Tokens { tokens, value_index }, shared_name: shared(name) };
            producer.add(prefix, extractor);
        }
        producer
    }

    fn add(&mut self, prefix: &'static str, extractor: TagExtractor) {
        if prefix.is_empty() {
            self.without_prefix.push(extractor);
        } else {
            self.by_prefix.entry(prefix).or_default().push(extractor);
        }
    }

    fn produce(&self, name: &str) -> TagExtraction {
        let tokens: Vec<&str> = name.split('.').collect();
        let keyed = name
            .split_once('.')
            .and_then(|(first, _)| self.by_prefix.get(first))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut tags: Vec<Tag> = Vec::new();
        let mut removals: Vec<(usize, usize)> = Vec::new();
        for extractor in self.without_prefix.iter().chain(keyed) {
            if extractor.shared_name && tags.iter().any(|t| t.name == extractor.name) {
                continue;
            }
            if let Some(found) = extractor.extract(name, &tokens) {
                tags.push(Tag { name: extractor.name, value: found.value.to_string() });
                removals.push(found.remove);
            }
        }
        let extracted_name = name
            .char_indices()
            .filter(|(i, _)| !removals.iter().any(|&(start, end)| (start..end).contains(i)))
            .map(|(_, c)| c)
            .collect();
        TagExtraction { extracted_name, tags }
    }
}

/// The regex prefixes are the leading word of a `&'static str` regex, but `expand_regex`
/// allocates; map them back onto the static token set so extractors can share `&'static str`.
fn prefix_static(prefix: &str) -> &'static str {
    const KNOWN: &[&str] = &["http", "listener", "cluster", "proxy_proto", "sds"];
    KNOWN.iter().copied().find(|k| *k == prefix).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(name: &str) -> (String, Vec<(&'static str, String)>) {
        let t = extract_tags(name);
        (t.extracted_name, t.tags.into_iter().map(|t| (t.name, t.value)).collect())
    }

    #[test]
    fn every_regex_prefix_is_known() {
        for &(name, regex, _, _) in REGEX_DESCRIPTORS {
            let expanded = expand_regex(regex);
            let prefix = regex_prefix(&expanded);
            assert_eq!(prefix_static(prefix), prefix, "{name}: prefix {prefix:?} missing from KNOWN");
        }
    }

    #[test]
    fn regex_prefix_matches_envoy() {
        assert_eq!(regex_prefix(r"^cluster\.x"), "cluster");
        assert_eq!(regex_prefix(r"^(?:listener|cluster)\."), "");
        assert_eq!(regex_prefix(r"_rq_(\d)xx$"), "");
        assert_eq!(regex_prefix(r"^sds$"), "sds");
    }

    #[test]
    fn cluster_response_code_class() {
        assert_eq!(
            tags("cluster.x.upstream_rq_2xx"),
            (
                "cluster.upstream_rq_xx".to_string(),
                vec![(RESPONSE_CODE_CLASS, "2".to_string()), (CLUSTER_NAME, "x".to_string())]
            )
        );
    }

    #[test]
    fn cluster_response_code() {
        assert_eq!(
            tags("cluster.x.upstream_rq_200"),
            (
                "cluster.upstream_rq".to_string(),
                vec![(RESPONSE_CODE, "200".to_string()), (CLUSTER_NAME, "x".to_string())]
            )
        );
    }

    #[test]
    fn listener_address() {
        assert_eq!(
            tags("listener.0.0.0.0_10000.downstream_cx_total"),
            ("listener.downstream_cx_total".to_string(), vec![(LISTENER_ADDRESS, "0.0.0.0_10000".to_string())])
        );
        assert_eq!(
            tags("listener.[__1]_443.downstream_cx_total"),
            ("listener.downstream_cx_total".to_string(), vec![(LISTENER_ADDRESS, "[__1]_443".to_string())])
        );
        // Envoy never tags the admin listener.
        assert_eq!(
            tags("listener.admin.downstream_cx_total"),
            ("listener.admin.downstream_cx_total".to_string(), vec![])
        );
    }

    #[test]
    fn http_conn_manager() {
        assert_eq!(
            tags("http.ingress.downstream_rq_5xx"),
            (
                "http.downstream_rq_xx".to_string(),
                vec![(RESPONSE_CODE_CLASS, "5".to_string()), (HTTP_CONN_MANAGER_PREFIX, "ingress".to_string())]
            )
        );
        assert_eq!(
            tags("listener.0.0.0.0_80.http.ingress.downstream_rq_2xx"),
            (
                "listener.http.downstream_rq_xx".to_string(),
                vec![
                    (RESPONSE_CODE_CLASS, "2".to_string()),
                    (HTTP_CONN_MANAGER_PREFIX, "ingress".to_string()),
                    (LISTENER_ADDRESS, "0.0.0.0_80".to_string()),
                ]
            )
        );
    }

    #[test]
    fn tcp_prefix() {
        assert_eq!(
            tags("tcp.ingress_tcp.downstream_cx_total"),
            ("tcp.downstream_cx_total".to_string(), vec![(TCP_PREFIX, "ingress_tcp".to_string())])
        );
    }

    #[test]
    fn vhost_vcluster_and_route() {
        assert_eq!(
            tags("vhost.vh.vcluster.vc.upstream_rq_503"),
            (
                "vhost.vcluster.upstream_rq".to_string(),
                vec![
                    (RESPONSE_CODE, "503".to_string()),
                    (VIRTUAL_CLUSTER, "vc".to_string()),
                    (VIRTUAL_HOST, "vh".to_string()),
                ]
            )
        );
        assert_eq!(
            tags("vhost.vh.route.r1.upstream_rq_total"),
            (
                "vhost.route.upstream_rq_total".to_string(),
                vec![(VIRTUAL_HOST, "vh".to_string()), (ROUTE, "r1".to_string())]
            )
        );
    }

    #[test]
    fn worker_id_rds_and_ssl() {
        assert_eq!(
            tags("listener_manager.worker_3.dispatcher.loop_duration_us"),
            (
                // Envoy removes only the id: `envoy_listener_manager_worker_dispatcher_...`.
                "listener_manager.worker_dispatcher.loop_duration_us".to_string(),
                vec![(WORKER_ID, "3".to_string())]
            )
        );
        assert_eq!(
            tags("http.ingress.rds.local_route.config_reload"),
            (
                "http.rds.config_reload".to_string(),
                vec![(RDS_ROUTE_CONFIG, "local_route".to_string()), (HTTP_CONN_MANAGER_PREFIX, "ingress".to_string())]
            )
        );
        assert_eq!(
            tags("cluster.c.ssl.ciphers.ECDHE-RSA-AES128-GCM-SHA256"),
            (
                "cluster.ssl.ciphers".to_string(),
                vec![(SSL_CIPHER_SUITE, "ECDHE-RSA-AES128-GCM-SHA256".to_string()), (CLUSTER_NAME, "c".to_string())]
            )
        );
        assert_eq!(
            tags("http.hcm.fault.downstream_a.aborts_injected"),
            (
                "http.fault.aborts_injected".to_string(),
                vec![
                    (FAULT_DOWNSTREAM_CLUSTER, "downstream_a".to_string()),
                    (HTTP_CONN_MANAGER_PREFIX, "hcm".to_string())
                ]
            )
        );
    }

    #[test]
    fn names_without_tags_are_unchanged() {
        assert_eq!(tags("server.uptime"), ("server.uptime".to_string(), vec![]));
        assert_eq!(tags("cluster_manager.cluster_added"), ("cluster_manager.cluster_added".to_string(), vec![]));
        // `**` at the end needs at least one more token.
        assert_eq!(tags("tcp.x"), ("tcp.x".to_string(), vec![]));
    }

    #[test]
    fn mongo_middle_double_star() {
        assert_eq!(
            tags("mongo.m.collection.coll.query.total"),
            (
                "mongo.collection.query.total".to_string(),
                vec![(MONGO_COLLECTION, "coll".to_string()), (MONGO_PREFIX, "m".to_string())]
            )
        );
    }
}
