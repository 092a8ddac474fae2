//! `envoy.type.matcher.v3`: string and regex matchers, shared by routes, CORS, health checks
//! and access log filters; and `envoy.type.v3.Int64Range`, used by header range matches.
//!
//! Regexes are compiled when the config is read, so a bad pattern fails the load with its
//! path. Envoy's engine is RE2 and legate's the `regex` crate: both are linear-time and share
//! the RE2 syntax; patterns RE2 accepts and `regex` does not (none known in practice) fail the
//! load rather than match differently.

use serde::de::Deserializer;
use serde::Deserialize;

use crate::unsupported::Unsupported;

/// A compiled regex that compares by its pattern, so config types stay `PartialEq`.
#[derive(Clone, Debug)]
struct Compiled(regex::Regex);

impl PartialEq for Compiled {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// `envoy.type.matcher.v3.RegexMatcher`.
#[derive(Clone, Debug, PartialEq)]
pub struct RegexMatcher {
    /// Deprecated and empty in Envoy (RE2 is the only engine); accepted and ignored.
    pub google_re2: Option<serde_json::Value>,
    pub regex: String,
    /// `^(?:regex)$`: Envoy's matchers require the whole value to match.
    full: Compiled,
    /// The pattern as written, for substitutions (`regex_rewrite`), which replace every match.
    unanchored: Compiled,
}

impl RegexMatcher {
    /// Compiles `pattern`; the error is the message for the `regex` field.
    pub fn new(pattern: &str) -> Result<Self, String> {
        let compile =
            |p: &str| regex::Regex::new(p).map(Compiled).map_err(|e| format!("invalid regex '{pattern}': {e}"));
        if pattern.is_empty() {
            return Err("value length must be at least 1 characters".into());
        }
        Ok(RegexMatcher {
            google_re2: None,
            regex: pattern.to_string(),
            full: compile(&format!("^(?:{pattern})$"))?,
            unanchored: compile(pattern)?,
        })
    }

    /// True when the whole of `s` matches, as RE2's `FullMatch` in Envoy.
    pub fn is_match(&self, s: &str) -> bool {
        self.full.0.is_match(s)
    }

    /// The pattern compiled as written (not anchored), for `replace_all` in rewrites.
    pub fn regex(&self) -> &regex::Regex {
        &self.unanchored.0
    }
}

impl<'de> Deserialize<'de> for RegexMatcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            google_re2: Option<serde_json::Value>,
            #[serde(default)]
            regex: String,
        }
        let raw = Raw::deserialize(d)?;
        let mut matcher =
            RegexMatcher::new(&raw.regex).map_err(|e| crate::extensions::invalid::<D::Error>("regex", e))?;
        matcher.google_re2 = raw.google_re2;
        Ok(matcher)
    }
}

/// `envoy.type.matcher.v3.RegexMatchAndSubstitute`: replaces every match of `pattern` (RE2's
/// `GlobalReplace`); `\1`-style group references in `substitution` are Envoy's syntax.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegexMatchAndSubstitute {
    pub pattern: RegexMatcher,
    #[serde(default)]
    pub substitution: String,
}

impl RegexMatchAndSubstitute {
    /// Applies the substitution to every non-overlapping match.
    pub fn replace_all(&self, s: &str) -> String {
        // RE2 writes group references as `\1`; the regex crate as `${1}`.
        let mut replacement = String::with_capacity(self.substitution.len());
        let mut chars = self.substitution.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek()) {
                ('\\', Some(d)) if d.is_ascii_digit() => {
                    replacement.push_str(&format!("${{{d}}}"));
                    chars.next();
                }
                ('\\', Some('\\')) => {
                    replacement.push('\\');
                    chars.next();
                }
                ('$', _) => replacement.push_str("$$"),
                _ => replacement.push(c),
            }
        }
        self.pattern.regex().replace_all(s, replacement.as_str()).into_owned()
    }
}

/// `envoy.type.matcher.v3.StringMatcher`: exactly one of the match fields is set.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StringMatcher {
    pub exact: Option<String>,
    /// At least one character.
    pub prefix: Option<String>,
    /// At least one character.
    pub suffix: Option<String>,
    pub safe_regex: Option<RegexMatcher>,
    /// At least one character.
    pub contains: Option<String>,
    pub custom: Option<Unsupported>,
    /// ASCII case-insensitive comparison; refused with `safe_regex` (use `(?i)`), as Envoy.
    #[serde(default)]
    pub ignore_case: bool,
}

