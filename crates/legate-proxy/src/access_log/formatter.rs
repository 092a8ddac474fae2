//! Access log formats: Envoy's substitution formatter ("Access logging" → "Format Rules",
//! "Format Strings", "Format Dictionaries", "Command Operators"; proto
//! `envoy.config.core.v3.SubstitutionFormatString`).
//!
//! A format string is parsed once, when config is applied, into literals and command operators
//! (`%COMMAND(SUBCOMMAND):LENGTH%`, `%%` for a literal percent). Formatting a stream only reads
//! its [`StreamInfo`] and appends bytes to a caller's buffer.
//!
//! - [`Formatter`]: a text format; a value that is not set prints `-` (nothing with
//!   `omit_empty_values`).
//! - [`JsonFormatter`]: a format dictionary, one JSON object per line. Typed as Envoy's
//!   `log_format.json_format` (and `typed_json_format`): a value that is exactly one operator
//!   keeps its type (numbers for durations, byte counts, codes, ports) and an unset one is `null`;
//!   the untyped variant (`FileAccessLog.json_format`, deprecated in Envoy) renders strings and
//!   `"-"`. Keys keep the configured order.
//! - [`LogFormat`]: either of them, what an access logger holds.
//!
//! The operators themselves, what each reads and its JSON type, are in `command_operators`.

use std::io::Write as _;

use legate_config::access_log::SubstitutionFormatString;
use serde_json::{Map, Value as JsonValue};

use super::command_operators::{write_json_string, Command, Value};
use crate::http::StreamInfo;

pub use super::command_operators::long_name;

/// Envoy's default access log format, byte for byte (`SubstitutionFormatUtils::DEFAULT_FORMAT`,
/// "Default Format String"), used when a logger has no format.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% \
%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% \
%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \
\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \
\"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// Envoy's default access log format string (see [`DEFAULT_FORMAT`]).
pub fn default_format() -> &'static str {
    DEFAULT_FORMAT
}

/// What an unset value prints in text and untyped JSON output.
pub(super) const UNSET: &str = "-";

// === LogFormat ===

/// The format of an access logger: text or a JSON dictionary.
#[derive(Debug)]
pub enum LogFormat {
    Text(Formatter),
    Json(JsonFormatter),
    /// A `text_format_source` that is not UTF-8, copied as it is.
    Bytes(bytes::Bytes),
}

impl LogFormat {
    /// A local reply's or a direct response's `body_format`: the format and the
    /// `content-type` it sets (its own, else text/plain or application/json by kind).
    pub fn body_format(format: &SubstitutionFormatString) -> Result<(LogFormat, http::HeaderValue), String> {
        let compiled = LogFormat::from_config(format)?;
        let content_type = if format.content_type.is_empty() {
            http::HeaderValue::from_static(match compiled {
                LogFormat::Json(_) => "application/json",
                _ => "text/plain",
            })
        } else {
            http::HeaderValue::from_str(&format.content_type).map_err(|_| "invalid content_type".to_string())?
        };
        Ok((compiled, content_type))
    }

