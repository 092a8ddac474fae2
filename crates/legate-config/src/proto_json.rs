//! A JSON tree read as Envoy reads a config, where its protobuf JSON parser is more lenient
//! than serde's derived code:
//! - it runs with `case_insensitive_enum_parsing`: an enum's name not found as written is
//!   looked up in upper case (`type: strict_dns`, `lb_policy: round_robin`, as Envoy's own
//!   quick-start examples write them). This deserializer hands a derived enum the upper-case
//!   spelling when that, and only that, is one of its names;
//! - its legacy syntax, which `JsonStringToMessage` keeps, takes a single element in place of
//!   a list of them (`tls_certificates: {certificate_chain: ...}` in Envoy's quick-start), and
//!   `null` for a list is an empty one.
//!
//! Everything else is `serde_json`'s `&Value` deserializer: scalars go straight to it, and
//! arrays and objects are walked here so that the enums inside them are read the same way.

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Error, Value};

/// `value`, deserialized as Envoy's parser would read it.
#[derive(Clone, Copy)]
pub(crate) struct ProtoJson<'de>(pub &'de Value);

macro_rules! forward {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                self.0.$method(visitor)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for ProtoJson<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Items(items.iter())),
            Value::Object(fields) => visitor.visit_map(Fields { fields: fields.iter(), value: None }),
            scalar => scalar.deserialize_any(visitor),
        }
    }

    forward! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_char deserialize_str deserialize_string
        deserialize_bytes deserialize_byte_buf deserialize_unit deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Items(items.iter())),
            Value::Null => visitor.visit_seq(Items([].iter())),
            single => visitor.visit_seq(Items(std::slice::from_ref(single).iter())),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Items(items.iter())),
            other => other.deserialize_tuple(len, visitor),
        }
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Items(items.iter())),
            other => other.deserialize_tuple_struct(name, len, visitor),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(fields) => visitor.visit_map(Fields { fields: fields.iter(), value: None }),
            other => other.deserialize_map(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Items(items.iter())),
            Value::Object(fields) => visitor.visit_map(Fields { fields: fields.iter(), value: None }),
            other => other.deserialize_struct(name, fields, visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if let Value::String(written) = self.0 {
            if !variants.contains(&written.as_str()) {
                let upper = written.to_ascii_uppercase();
                if let Some(variant) = variants.iter().find(|v| **v == upper) {
                    return visitor.visit_enum(variant.into_deserializer());
                }
            }
        }
        self.0.deserialize_enum(name, variants, visitor)
    }
}

/// An array's elements, each read as a [`ProtoJson`].
struct Items<'de>(std::slice::Iter<'de, Value>);

impl<'de> SeqAccess<'de> for Items<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        self.0.next().map(|item| seed.deserialize(ProtoJson(item))).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// An object's fields, each value read as a [`ProtoJson`].
struct Fields<'de> {
    fields: serde_json::map::Iter<'de>,
    value: Option<&'de Value>,
}

impl<'de> MapAccess<'de> for Fields<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.fields.next() else { return Ok(None) };
        self.value = Some(value);
        seed.deserialize(de::value::BorrowedStrDeserializer::new(key)).map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(ProtoJson(value)),
            None => Err(de::Error::custom("a value asked for before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Clone, Debug, Deserialize, PartialEq)]
    enum Kind {
        #[serde(rename = "STRICT_DNS")]
        StrictDns,
        #[serde(rename = "EDS")]
        Eds,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cluster {
        name: String,
        kind: Option<Kind>,
        #[serde(default)]
        kinds: Vec<Kind>,
        port: Option<u32>,
    }

    fn read(value: Value) -> Result<Cluster, String> {
        Cluster::deserialize(ProtoJson(&value)).map_err(|e| e.to_string())
    }

    #[test]
    fn a_single_element_or_null_stands_for_a_list() {
        let cluster = read(serde_json::json!({"name": "x", "kinds": "eds"})).unwrap();
        assert_eq!(cluster.kinds, vec![Kind::Eds]);
        let cluster = read(serde_json::json!({"name": "x", "kinds": null})).unwrap();
        assert!(cluster.kinds.is_empty());
        let err = read(serde_json::json!({"name": "x", "kinds": 5})).unwrap_err();
        assert!(err.contains("invalid type: integer `5`, expected"), "{err}");
    }

    #[test]
    fn an_enum_is_read_in_any_case_the_rest_as_written() {
        let json = serde_json::json!({"name": "strict_dns", "kind": "strict_dns", "kinds": ["Eds", "EDS"], "port": 80});
        let cluster = read(json).unwrap();
        assert_eq!(cluster.name, "strict_dns", "a string that is not an enum keeps its case");
        assert_eq!((cluster.kind, cluster.kinds, cluster.port), (Some(Kind::StrictDns), vec![Kind::Eds; 2], Some(80)));

        let err = read(serde_json::json!({"name": "x", "kind": "strict-dns"})).unwrap_err();
        assert!(err.contains("unknown variant `strict-dns`, expected `STRICT_DNS` or `EDS`"), "{err}");
        let err = read(serde_json::json!({"name": "x", "colour": 1})).unwrap_err();
        assert!(err.contains("unknown field `colour`"), "{err}");
        let err = read(serde_json::json!({"name": "x", "port": "eighty"})).unwrap_err();
        assert!(err.contains("invalid type: string \"eighty\""), "{err}");
    }
}
