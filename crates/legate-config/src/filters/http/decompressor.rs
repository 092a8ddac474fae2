//! `envoy.extensions.filters.http.decompressor.v3` (`envoy.filters.http.decompressor`):
//! request and response bodies encoded with gzip, brotli or zstd are decoded on their way.

use serde::de::Deserializer;
use serde::Deserialize;

use crate::extensions::{deserialize_typed, DECOMPRESSORS};
use crate::filters::network::connection_limit::RuntimeFeatureFlag;
use crate::unsupported::Unsupported;
use crate::validate::Validator;

/// `Decompressor`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Decompressor {
    pub decompressor_library: Option<DecompressorLibrary>,
    pub request_direction_config: Option<RequestDirectionConfig>,
    pub response_direction_config: Option<ResponseDirectionConfig>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommonDirectionConfig {
    /// Default on.
    pub enabled: Option<RuntimeFeatureFlag>,
    #[serde(default)]
    pub ignore_no_transform_header: bool,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestDirectionConfig {
    pub common_config: Option<CommonDirectionConfig>,
    /// Adds the library's encoding to the request's `accept-encoding` when responses are
    /// decompressed (default true).
    pub advertise_accept_encoding: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResponseDirectionConfig {
    pub common_config: Option<CommonDirectionConfig>,
}

/// `decompressor_library`: a name (its stats' part) and the library.
#[derive(Clone, Debug, PartialEq)]
pub struct DecompressorLibrary {
    pub name: String,
    pub config: DecompressorConfig,
}

impl<'de> Deserialize<'de> for DecompressorLibrary {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (name, config) = deserialize_typed(d, DECOMPRESSORS, "decompressor")?;
        Ok(DecompressorLibrary { name, config })
    }
}

pub use crate::extensions::DecompressorConfig;

/// `envoy.extensions.compression.gzip.decompressor.v3.Gzip`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GzipDecompressor {
    pub window_bits: Option<u32>,
    pub chunk_size: Option<u32>,
    /// The most bytes out per byte in (default 100).
    pub max_inflate_ratio: Option<u32>,
}

/// `envoy.extensions.compression.brotli.decompressor.v3.Brotli`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BrotliDecompressor {
    #[serde(default)]
    pub disable_ring_buffer_reallocation: bool,
    pub chunk_size: Option<u32>,
}

/// `envoy.extensions.compression.zstd.decompressor.v3.Zstd`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZstdDecompressor {
    pub dictionaries: Option<Unsupported>,
    pub chunk_size: Option<u32>,
}

impl Decompressor {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        if self.decompressor_library.is_none() {
            v.error(&format!("{at}.decompressor_library"), "value is required");
        }
        if let Some(DecompressorConfig::Gzip(g)) = self.decompressor_library.as_ref().map(|l| &l.config) {
            if g.max_inflate_ratio.is_some_and(|r| !(1..=1032).contains(&r)) {
                v.error(
                    &format!("{at}.decompressor_library.typed_config.max_inflate_ratio"),
                    "value must be inside range [1, 1032]",
                );
            }
        }
    }
}
