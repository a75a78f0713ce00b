//! Shared pieces of the hand-written protobuf encodings (Time, Quantity).

/// A decode error for a well-formed message that carries a bad value.
/// prost keeps its constructor for internal use; nothing else builds one.
#[allow(deprecated)]
pub(crate) fn invalid_value(message: String) -> prost::DecodeError {
    prost::DecodeError::new(message)
}
