//! `envoy.config.accesslog.v3`: access logs with their filters, and the file and stream
//! access loggers (`envoy.extensions.access_loggers.{file,stream}.v3`) legate implements.
//!
//! The log line format is Envoy's `SubstitutionFormatString` (`%START_TIME%`, `%RESPONSE_CODE%`,
//! ...); when absent, Envoy's default format. `json_format` values are user data: their keys are
//! not converted from lowerCamelCase (see `normalize`).

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::core::{DataSource, RuntimeUInt32};
use crate::extensions::{resolve, Empty, ACCESS_LOGGERS};
use crate::path;
use crate::route::HeaderMatcher;
use crate::unsupported::Unsupported;
use crate::validate::Validator;

pub use crate::extensions::AccessLoggerConfig;

/// `envoy.config.accesslog.v3.AccessLog`: a logger and the filter deciding what it logs.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessLog {
    pub name: String,
    /// Absent: every request is logged.
    pub filter: Option<AccessLogFilter>,
    pub config: AccessLoggerConfig,
}

impl<'de> Deserialize<'de> for AccessLog {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            name: String,
            filter: Option<AccessLogFilter>,
            typed_config: Option<Value>,
        }
        let raw = Raw::deserialize(d)?;
        let config = resolve(ACCESS_LOGGERS, "access logger", &raw.name, raw.typed_config)
            .map_err(|e| path::nest::<D::Error>("", e))?;
        Ok(AccessLog { name: raw.name, filter: raw.filter, config })
    }
}

impl AccessLog {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        if let Some(filter) = &self.filter {
            filter.validate(&format!("{at}.filter"), v);
        }
        let typed_at = format!("{at}.typed_config");
        match &self.config {
            AccessLoggerConfig::File(file) => file.validate(&typed_at, v),
            AccessLoggerConfig::Stdout(StreamAccessLog { log_format })
            | AccessLoggerConfig::Stderr(StreamAccessLog { log_format }) => {
                if let Some(format) = log_format {
                    format.validate(&format!("{typed_at}.log_format"), v);
                }
            }
        }
    }
}

/// `envoy.extensions.access_loggers.file.v3.FileAccessLog` (`envoy.access_loggers.file`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileAccessLog {
    /// Required; `/dev/stdout` and `/dev/stderr` work as anywhere.
    #[serde(default)]
    pub path: String,
    /// Deprecated for `log_format.text_format_source`.
    pub format: Option<String>,
    /// Deprecated for `log_format.json_format`.
    pub json_format: Option<Map<String, Value>>,
    /// Deprecated for `log_format.json_format`.
    pub typed_json_format: Option<Map<String, Value>>,
    pub log_format: Option<SubstitutionFormatString>,
}

impl FileAccessLog {
    fn validate(&self, at: &str, v: &mut Validator) {
        v.non_empty(&format!("{at}.path"), &self.path);
        v.oneof(
            at,
            &[
                ("format", self.format.is_some()),
                ("json_format", self.json_format.is_some()),
                ("typed_json_format", self.typed_json_format.is_some()),
                ("log_format", self.log_format.is_some()),
            ],
            false,
        );
        if let Some(format) = &self.log_format {
            format.validate(&format!("{at}.log_format"), v);
        }
    }
}

/// `envoy.extensions.access_loggers.stream.v3.StdoutAccessLog` and `StderrAccessLog`
/// (`envoy.access_loggers.stdout`, `envoy.access_loggers.stderr`): the same single field.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamAccessLog {
    pub log_format: Option<SubstitutionFormatString>,
}

pub type StdoutAccessLog = StreamAccessLog;
pub type StderrAccessLog = StreamAccessLog;

/// `envoy.config.core.v3.SubstitutionFormatString`: exactly one of `text_format`,
/// `json_format`, `text_format_source`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubstitutionFormatString {
    /// Deprecated for `text_format_source`, still the common spelling.
    pub text_format: Option<String>,
    /// Keys as given; values are format strings, numbers, booleans or nested objects.
    pub json_format: Option<Map<String, Value>>,
    pub text_format_source: Option<DataSource>,
    /// Leave out fields whose value is empty (`-` in text).
    #[serde(default)]
    pub omit_empty_values: bool,
    /// `content-type` of local replies using this format (default text/plain or
    /// application/json).
    #[serde(default)]
    pub content_type: String,
    pub formatters: Option<Unsupported>,
    pub json_format_options: Option<JsonFormatOptions>,
}

