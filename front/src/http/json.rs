//! JSON ↔ the API's messages: protobuf's canonical JSON mapping (`prost-reflect`) over the descriptors
//! Python generated from `proto/` (the ones reflection serves), as `json_format` does on the Python
//! front: either field name spelling in (`entity_label`, `entityLabel`), unknown fields refused;
//! lowerCamelCase out, default values left out, bytes in base64, 64-bit integers as strings.
//!
//! Limits before work: a body long enough to name more keys (a retrieve) or rows (a persist) than the
//! limits allow is first counted by a pass that builds nothing per element ([`check_counts`]), and
//! refused as the wire path's prescan refuses it, before any message is built.

use std::fmt;

use ofs_core::Limits;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer as _;

use crate::api::Method;

/// The request and reply messages of each method.
#[derive(Debug, Clone)]
pub struct Messages {
    query: MessageDescriptor,
    result: MessageDescriptor,
    decoded_result: MessageDescriptor,
    persist_query: MessageDescriptor,
    persist_result: MessageDescriptor,
}

impl Messages {
    /// From the encoded `FileDescriptorSet` of `retrieve.proto` and `persist.proto`.
    pub fn new(descriptors: &[u8]) -> Result<Messages, String> {
        let pool = DescriptorPool::decode(descriptors).map_err(|e| format!("descriptors: {e}"))?;
        let get = |name: &str| pool.get_message_by_name(name).ok_or_else(|| format!("descriptors: no message {name}"));
        Ok(Messages {
            query: get("retrieve.Query")?,
            result: get("retrieve.Result")?,
            decoded_result: get("retrieve.DecodedResult")?,
            persist_query: get("persist.Query")?,
            persist_result: get("persist.Result")?,
        })
    }

    fn request(&self, method: Method) -> &MessageDescriptor {
        match method {
            Method::Retrieve | Method::RetrieveDecoded => &self.query,
            Method::Persist => &self.persist_query,
        }
    }

    fn reply(&self, method: Method) -> &MessageDescriptor {
        match method {
            Method::Retrieve => &self.result,
            Method::RetrieveDecoded => &self.decoded_result,
            Method::Persist => &self.persist_result,
        }
    }

    /// The request's wire bytes from its JSON, once its key or row count is within `limits`.
    pub fn request_bytes(&self, method: Method, json: &[u8], limits: &Limits) -> Result<Vec<u8>, Refusal> {
        check_counts(method, json, limits).map_err(Refusal::Limit)?;
        self.parse(method, json).map_err(Refusal::Invalid)
    }

    /// The request's wire bytes from its JSON; the error says why it is not one (`INVALID_ARGUMENT`).
    fn parse(&self, method: Method, json: &[u8]) -> Result<Vec<u8>, String> {
        let desc = self.request(method);
        let refused = |e: &dyn fmt::Display| format!("request body is not a valid {}: {e}", desc.full_name());
        let mut de = serde_json::Deserializer::from_slice(json);
        let mut track = serde_path_to_error::Track::new();
        let message = desc.clone().deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track));
        let message = message.map_err(|e| match track.path().to_string() {
            path if path == "." => refused(&e),
            path => refused(&format!("{path}: {e}")),
        })?;
        de.end().map_err(|e| refused(&e))?;
        Ok(message.encode_to_vec())
    }

    /// The reply's JSON from its wire bytes.
    pub fn reply_json(&self, method: Method, reply: &[u8]) -> Result<Vec<u8>, String> {
        let message = DynamicMessage::decode(self.reply(method).clone(), reply).map_err(|e| format!("reply: {e}"))?;
        let mut out = Vec::with_capacity(reply.len() * 4 / 3 + 64);
        let mut ser = serde_json::Serializer::new(&mut out);
        message.serialize_with_options(&mut ser, &SerializeOptions::new()).map_err(|e| format!("reply: {e}"))?;
        Ok(out)
    }
}

