//! MessagePack results rendered as JSON for the CLI and dashboards.
//!
//! `serde_json::Value` cannot hold binary strings or non-string map keys,
//! which MessagePack has, so results are converted through a visitor of
//! our own rather than by deserializing a `Value` directly.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// Decodes MessagePack bytes (a task's result) into JSON.
pub(crate) fn msgpack_to_json(bytes: &[u8]) -> Result<Value> {
    msgpack_to_json_as(bytes, "result")
}

/// Decodes MessagePack bytes into JSON; `what` names them in the error.
pub(crate) fn msgpack_to_json_as(bytes: &[u8], what: &'static str) -> Result<Value> {
    rmp_serde::from_slice::<Json>(bytes)
        .map(|json| json.0)
        .map_err(|e| Error::decode(what, e))
}

/// A JSON value that deserializes from anything self-describing.
struct Json(Value);

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor).map(Json)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any MessagePack value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN or infinities.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Array(
            v.iter().map(|&b| Value::Number(b.into())).collect(),
        ))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Json::deserialize(deserializer).map(|json| json.0)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value, D::Error> {
        Json::deserialize(deserializer).map(|json| json.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Json(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some((Json(key), Json(value))) = access.next_entry()? {
            let key = match key {
                Value::String(key) => key,
                other => other.to_string(),
            };
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;
    use serde_json::json;

    use super::*;
    use crate::encode_payload;

    #[derive(Serialize)]
    struct Output {
        vmaf: f64,
        frames: u32,
        name: String,
        tags: Vec<String>,
        nothing: Option<u8>,
        #[serde(with = "serde_bytes")]
        raw: Vec<u8>,
        by_height: BTreeMap<u32, f64>,
    }

    #[test]
    fn outputs_render_as_json() {
        let output = Output {
            vmaf: 93.5,
            frames: 240,
            name: "720p".into(),
            tags: vec!["a".into(), "b".into()],
            nothing: None,
            raw: vec![1, 2],
            by_height: BTreeMap::from([(720, 0.5)]),
        };
        let json = msgpack_to_json(&encode_payload(&output).unwrap()).unwrap();
        assert_eq!(
            json,
            json!({
                "vmaf": 93.5,
                "frames": 240,
                "name": "720p",
                "tags": ["a", "b"],
                "nothing": null,
                "raw": [1, 2],
                "by_height": {"720": 0.5},
            })
        );
    }

    #[test]
    fn unit_outputs_are_null_and_garbage_is_an_error() {
        assert_eq!(
            msgpack_to_json(&encode_payload(&()).unwrap()).unwrap(),
            Value::Null
        );
        assert!(msgpack_to_json(&[0xc1]).is_err());
    }
}
