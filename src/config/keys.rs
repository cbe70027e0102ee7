//! Every key the config accepts, read off the raw structs' own `Deserialize` impls: a
//! deserializer that answers "present" for every field and notes each field's dotted path. The
//! reference `config.toml` is checked against this, so a new key cannot go undocumented.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Dotted paths of every table and key the config accepts, e.g. `server.tls.cert`; a table whose
/// key names are the operator's choice appears as `table.*` after the table itself.
pub fn accepted_keys() -> Vec<String> {
    let mut keys = Vec::new();
    // The result is a sample config; only the paths noted on the way matter.
    let _ = super::raw::RawConfig::deserialize(Tracer {
        path: String::new(),
        keys: &mut keys,
    });
    keys
}

struct Tracer<'a> {
    path: String,
    keys: &'a mut Vec<String>,
}

#[derive(Debug)]
pub struct Unsupported(String);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

impl de::Error for Unsupported {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Unsupported(msg.to_string())
    }
}

impl<'de> de::Deserializer<'de> for Tracer<'_> {
    type Error = Unsupported;

    // A string satisfies every leaf that takes one, and the "string or list" untagged enums.
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_str("x")
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_bool(true)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_i64(1)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_i64(1)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_i64(1)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_i64(1)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_u64(1)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_u64(1)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_u64(1)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_u64(1)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_f64(1.0)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_f64(1.0)
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_some(self)
    }
    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Unsupported> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_seq(OneElement(Some(self)))
    }
    // A free-form table (names chosen by the operator) is noted as `table.*`.
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        self.keys.push(format!("{}.*", self.path));
        v.visit_map(Fields {
            path: self.path,
            keys: self.keys,
            fields: &[],
            next: 0,
        })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Unsupported> {
        v.visit_map(Fields {
            path: self.path,
            keys: self.keys,
            fields,
            next: 0,
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        _v: V,
    ) -> Result<V::Value, Unsupported> {
        Err(Unsupported(format!(
            "enum {name} at `{}` cannot be traced",
            self.path
        )))
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsupported> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        char str string bytes byte_buf unit_struct tuple tuple_struct identifier
    }
}

struct OneElement<'a>(Option<Tracer<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Unsupported;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Unsupported> {
        self.0.take().map(|t| seed.deserialize(t)).transpose()
    }
}

struct Fields<'a> {
    path: String,
    keys: &'a mut Vec<String>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Unsupported;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Unsupported> {
        let Some(field) = self.fields.get(self.next) else {
            return Ok(None);
        };
        seed.deserialize(field.into_deserializer()).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Unsupported> {
        let field = self.fields[self.next];
        self.next += 1;
        let path = if self.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.path)
        };
        self.keys.push(path.clone());
        seed.deserialize(Tracer {
            path,
            keys: self.keys,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_section_and_nested_key_is_traced() {
        let keys = crate::config::keys::accepted_keys();
        for k in [
            "server.listen",
            "server.tls.cert",
            "metrics.listen",
            "directory.local.users_file",
            "routes.public",
            "regulation.ip_allowlist",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
    }
}