impl StringMatcher {
    pub fn matches(&self, s: &str) -> bool {
        let fold = |v: &str| if self.ignore_case { v.to_ascii_lowercase() } else { v.to_string() };
        if let Some(exact) = &self.exact {
            return if self.ignore_case { s.eq_ignore_ascii_case(exact) } else { s == exact };
        }
        if let Some(prefix) = &self.prefix {
            return fold(s).starts_with(&fold(prefix));
        }
        if let Some(suffix) = &self.suffix {
            return fold(s).ends_with(&fold(suffix));
        }
        if let Some(contains) = &self.contains {
            return fold(s).contains(&fold(contains));
        }
        if let Some(regex) = &self.safe_regex {
            return regex.is_match(s);
        }
        false
    }

    pub(crate) fn validate(&self, at: &str, v: &mut crate::validate::Validator) {
        v.oneof(
            at,
            &[
                ("exact", self.exact.is_some()),
                ("prefix", self.prefix.is_some()),
                ("suffix", self.suffix.is_some()),
                ("safe_regex", self.safe_regex.is_some()),
                ("contains", self.contains.is_some()),
            ],
            true,
        );
        for (field, value) in [("prefix", &self.prefix), ("suffix", &self.suffix), ("contains", &self.contains)] {
            if value.as_deref() == Some("") {
                v.error(&format!("{at}.{field}"), "value length must be at least 1 characters");
            }
        }
        if self.ignore_case && self.safe_regex.is_some() {
            v.error(&format!("{at}.ignore_case"), "ignore_case has no effect for safe_regex.");
        }
    }
}

/// `envoy.type.v3.Int64Range`: `[start, end)`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Int64Range {
    #[serde(default, deserialize_with = "crate::core::deserialize_int64")]
    pub start: i64,
    #[serde(default, deserialize_with = "crate::core::deserialize_int64")]
    pub end: i64,
}

impl Int64Range {
    pub fn contains(&self, value: i64) -> bool {
        value >= self.start && value < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path;
    use serde_json::json;

    fn matcher(v: serde_json::Value) -> StringMatcher {
        path::from_value(v).unwrap()
    }

    #[test]
    fn regex_matches_the_whole_value() {
        let m: RegexMatcher = path::from_value(json!({"google_re2": {}, "regex": "/api/v[0-9]+"})).unwrap();
        assert!(m.is_match("/api/v12"));
        assert!(!m.is_match("/api/v12/users"), "a partial match is not a match");
        assert!(!m.is_match("x/api/v1"));
        assert!(m.regex().is_match("x/api/v1/y"), "the substitution regex is not anchored");
    }

    #[test]
    fn alternation_is_anchored_as_a_whole() {
        let m = RegexMatcher::new("a|b").unwrap();
        assert!(m.is_match("a") && m.is_match("b"));
        assert!(!m.is_match("ab") && !m.is_match("xb"));
    }

    #[test]
    fn bad_regex_names_the_field() {
        let err = path::from_value::<StringMatcher>(json!({"safe_regex": {"regex": "(unclosed"}})).unwrap_err();
        assert_eq!(err.path, "safe_regex.regex");
        assert!(err.message.starts_with("invalid regex '(unclosed'"), "{}", err.message);
    }

    #[test]
    fn string_matcher_kinds_and_case() {
        assert!(matcher(json!({"exact": "GET"})).matches("GET"));
        assert!(!matcher(json!({"exact": "GET"})).matches("get"));
        assert!(matcher(json!({"exact": "GET", "ignore_case": true})).matches("get"));
        assert!(matcher(json!({"prefix": "/a"})).matches("/abc"));
        assert!(matcher(json!({"suffix": ".JS", "ignore_case": true})).matches("/app.js"));
        assert!(matcher(json!({"contains": "oo"})).matches("foobar"));
        assert!(
            matcher(json!({"safe_regex": {"regex": "https://.*\\.example\\.com"}})).matches("https://a.example.com")
        );
        assert!(!matcher(json!({})).matches("anything"));
    }

    #[test]
    fn substitution_uses_envoy_group_syntax() {
        let s: RegexMatchAndSubstitute = path::from_value(json!({
            "pattern": {"regex": "^/service/([^/]+)(/.*)$"}, "substitution": "\\2/instance/\\1"
        }))
        .unwrap();
        assert_eq!(s.replace_all("/service/foo/v1/api"), "/v1/api/instance/foo");
        let s: RegexMatchAndSubstitute =
            path::from_value(json!({"pattern": {"regex": "one"}, "substitution": "two"})).unwrap();
        assert_eq!(s.replace_all("/xxx/one/yyy/one/zzz"), "/xxx/two/yyy/two/zzz");
    }

    #[test]
    fn int64_range_accepts_strings_and_is_half_open() {
        let r: Int64Range = path::from_value(json!({"start": "-10", "end": 0})).unwrap();
        assert!(r.contains(-1) && r.contains(-10) && !r.contains(0));
    }
}
