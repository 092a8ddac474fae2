//! `envoy.extensions.filters.http.compressor.v3` (`envoy.filters.http.compressor`): responses
//! compressed with gzip, brotli or zstd when the client accepts it.

use serde::de::Deserializer;
use serde::Deserialize;

use crate::core::DataSource;
use crate::extensions::{deserialize_typed, COMPRESSORS};
use crate::filters::network::connection_limit::RuntimeFeatureFlag;
use crate::unsupported::Unsupported;
use crate::validate::Validator;

/// `Compressor`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Compressor {
    pub compressor_library: Option<CompressorLibrary>,
    pub request_direction_config: Option<Unsupported>,
    pub response_direction_config: Option<ResponseDirectionConfig>,
    /// On a tie of `q` values, this filter's encoding wins.
    #[serde(default)]
    pub choose_first: bool,
    /// Deprecated for `response_direction_config`.
    pub content_length: Option<u32>,
    /// Deprecated for `response_direction_config`.
    #[serde(default)]
    pub content_type: Vec<String>,
    /// Deprecated for `response_direction_config`.
    #[serde(default)]
    pub disable_on_etag_header: bool,
    /// Deprecated for `response_direction_config`.
    #[serde(default)]
    pub remove_accept_encoding_header: bool,
    /// Deprecated for `response_direction_config.common_config.enabled`.
    pub runtime_enabled: Option<RuntimeFeatureFlag>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResponseDirectionConfig {
    pub common_config: Option<CommonDirectionConfig>,
    #[serde(default)]
    pub disable_on_etag_header: bool,
    #[serde(default)]
    pub remove_accept_encoding_header: bool,
    pub uncompressible_response_codes: Option<Unsupported>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommonDirectionConfig {
    pub enabled: Option<RuntimeFeatureFlag>,
    /// Responses with a shorter `content-length` are not compressed (default 30).
    pub min_content_length: Option<u32>,
    /// The media types compressed (default: Envoy's list of text types).
    #[serde(default)]
    pub content_type: Vec<String>,
}

/// `compressor_library`: a name (its stats' part) and the library.
#[derive(Clone, Debug, PartialEq)]
pub struct CompressorLibrary {
    pub name: String,
    pub config: CompressorConfig,
}

impl<'de> Deserialize<'de> for CompressorLibrary {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (name, config) = deserialize_typed(d, COMPRESSORS, "compressor")?;
        Ok(CompressorLibrary { name, config })
    }
}

pub use crate::extensions::CompressorConfig;

/// `envoy.extensions.compression.gzip.compressor.v3.Gzip`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Gzip {
    pub memory_level: Option<u32>,
    #[serde(default)]
    pub compression_level: GzipLevel,
    pub compression_strategy: Option<String>,
    pub window_bits: Option<u32>,
    pub chunk_size: Option<u32>,
}

/// `Gzip.CompressionLevel`; Envoy's names, lowercase accepted.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum GzipLevel {
    #[default]
    #[serde(rename = "DEFAULT_COMPRESSION", alias = "default_compression")]
    Default,
    #[serde(rename = "BEST_SPEED", alias = "best_speed", alias = "COMPRESSION_LEVEL_1", alias = "compression_level_1")]
    Level1,
    #[serde(rename = "COMPRESSION_LEVEL_2", alias = "compression_level_2")]
    Level2,
    #[serde(rename = "COMPRESSION_LEVEL_3", alias = "compression_level_3")]
    Level3,
    #[serde(rename = "COMPRESSION_LEVEL_4", alias = "compression_level_4")]
    Level4,
    #[serde(rename = "COMPRESSION_LEVEL_5", alias = "compression_level_5")]
    Level5,
    #[serde(rename = "COMPRESSION_LEVEL_6", alias = "compression_level_6")]
    Level6,
    #[serde(rename = "COMPRESSION_LEVEL_7", alias = "compression_level_7")]
    Level7,
    #[serde(rename = "COMPRESSION_LEVEL_8", alias = "compression_level_8")]
    Level8,
    #[serde(
        rename = "BEST_COMPRESSION",
        alias = "best_compression",
        alias = "COMPRESSION_LEVEL_9",
        alias = "compression_level_9"
    )]
    Level9,
}

impl GzipLevel {
    /// zlib's level (the default is zlib's 6).
    pub fn level(self) -> u32 {
        match self {
            GzipLevel::Default | GzipLevel::Level6 => 6,
            GzipLevel::Level1 => 1,
            GzipLevel::Level2 => 2,
            GzipLevel::Level3 => 3,
            GzipLevel::Level4 => 4,
            GzipLevel::Level5 => 5,
            GzipLevel::Level7 => 7,
            GzipLevel::Level8 => 8,
            GzipLevel::Level9 => 9,
        }
    }
}

/// `envoy.extensions.compression.brotli.compressor.v3.Brotli`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Brotli {
    /// 0 to 11 (default 3).
    pub quality: Option<u32>,
    pub encoder_mode: Option<String>,
    /// 10 to 24 (default 18).
    pub window_bits: Option<u32>,
    pub input_block_bits: Option<u32>,
    pub chunk_size: Option<u32>,
    #[serde(default)]
    pub disable_literal_context_modeling: bool,
}

/// `envoy.extensions.compression.zstd.compressor.v3.Zstd`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Zstd {
    /// Default 3.
    pub compression_level: Option<u32>,
    #[serde(default)]
    pub enable_checksum: bool,
    pub strategy: Option<String>,
    pub dictionary: Option<DataSource>,
    pub chunk_size: Option<u32>,
}

/// `CompressorPerRoute`: off, or response compression on with the route's settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CompressorPerRoute {
    pub disabled: Option<bool>,
    pub overrides: Option<CompressorOverrides>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CompressorOverrides {
    pub response_direction_config: Option<ResponseDirectionOverrides>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResponseDirectionOverrides {
    pub remove_accept_encoding_header: Option<bool>,
}

impl Compressor {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        if self.compressor_library.is_none() {
            v.error(&format!("{at}.compressor_library"), "value is required");
        }
        if let Some(CompressorConfig::Zstd(z)) = self.compressor_library.as_ref().map(|l| &l.config) {
            if z.dictionary.is_some() {
                v.error(
                    &format!("{at}.compressor_library.typed_config.dictionary"),
                    "this Envoy field is not supported by legate yet",
                );
            }
        }
        if let Some(CompressorConfig::Brotli(b)) = self.compressor_library.as_ref().map(|l| &l.config) {
            if b.quality.is_some_and(|q| q > 11) {
                v.error(
                    &format!("{at}.compressor_library.typed_config.quality"),
                    "value must be less than or equal to 11",
                );
            }
            if b.window_bits.is_some_and(|w| !(10..=24).contains(&w)) {
                v.error(
                    &format!("{at}.compressor_library.typed_config.window_bits"),
                    "value must be inside range [10, 24]",
                );
            }
        }
    }
}

impl CompressorPerRoute {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        v.oneof(at, &[("disabled", self.disabled.is_some()), ("overrides", self.overrides.is_some())], true);
        if self.disabled == Some(false) {
            v.error(&format!("{at}.disabled"), "value must equal true");
        }
    }
}