    /// Builds a `SubstitutionFormatString` (access logs' `log_format`, local replies'
    /// `body_format`). Errors carry the path of the bad field relative to it, e.g.
    /// `text_format: Not supported field in StreamInfo: FOO`.
    pub fn from_config(format: &SubstitutionFormatString) -> Result<LogFormat, String> {
        let omit = format.omit_empty_values;
        if let Some(text) = &format.text_format {
            let formatter = Formatter::parse_with(text, omit);
            return formatter.map(LogFormat::Text).map_err(|e| format!("text_format: {e}"));
        }
        if let Some(fields) = &format.json_format {
            let mut formatter = JsonFormatter::new(fields, omit).map_err(|e| format!("json_format: {e}"))?;
            if format.json_format_options.as_ref().is_some_and(|o| o.sort_properties) {
                formatter = formatter.sort_properties();
            }
            return Ok(LogFormat::Json(formatter));
        }
        if let Some(source) = &format.text_format_source {
            let bytes = source.read().map_err(|e| format!("text_format_source: {e}"))?;
            // A binary body (Envoy Gateway serves images this way) is sent as it is: no
            // command operator can be told apart in bytes that are not text.
            let text = match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => return Ok(LogFormat::Bytes(bytes::Bytes::from(e.into_bytes()))),
            };
            let formatter = Formatter::parse_with(&text, omit);
            return formatter.map(LogFormat::Text).map_err(|e| format!("text_format_source: {e}"));
        }
        Err(": one of text_format, json_format or text_format_source is required".to_string())
    }

    /// Appends one formatted entry for `info` to `out` (text formats carry their own newline).
    pub fn format_into(&self, info: &StreamInfo, out: &mut Vec<u8>) {
        match self {
            LogFormat::Text(formatter) => formatter.format_into(info, out),
            LogFormat::Json(formatter) => formatter.format_into(info, out),
            LogFormat::Bytes(bytes) => out.extend_from_slice(bytes),
        }
    }

    /// One formatted entry as a string (tests, local replies).
    pub fn format(&self, info: &StreamInfo) -> String {
        let mut out = Vec::with_capacity(256);
        self.format_into(info, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for LogFormat {
    /// Envoy's default text format.
    fn default() -> Self {
        LogFormat::Text(Formatter::envoy_default())
    }
}

// === Formatter ===

/// A parsed text format string.
#[derive(Clone, Debug)]
pub struct Formatter {
    parts: Vec<Part>,
    omit_empty_values: bool,
}

#[derive(Clone, Debug)]
enum Part {
    Literal(String),
    Command(Command),
}

impl Formatter {
    /// Parses an Envoy format string; the error names the offending operator as Envoy does.
    pub fn parse(text: &str) -> Result<Formatter, String> {
        Formatter::parse_with(text, false)
    }

    /// Parses a format string; with `omit_empty_values` an unset value prints nothing instead of
    /// `-` (`SubstitutionFormatString.omit_empty_values`).
    pub fn parse_with(text: &str, omit_empty_values: bool) -> Result<Formatter, String> {
        Ok(Formatter { parts: parse_parts(text)?, omit_empty_values })
    }

    /// Envoy's default format ([`DEFAULT_FORMAT`]).
    pub fn envoy_default() -> Formatter {
        Formatter::parse(DEFAULT_FORMAT).expect("Envoy's default format parses")
    }

    /// Appends the formatted line to `out`.
    pub fn format_into(&self, info: &StreamInfo, out: &mut Vec<u8>) {
        let unset = if self.omit_empty_values { "" } else { UNSET };
        write_parts(&self.parts, info, unset, out);
    }

    /// The formatted line as a string.
    pub fn format(&self, info: &StreamInfo) -> String {
        let mut out = Vec::with_capacity(256);
        self.format_into(info, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn write_parts(parts: &[Part], info: &StreamInfo, unset: &str, out: &mut Vec<u8>) {
    for part in parts {
        match part {
            Part::Literal(text) => out.extend_from_slice(text.as_bytes()),
            Part::Command(command) => {
                if !command.evaluate(info).write_text(out) {
                    out.extend_from_slice(unset.as_bytes());
                }
            }
        }
    }
}

// === JsonFormatter ===

/// A parsed format dictionary, rendering one compact JSON object and a newline per entry.
#[derive(Clone, Debug)]
pub struct JsonFormatter {
    fields: Vec<(String, JsonNode)>,
    typed: bool,
    omit_empty_values: bool,
}

#[derive(Clone, Debug)]
enum JsonNode {
    /// A string value: a format string.
    Format(Vec<Part>),
    /// A number in the dictionary, copied as is.
    Number(serde_json::Number),
    Object(Vec<(String, JsonNode)>),
    List(Vec<JsonNode>),
}

/// What one format-string value renders to.
enum Leaf<'a> {
    Null,
    Value(Value<'a>),
    Text(Vec<u8>),
}

impl JsonFormatter {
    /// A typed dictionary (`SubstitutionFormatString.json_format`, `typed_json_format`).
    pub fn new(format: &Map<String, JsonValue>, omit_empty_values: bool) -> Result<Self, String> {
        Ok(JsonFormatter { fields: parse_object(format)?, typed: true, omit_empty_values })
    }

    /// An untyped dictionary (`FileAccessLog.json_format`): every value renders as a string,
    /// `"-"` when unset.
    pub fn untyped(format: &Map<String, JsonValue>) -> Result<Self, String> {
        Ok(JsonFormatter { fields: parse_object(format)?, typed: false, omit_empty_values: false })
    }

    /// Sorts the keys alphabetically, nested objects included
    /// (`json_format_options.sort_properties`); by default they keep the configured order.
    pub fn sort_properties(mut self) -> Self {
        fn sort(fields: &mut [(String, JsonNode)]) {
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, node) in fields.iter_mut() {
                sort_node(node);
            }
        }
        fn sort_node(node: &mut JsonNode) {
            match node {
                JsonNode::Object(fields) => sort(fields),
                JsonNode::List(items) => items.iter_mut().for_each(sort_node),
                JsonNode::Format(_) | JsonNode::Number(_) => {}
            }
        }
        sort(&mut self.fields);
        self
    }

    /// Appends the JSON object and a newline to `out`.
    pub fn format_into(&self, info: &StreamInfo, out: &mut Vec<u8>) {
        self.write_object(&self.fields, info, out);
        out.push(b'\n');
    }

    /// The formatted entry as a string.
    pub fn format(&self, info: &StreamInfo) -> String {
        let mut out = Vec::with_capacity(256);
        self.format_into(info, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn write_object(&self, fields: &[(String, JsonNode)], info: &StreamInfo, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (key, node) in fields {
            let leaf = match node {
                JsonNode::Format(parts) => Some(self.leaf(parts, info)),
                _ => None,
            };
            // Envoy drops only null values with omit_empty_values, never nested objects.
            if self.omit_empty_values && matches!(leaf, Some(Leaf::Null)) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_json_string(key, out);
            out.push(b':');
            match leaf {
                Some(leaf) => self.write_leaf(leaf, out),
                None => self.write_node(node, info, out),
            }
        }
        out.push(b'}');
    }

    fn write_node(&self, node: &JsonNode, info: &StreamInfo, out: &mut Vec<u8>) {
        match node {
            JsonNode::Format(parts) => {
                let leaf = self.leaf(parts, info);
                self.write_leaf(leaf, out);
            }
            JsonNode::Number(number) => {
                let _ = write!(out, "{number}");
            }
            JsonNode::Object(fields) => self.write_object(fields, info, out),
            JsonNode::List(items) => {
                out.push(b'[');
                let mut first = true;
                for item in items {
                    if let JsonNode::Format(parts) = item {
                        let leaf = self.leaf(parts, info);
                        if self.omit_empty_values && matches!(leaf, Leaf::Null) {
                            continue;
                        }
                        if !first {
                            out.push(b',');
                        }
                        self.write_leaf(leaf, out);
                    } else {
                        if !first {
                            out.push(b',');
                        }
                        self.write_node(item, info, out);
                    }
                    first = false;
                }
                out.push(b']');
            }
        }
    }

    /// Envoy's `StructFormatter::providersCallback`: one operator alone keeps its type (typed
    /// dictionaries), anything else is the text of all parts.
    fn leaf<'a>(&self, parts: &'a [Part], info: &'a StreamInfo) -> Leaf<'a> {
        if let [Part::Command(command)] = parts {
            let value = command.evaluate(info);
            return match (value, self.typed, self.omit_empty_values) {
                (Value::Unset, true, _) | (Value::Unset, false, true) => Leaf::Null,
                (Value::Unset, false, false) => Leaf::Text(UNSET.as_bytes().to_vec()),
                (value, true, _) => Leaf::Value(value),
                (value, false, _) => {
                    let mut text = Vec::new();
                    value.write_text(&mut text);
                    Leaf::Text(text)
                }
            };
        }
        let unset = if self.omit_empty_values { "" } else { UNSET };
        let mut text = Vec::new();
        write_parts(parts, info, unset, &mut text);
        Leaf::Text(text)
    }

    fn write_leaf(&self, leaf: Leaf<'_>, out: &mut Vec<u8>) {
        match leaf {
            Leaf::Null => out.extend_from_slice(b"null"),
            Leaf::Text(text) => write_json_string(&String::from_utf8_lossy(&text), out),
            Leaf::Value(value) => value.write_json(out),
        }
    }
}

fn parse_object(format: &Map<String, JsonValue>) -> Result<Vec<(String, JsonNode)>, String> {
    format.iter().map(|(key, value)| Ok((key.clone(), parse_node(value)?))).collect()
}

fn parse_node(value: &JsonValue) -> Result<JsonNode, String> {
    match value {
        JsonValue::String(text) => Ok(JsonNode::Format(parse_parts(text)?)),
        JsonValue::Number(number) => Ok(JsonNode::Number(number.clone())),
        JsonValue::Object(fields) => Ok(JsonNode::Object(parse_object(fields)?)),
        JsonValue::Array(items) => Ok(JsonNode::List(items.iter().map(parse_node).collect::<Result<_, _>>()?)),
        JsonValue::Bool(_) | JsonValue::Null => Err("Only string values, nested structs, list \
            values and number values are supported in structured access log format."
            .to_string()),
    }
}

// === Parsing ===

/// Splits a format string into literals and operators: Envoy's `SubstitutionFormatParser`,
/// whose command syntax is `%[A-Z0-9_]+(\([^)]*\))?(:[0-9]+)?%`.
fn parse_parts(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut pos = 0;
    while let Some(offset) = text.get(pos..).and_then(|rest| rest.find('%')) {
        literal.push_str(text.get(pos..pos + offset).unwrap_or_default());
        pos += offset;
        if text.get(pos + 1..).is_some_and(|rest| rest.starts_with('%')) {
            literal.push('%');
            pos += 2;
            continue;
        }
        let Some(token) = match_command(text, pos)? else {
            return Err(format!("Incorrect configuration: {text}. Couldn't find valid command at position {pos}"));
        };
        if !literal.is_empty() {
            parts.push(Part::Literal(std::mem::take(&mut literal)));
        }
        parts.push(Part::Command(Command::parse(token.command, token.subcommand, token.max_length)?));
        pos += token.len;
    }
    literal.push_str(text.get(pos..).unwrap_or_default());
    if !literal.is_empty() || parts.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

/// `%COMMAND(SUBCOMMAND):LENGTH%` as written.
struct CommandToken<'a> {
    /// Bytes from the opening `%` to the closing one, both included.
    len: usize,
    command: &'a str,
    subcommand: &'a str,
    max_length: Option<usize>,
}

/// Matches one operator starting at the `%` at `pos`; `None` when the text there is not one.
fn match_command(text: &str, pos: usize) -> Result<Option<CommandToken<'_>>, String> {
    let rest = text.get(pos + 1..).unwrap_or_default();
    let command_len = rest.bytes().take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_').count();
    if command_len == 0 {
        return Ok(None);
    }
    let command = rest.get(..command_len).unwrap_or_default();
    let mut i = command_len;
    let mut subcommand = "";
    if rest.get(i..).is_some_and(|r| r.starts_with('(')) {
        let Some(close) = rest.get(i + 1..).and_then(|r| r.find(')')) else {
            return Ok(None);
        };
        subcommand = rest.get(i + 1..i + 1 + close).unwrap_or_default();
        i += close + 2;
    }
    let mut max_length = None;
    if rest.get(i..).is_some_and(|r| r.starts_with(':')) {
        let digits = rest.get(i + 1..).unwrap_or_default().bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Ok(None);
        }
        let number = rest.get(i + 1..i + 1 + digits).unwrap_or_default();
        max_length = Some(number.parse::<usize>().map_err(|_| format!("Length must be an integer, given: {number}"))?);
        i += 1 + digits;
    }
    if !rest.get(i..).is_some_and(|r| r.starts_with('%')) {
        return Ok(None);
    }
    Ok(Some(CommandToken { len: i + 2, command, subcommand, max_length }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::command_operators::tests::{example_time, stream_info, text};
    use crate::http::ResponseFlag;
    use http::{HeaderValue, Version};
    use std::time::Duration;

    #[test]
    fn default_format_is_envoys_string() {
        assert_eq!(
            default_format(),
            "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" \
             %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
             %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \
             \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \
             \"%UPSTREAM_HOST%\"\n"
        );
    }

    /// Envoy's documented example line, except that Envoy prints the upstream host as
    /// `10.0.2.1:80` (the docs' `tcp://` prefix predates `Address::asString()`).
    #[test]
    fn default_format_line_for_a_typical_request() {
        let line = Formatter::envoy_default().format(&stream_info());
        assert_eq!(
            line,
            "[2016-04-15T20:17:00.310Z] \"POST /api/v1/locations HTTP/2\" 204 - 154 0 226 100 \
             \"10.0.35.28\" \"nsq2http\" \"cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2\" \"locations\" \
             \"10.0.2.1:80\"\n"
        );
    }

    #[test]
    fn default_format_line_for_a_bare_stream() {
        let mut info =
            StreamInfo::new(Version::HTTP_11, 1, "127.0.0.1:5000".parse().unwrap(), "127.0.0.1:10000".parse().unwrap());
        info.start_time = Some(example_time());
        info.end = Some(Duration::from_millis(3));
        info.set_flag(ResponseFlag::DownstreamConnectionTermination);
        assert_eq!(
            LogFormat::default().format(&info),
            "[2016-04-15T20:17:00.310Z] \"- - HTTP/1.1\" 0 DC 0 0 3 - \"-\" \"-\" \"-\" \"-\" \"-\"\n"
        );
    }

    #[test]
    fn literals_and_percent_escapes() {
        let info = stream_info();
        assert_eq!(text("", &info), "");
        assert_eq!(text("plain text", &info), "plain text");
        assert_eq!(text("100%% %RESPONSE_CODE%%%", &info), "100% 204%");
        assert_eq!(text("é%PROTOCOL%ü", &info), "éHTTP/2ü");
    }

    #[test]
    fn omit_empty_values_prints_nothing_for_unset() {
        let info = stream_info();
        let formatter = Formatter::parse_with("[%REQ(X-MISSING)%][%PROTOCOL%]", true).unwrap();
        assert_eq!(formatter.format(&info), "[][HTTP/2]");
    }

    #[test]
    fn parse_errors_name_the_operator_as_envoy() {
        let cases = [
            ("%FOO%", "Not supported field in StreamInfo: FOO"),
            ("%UPSTREAM_SERVICE_TIME%", "Not supported field in StreamInfo: UPSTREAM_SERVICE_TIME"),
            ("%PROTOCOL(X)%", "PROTOCOL does not take any parameters or length"),
            ("%BYTES_SENT:10%", "BYTES_SENT does not take any parameters or length"),
            ("%REQ%", "REQ requires parameters"),
            ("%START_TIME:10%", "START_TIME does not allow length to be specified."),
            ("%REQ(A?B?C)%", "More than 1 alternative header specified in token: A?B?C"),
            ("%REQ(A):99999999999999999999999%", "Length must be an integer, given: 99999999999999999999999"),
            ("%START_TIME(%n)%", "Invalid header configuration. Format string contains newline."),
            ("%COMMON_DURATION(A)%", "Invalid common duration configuration: A."),
            ("%COMMON_DURATION(A:B:s)%", "Invalid common duration precision: s."),
        ];
        for (format, error) in cases {
            assert_eq!(Formatter::parse(format).unwrap_err(), error, "{format}");
        }
        for format in ["abc %", "%protocol%", "%REQ(A%", "%REQ(A):x%", "% %"] {
            let error = Formatter::parse(format).unwrap_err();
            assert!(error.starts_with(&format!("Incorrect configuration: {format}.")), "{error}");
        }
        assert_eq!(
            Formatter::parse("a %REQ(A%").unwrap_err(),
            "Incorrect configuration: a %REQ(A%. Couldn't find valid command at position 2"
        );
        let error = Formatter::parse("%DOWNSTREAM_TLS_SESSION_ID%").unwrap_err();
        assert!(error.starts_with("Not supported field in StreamInfo: DOWNSTREAM_TLS_SESSION_ID"));
    }

    fn json(format: serde_json::Value, info: &StreamInfo) -> String {
        let serde_json::Value::Object(map) = format else { panic!("not an object") };
        JsonFormatter::new(&map, false).unwrap().format(info)
    }

    #[test]
    fn json_format_keeps_types_of_single_operators() {
        let info = stream_info();
        let line = json(
            serde_json::json!({
                "start_time": "%START_TIME%",
                "method": "%REQ(:METHOD)%",
                "code": "%RESPONSE_CODE%",
                "duration": "%DURATION%",
                "bytes": "%BYTES_RECEIVED%",
                "port": "%DOWNSTREAM_REMOTE_PORT%",
                "flags": "%RESPONSE_FLAGS%",
                "missing": "%REQ(X-MISSING)%",
                "no_tls_time": "%RESPONSE_TX_DURATION%.0",
                "text": "code=%RESPONSE_CODE% missing=%REQ(X-MISSING)%",
                "literal": "plain",
                "number": 42,
                "nested": {"cluster": "%UPSTREAM_CLUSTER%", "list": ["%PROTOCOL%", 1.5, "%ROUTE_NAME%"]},
            }),
            &info,
        );
        assert_eq!(
            line,
            "{\"start_time\":\"2016-04-15T20:17:00.310Z\",\"method\":\"POST\",\"code\":204,\
             \"duration\":226,\"bytes\":154,\"port\":51234,\"flags\":\"-\",\"missing\":null,\
             \"no_tls_time\":\"105.0\",\"text\":\"code=204 missing=-\",\"literal\":\"plain\",\
             \"number\":42,\"nested\":{\"cluster\":\"locations\",\"list\":[\"HTTP/2\",1.5,\
             \"locations_route\"]}}\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["code"], 204);
    }

    #[test]
    fn json_format_omit_empty_values_and_untyped() {
        let info = stream_info();
        let serde_json::Value::Object(map) = serde_json::json!({
            "code": "%RESPONSE_CODE%",
            "missing": "%REQ(X-MISSING)%",
            "mixed": "[%REQ(X-MISSING)%]",
            "list": ["%REQ(X-MISSING)%", "%PROTOCOL%"],
        }) else {
            unreachable!()
        };
        assert_eq!(
            JsonFormatter::new(&map, true).unwrap().format(&info),
            "{\"code\":204,\"mixed\":\"[]\",\"list\":[\"HTTP/2\"]}\n"
        );
        assert_eq!(
            JsonFormatter::untyped(&map).unwrap().format(&info),
            "{\"code\":\"204\",\"missing\":\"-\",\"mixed\":\"[-]\",\"list\":[\"-\",\"HTTP/2\"]}\n"
        );
    }

    fn log_format(json: serde_json::Value) -> Result<LogFormat, String> {
        let config: SubstitutionFormatString = serde_json::from_value(json).unwrap();
        LogFormat::from_config(&config)
    }

    #[test]
    fn built_from_substitution_format_string() {
        let info = stream_info();
        let text = log_format(serde_json::json!({
            "text_format": "%RESPONSE_CODE% %REQ(X-MISSING)%|\n", "omit_empty_values": true
        }));
        assert_eq!(text.unwrap().format(&info), "204 |\n");
        let source = log_format(serde_json::json!({
            "text_format_source": {"inline_string": "%PROTOCOL%\n"}
        }));
        assert_eq!(source.unwrap().format(&info), "HTTP/2\n");
        let sorted = log_format(serde_json::json!({
            "json_format": {"b": "%RESPONSE_CODE%", "a": {"z": 1, "y": "%PROTOCOL%"}},
            "json_format_options": {"sort_properties": true}
        }));
        assert_eq!(sorted.unwrap().format(&info), "{\"a\":{\"y\":\"HTTP/2\",\"z\":1},\"b\":204}\n");
        let as_written = log_format(serde_json::json!({"json_format": {"b": 1, "a": 2}}));
        assert_eq!(as_written.unwrap().format(&info), "{\"b\":1,\"a\":2}\n");
        assert_eq!(
            log_format(serde_json::json!({"text_format": "%NOPE%"})).unwrap_err(),
            "text_format: Not supported field in StreamInfo: NOPE"
        );
        assert_eq!(
            log_format(serde_json::json!({"omit_empty_values": true})).unwrap_err(),
            ": one of text_format, json_format or text_format_source is required"
        );
    }

    #[test]
    fn json_format_escapes_and_rejects_booleans() {
        let mut info = stream_info();
        info.request.as_mut().unwrap().headers.insert("user-agent", HeaderValue::from_static("quote\" back\\slash"));
        assert_eq!(
            json(serde_json::json!({"ua": "%REQ(USER-AGENT)%"}), &info),
            "{\"ua\":\"quote\\\" back\\\\slash\"}\n"
        );
        let serde_json::Value::Object(map) = serde_json::json!({"field": true}) else { unreachable!() };
        assert_eq!(
            JsonFormatter::new(&map, false).unwrap_err(),
            "Only string values, nested structs, list values and number values are supported in \
             structured access log format."
        );
        let serde_json::Value::Object(map) = serde_json::json!({"f": "%BAD%"}) else { unreachable!() };
        assert_eq!(JsonFormatter::new(&map, false).unwrap_err(), "Not supported field in StreamInfo: BAD");
    }
}