impl SubstitutionFormatString {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        v.oneof(
            at,
            &[
                ("text_format", self.text_format.is_some()),
                ("json_format", self.json_format.is_some()),
                ("text_format_source", self.text_format_source.is_some()),
            ],
            true,
        );
        if let Some(Err(e)) = self.text_format_source.as_ref().map(DataSource::read) {
            v.error(&format!("{at}.text_format_source"), e);
        }
    }
}

/// `envoy.config.core.v3.JsonFormatOptions`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JsonFormatOptions {
    /// Sort keys alphabetically (default: as written).
    #[serde(default)]
    pub sort_properties: bool,
}

/// `envoy.config.accesslog.v3.AccessLogFilter`: exactly one kind of filter.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFilter {
    pub status_code_filter: Option<StatusCodeFilter>,
    /// Compares the request duration in milliseconds.
    pub duration_filter: Option<DurationFilter>,
    /// Drops requests the health check filter marked as health checks.
    pub not_health_check_filter: Option<Empty>,
    pub traceable_filter: Option<Unsupported>,
    pub runtime_filter: Option<RuntimeFilter>,
    pub and_filter: Option<AndFilter>,
    pub or_filter: Option<OrFilter>,
    pub header_filter: Option<HeaderFilter>,
    pub response_flag_filter: Option<ResponseFlagFilter>,
    pub grpc_status_filter: Option<Unsupported>,
    pub extension_filter: Option<Unsupported>,
    pub metadata_filter: Option<Unsupported>,
    pub log_type_filter: Option<Unsupported>,
}

impl AccessLogFilter {
    fn validate(&self, at: &str, v: &mut Validator) {
        v.oneof(
            at,
            &[
                ("status_code_filter", self.status_code_filter.is_some()),
                ("duration_filter", self.duration_filter.is_some()),
                ("not_health_check_filter", self.not_health_check_filter.is_some()),
                ("runtime_filter", self.runtime_filter.is_some()),
                ("and_filter", self.and_filter.is_some()),
                ("or_filter", self.or_filter.is_some()),
                ("header_filter", self.header_filter.is_some()),
                ("response_flag_filter", self.response_flag_filter.is_some()),
            ],
            true,
        );
        if let Some(f) = &self.runtime_filter {
            v.non_empty(&format!("{at}.runtime_filter.runtime_key"), &f.runtime_key);
        }
        for (field, comparison) in [
            ("status_code_filter", self.status_code_filter.as_ref().map(|f| &f.comparison)),
            ("duration_filter", self.duration_filter.as_ref().map(|f| &f.comparison)),
        ] {
            if let Some(c) = comparison {
                v.non_empty(&format!("{at}.{field}.comparison.value.runtime_key"), &c.value.runtime_key);
            }
        }
        for (field, filters) in [
            ("and_filter", self.and_filter.as_ref().map(|f| &f.filters)),
            ("or_filter", self.or_filter.as_ref().map(|f| &f.filters)),
        ] {
            let Some(filters) = filters else { continue };
            if filters.len() < 2 {
                v.error(&format!("{at}.{field}.filters"), "value must contain at least 2 item(s)");
            }
            for (i, f) in filters.iter().enumerate() {
                f.validate(&format!("{at}.{field}.filters[{i}]"), v);
            }
        }
        if let Some(h) = &self.header_filter {
            h.header.validate(&format!("{at}.header_filter.header"), v);
        }
        if let Some(r) = &self.response_flag_filter {
            for (i, flag) in r.flags.iter().enumerate() {
                if !RESPONSE_FLAGS.contains(&flag.as_str()) {
                    v.error(
                        &format!("{at}.response_flag_filter.flags[{i}]"),
                        format!("unknown response flag '{flag}' (Envoy's are: {})", RESPONSE_FLAGS.join(" ")),
                    );
                }
            }
        }
    }
}

/// The short response flags `ResponseFlagFilter.flags` accepts (the proto's `in` list).
pub const RESPONSE_FLAGS: &[&str] = &[
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX", "SI", "IH",
    "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR", "UDO",
];

/// `StatusCodeFilter`: compares the response status.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeFilter {
    pub comparison: ComparisonFilter,
}

/// `DurationFilter`: compares the request duration, in milliseconds.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DurationFilter {
    pub comparison: ComparisonFilter,
}

/// `ComparisonFilter`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ComparisonFilter {
    #[serde(default)]
    pub op: Op,
    /// The runtime's value for `runtime_key`, else `default_value`, is compared against.
    pub value: RuntimeUInt32,
}

