//! The request rate limit of a gRPC xDS stream (`api_config_source.rate_limit_settings`,
//! Envoy's `TokenBucketImpl`): a bucket of `max_tokens` (default 100) refilled at `fill_rate`
//! tokens a second (default 10); a request takes one token, and waits when there is none.

use std::time::Duration;

use tokio::time::Instant;

/// `envoy.config.core.v3.RateLimitSettings`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RateLimitSettings {
    pub(crate) max_tokens: u32,
    pub(crate) fill_rate: f64,
}

impl RateLimitSettings {
    const DEFAULT_MAX_TOKENS: u32 = 100;
    const DEFAULT_FILL_RATE: f64 = 10.0;

    /// Reads `rate_limit_settings` (kept as JSON by the config model; wrappers may come as
    /// plain numbers or `{value: …}`).
    pub(crate) fn from_config(value: &serde_json::Value) -> Result<Self, String> {
        let field = |name: &str| {
            let v = value.get(name)?;
            v.get("value").unwrap_or(v).as_f64()
        };
        let max_tokens = match field("max_tokens") {
            None => Self::DEFAULT_MAX_TOKENS,
            Some(n) if n >= 1.0 && n <= f64::from(u32::MAX) && n.fract() == 0.0 => n as u32,
            Some(n) => return Err(format!("rate_limit_settings.max_tokens: must be a positive integer, not {n}")),
        };
        let fill_rate = match field("fill_rate") {
            None => Self::DEFAULT_FILL_RATE,
            Some(r) if r > 0.0 && r.is_finite() => r,
            Some(r) => return Err(format!("rate_limit_settings.fill_rate: must be greater than 0, not {r}")),
        };
        Ok(RateLimitSettings { max_tokens, fill_rate })
    }
}

pub(crate) struct TokenBucket {
    settings: RateLimitSettings,
    tokens: f64,
    last_fill: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(settings: RateLimitSettings, now: Instant) -> Self {
        TokenBucket { settings, tokens: f64::from(settings.max_tokens), last_fill: now }
    }

    /// Takes a token if there is one.
    pub(crate) fn consume(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be there.
    pub(crate) fn next_token_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        let missing = (1.0 - self.tokens).max(0.0);
        now + Duration::from_secs_f64(missing / self.settings.fill_rate)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_fill).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.settings.fill_rate).min(f64::from(self.settings.max_tokens));
        self.last_fill = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bucket_empties_then_refills_at_the_fill_rate() {
        let now = Instant::now();
        let settings = RateLimitSettings { max_tokens: 2, fill_rate: 4.0 };
        let mut bucket = TokenBucket::new(settings, now);
        assert!(bucket.consume(now));
        assert!(bucket.consume(now));
        assert!(!bucket.consume(now));
        assert_eq!(bucket.next_token_at(now), now + Duration::from_millis(250));
        assert!(bucket.consume(now + Duration::from_millis(250)));
        // Never more than max_tokens, however long it waited.
        let later = now + Duration::from_secs(60);
        assert!(bucket.consume(later) && bucket.consume(later) && !bucket.consume(later));
    }

    #[test]
    fn settings_defaults_and_bad_values() {
        let settings = RateLimitSettings::from_config(&json!({})).unwrap();
        assert_eq!(settings, RateLimitSettings { max_tokens: 100, fill_rate: 10.0 });
        let settings = RateLimitSettings::from_config(&json!({"max_tokens": {"value": 5}, "fill_rate": 0.5})).unwrap();
        assert_eq!(settings, RateLimitSettings { max_tokens: 5, fill_rate: 0.5 });
        assert!(RateLimitSettings::from_config(&json!({"fill_rate": 0})).unwrap_err().contains("fill_rate"));
    }
}