/// Why a JSON body is not a request to run.
#[derive(Debug)]
pub enum Refusal {
    /// Not the method's JSON (`INVALID_ARGUMENT`).
    Invalid(String),
    /// More keys or rows than the limits allow (the core's error, `RESOURCE_EXHAUSTED`).
    Limit(ofs_core::Error),
}

/// Bytes an element of `keys` / `data` takes at least in JSON (`{},`): a body under `limit` times this
/// cannot be over the limit and is not counted.
const MIN_ELEMENT_BYTES: usize = 3;

/// Holds the keys of a retrieve body, or the rows of a persist body, to `limits`, counting them
/// without building them; a body that is not JSON passes (the parse that follows says why).
fn check_counts(method: Method, json: &[u8], limits: &Limits) -> ofs_core::Result<()> {
    let (field, limit) = match method {
        Method::Retrieve | Method::RetrieveDecoded => ("keys", limits.max_keys),
        Method::Persist => ("data", limits.max_rows),
    };
    if json.len() / MIN_ELEMENT_BYTES <= limit {
        return Ok(());
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let Ok((entity, count)) = (&mut de).deserialize_map(Scan { field }) else {
        return Ok(());
    };
    match method {
        Method::Retrieve | Method::RetrieveDecoded => {
            limits.check_keys(count, || format!("retrieve for entity {entity:?}"))
        }
        Method::Persist => limits.check_rows(count, || format!("persist for entity {entity:?}")),
    }
}

/// The top-level object of a request body: its entity label and how many elements `field` holds.
struct Scan {
    field: &'static str,
}

impl<'de> Visitor<'de> for Scan {
    type Value = (String, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut entity, mut count) = (String::new(), 0);
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if name == self.field {
                count += map.next_value_seed(Count)?;
            } else if name == "entityLabel" || name == "entity_label" {
                entity = map.next_value()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok((entity, count))
    }
}

/// The number of elements of a JSON array, each skipped unbuilt.
struct Count;

impl<'de> DeserializeSeed<'de> for Count {
    type Value = usize;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<usize, D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Count {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0usize;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(keys: usize, rows: usize) -> Limits {
        Limits { max_keys: keys, max_rows: rows, max_bytes: usize::MAX }
    }

    #[test]
    fn bodies_over_the_limits_are_refused_before_a_message_is_built() {
        let keys: Vec<String> = (0..50).map(|i| format!("{{\"cols\":[\"u{i}\"]}}")).collect();
        let body = format!("{{\"entityLabel\":\"user\",\"keys\":[{}],\"x\":{{\"keys\":[1,2]}}}}", keys.join(","));
        let err = check_counts(Method::Retrieve, body.as_bytes(), &limits(10, 10)).unwrap_err();
        assert_eq!(err.kind(), ofs_core::ErrorKind::ResourceExhausted);
        let text = err.to_string();
        assert!(text.contains("retrieve for entity \"user\"") && text.contains("50 keys"), "{text}");
        assert!(text.contains("max_keys_per_request"), "{text}");
        check_counts(Method::Retrieve, body.as_bytes(), &limits(50, 10)).unwrap();
        // Rows of a persist, under either spelling of the entity's field.
        let rows: Vec<&str> = vec!["{}"; 20];
        let body = format!("{{\"data\":[{}],\"entity_label\":\"shop\"}}", rows.join(","));
        let err = check_counts(Method::Persist, body.as_bytes(), &limits(1000, 5)).unwrap_err();
        assert!(err.to_string().contains("persist for entity \"shop\""), "{err}");
        // Short bodies are not scanned; bodies that are not JSON objects are left to the parse.
        check_counts(Method::Retrieve, b"{\"keys\":[{},{}]}", &limits(1, 1)).unwrap_err();
        check_counts(Method::Retrieve, b"{\"keys\":[{}]}", &limits(5, 5)).unwrap();
        check_counts(Method::Retrieve, b"[1,2,3,4,5,6,7,8,9,10,11,12]", &limits(1, 1)).unwrap();
        check_counts(Method::Retrieve, b"{\"keys\": 7, \"pad\": \"......\"}", &limits(1, 1)).unwrap();
    }
}