impl ComparisonFilter {
    pub fn matches(&self, actual: u64) -> bool {
        let expected = u64::from(self.value.default_value);
        match self.op {
            Op::Eq => actual == expected,
            Op::Ge => actual >= expected,
            Op::Le => actual <= expected,
        }
    }
}

/// `RuntimeFilter`: a sample of the streams, the runtime's numerator for `runtime_key` (else
/// `percent_sampled`'s) over `percent_sampled`'s denominator.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFilter {
    #[serde(default)]
    pub runtime_key: String,
    /// Absent: 0 out of 100.
    pub percent_sampled: Option<crate::core::FractionalPercent>,
    /// Draw a random number rather than use the request id's.
    #[serde(default)]
    pub use_independent_randomness: bool,
}

/// `ComparisonFilter.Op`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum Op {
    #[default]
    #[serde(rename = "EQ")]
    Eq,
    #[serde(rename = "GE")]
    Ge,
    #[serde(rename = "LE")]
    Le,
}

/// `AndFilter`: at least two filters, all must pass.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AndFilter {
    #[serde(default)]
    pub filters: Vec<AccessLogFilter>,
}

/// `OrFilter`: at least two filters, one must pass.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrFilter {
    #[serde(default)]
    pub filters: Vec<AccessLogFilter>,
}

/// `HeaderFilter`: the request header matches.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderFilter {
    pub header: HeaderMatcher,
}

/// `ResponseFlagFilter`: the response has one of these flags (empty: any flag).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResponseFlagFilter {
    #[serde(default)]
    pub flags: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log(v: Value) -> AccessLog {
        path::from_value(v).unwrap()
    }

    fn errors(log: &AccessLog) -> Vec<String> {
        let mut v = Validator::default();
        log.validate("access_log[0]", &mut v);
        v.errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn stdout_by_name_and_by_type() {
        assert!(matches!(log(json!({"name": "envoy.access_loggers.stdout"})).config, AccessLoggerConfig::Stdout(_)));
        let l = log(json!({"name": "x", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
            "log_format": {"text_format_source": {"inline_string": "%RESPONSE_CODE%\n"}}}}));
        assert!(matches!(l.config, AccessLoggerConfig::Stderr(_)));
        assert!(errors(&l).is_empty());
    }

    #[test]
    fn file_log_with_json_format_and_filter() {
        let l = log(json!({
            "name": "envoy.access_loggers.file",
            "filter": {"and_filter": {"filters": [
                {"status_code_filter": {"comparison": {"op": "GE", "value": {"default_value": 500, "runtime_key": "k"}}}},
                {"not_health_check_filter": {}}
            ]}},
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": "/dev/stdout", "log_format": {"json_format": {"start": "%START_TIME%", "code": "%RESPONSE_CODE%"}}}
        }));
        assert!(errors(&l).is_empty(), "{:?}", errors(&l));
        let and = l.filter.as_ref().unwrap().and_filter.as_ref().unwrap();
        assert!(and.filters[0].status_code_filter.as_ref().unwrap().comparison.matches(503));
        let AccessLoggerConfig::File(file) = &l.config else { panic!() };
        assert_eq!(file.path, "/dev/stdout");
    }

    #[test]
    fn bad_response_flag_and_missing_path_are_named() {
        let l = log(json!({"name": "envoy.access_loggers.file",
            "filter": {"response_flag_filter": {"flags": ["UH", "XX"]}}}));
        let e = errors(&l);
        assert!(
            e.iter().any(
                |e| e.starts_with("access_log[0].filter.response_flag_filter.flags[1]: unknown response flag 'XX'")
            ),
            "{e:?}"
        );
        assert!(
            e.iter().any(|e| e == "access_log[0].typed_config.path: value length must be at least 1 characters"),
            "{e:?}"
        );
    }

    #[test]
    fn format_needs_exactly_one_kind() {
        let l = log(json!({"name": "envoy.access_loggers.stdout", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"omit_empty_values": true}}}));
        assert_eq!(
            errors(&l),
            ["access_log[0].typed_config.log_format: one of text_format, json_format or text_format_source is required"]
        );
    }

    #[test]
    fn unknown_logger_is_refused() {
        let err = path::from_value::<AccessLog>(json!({"name": "envoy.access_loggers.open_telemetry",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig"}}))
        .unwrap_err();
        assert_eq!(err.path, "typed_config");
        assert!(err.message.contains("legate does not implement this access logger"), "{}", err.message);
    }
}
