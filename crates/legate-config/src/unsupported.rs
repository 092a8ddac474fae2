//! A field Envoy accepts but legate does not implement yet.
//!
//! Declaring such fields with this type (instead of leaving them out) turns serde's generic
//! "unknown field" into an error that says what the user needs to know: the field is valid
//! Envoy, and legate refuses it rather than ignore it.

use serde::de::{Deserialize, Deserializer, Error, IgnoredAny};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unsupported {}

impl<'de> Deserialize<'de> for Unsupported {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IgnoredAny)?;
        Err(D::Error::custom("this Envoy field is not supported by legate yet"))
    }
}
