//! `envoy.extensions.filters.http.buffer.v3` (`envoy.filters.http.buffer`): buffers the whole
//! request before passing it on, and answers 413 when it grows past `max_request_bytes`.

use serde::Deserialize;

use crate::validate::Validator;

/// `Buffer`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Buffer {
    /// Required, above 0.
    pub max_request_bytes: Option<u32>,
}

impl Buffer {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        match self.max_request_bytes {
            None => v.error(&format!("{at}.max_request_bytes"), "value is required"),
            Some(0) => v.error(&format!("{at}.max_request_bytes"), "value must be greater than 0"),
            Some(_) => {}
        }
    }
}

/// `BufferPerRoute`: exactly one of `disabled` (which must be true) or `buffer`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BufferPerRoute {
    pub disabled: Option<bool>,
    /// Replaces the filter's config for this route.
    pub buffer: Option<Buffer>,
}

impl BufferPerRoute {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        v.oneof(at, &[("disabled", self.disabled.is_some()), ("buffer", self.buffer.is_some())], true);
        if self.disabled == Some(false) {
            v.error(&format!("{at}.disabled"), "value must equal true");
        }
        if let Some(buffer) = &self.buffer {
            buffer.validate(&format!("{at}.buffer"), v);
        }
    }
}
