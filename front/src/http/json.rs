//! JSON ↔ the API's messages: protobuf's canonical JSON mapping (`prost-reflect`) over the descriptors
//! Python generated from `proto/` (the ones reflection serves), as `json_format` does on the Python
//! front: either field name spelling in (`entity_label`, `entityLabel`), unknown fields refused;
//! lowerCamelCase out, default values left out, bytes in base64, 64-bit integers as strings.

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde::de::DeserializeSeed;

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

    /// The request's wire bytes from its JSON; the error says why it is not one (`INVALID_ARGUMENT`).
    pub fn request_bytes(&self, method: Method, json: &[u8]) -> Result<Vec<u8>, String> {
        let desc = self.request(method);
        let refused = |e: &dyn std::fmt::Display| format!("request body is not a valid {}: {e}", desc.full_name());
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
