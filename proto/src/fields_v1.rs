//! Kubernetes' FieldsV1: the set of fields one manager owns, as a JSON
//! object (`{"f:spec": {"f:replicas": {}}}`), used by managedFields. On the
//! wire it is the JSON text in field 1, as Kubernetes' own `raw` bytes.

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;
use serde_json::{Map, Value};

/// A field set as its JSON object.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FieldsV1(pub Map<String, Value>);

impl std::hash::Hash for FieldsV1 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.raw().hash(state)
    }
}

impl serde::Serialize for FieldsV1 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for FieldsV1 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Map::deserialize(d).map(FieldsV1)
    }
}

impl FieldsV1 {
    fn raw(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap_or_default()
    }
}

impl prost::Message for FieldsV1 {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.0.is_empty() {
            encoding::bytes::encode(1, &self.raw(), buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != 1 {
            return encoding::skip_field(wire_type, tag, buf, ctx);
        }
        let mut raw = Vec::new();
        encoding::bytes::merge(wire_type, &mut raw, buf, ctx)?;
        // prost offers no other way to say why a message is malformed.
        #[allow(deprecated)]
        let invalid = || DecodeError::new("FieldsV1 does not hold a JSON object");
        self.0 = serde_json::from_slice(&raw).map_err(|_| invalid())?;
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        if self.0.is_empty() {
            0
        } else {
            encoding::bytes::encoded_len(1, &self.raw())
        }
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use crate::meta_v1::{ManagedFieldsEntry, ObjectMeta};
    use prost::Message;

    #[test]
    fn managed_fields_travel_in_json_yaml_and_protobuf() {
        let text = r#"{"name":"a","managedFields":[{"manager":"kubectl","operation":"Apply","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:replicas":{}}}}]}"#;
        let meta: ObjectMeta = crate::from_json(text.as_bytes()).unwrap();
        let entry: &ManagedFieldsEntry = &meta.managed_fields[0];
        assert_eq!(
            entry.fields_v1.as_ref().unwrap().0["f:spec"]["f:replicas"],
            serde_json::json!({})
        );
        let decoded = ObjectMeta::decode(meta.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, meta);
        assert_eq!(String::from_utf8(crate::to_json(&decoded)).unwrap(), text);
        // A FieldsV1 must be an object.
        assert!(crate::from_json::<ObjectMeta>(br#"{"managedFields":[{"fieldsV1":[1]}]}"#).is_err());
    }
}
