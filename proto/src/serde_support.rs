//! Field adapters that the generated serde derives refer to (see build.rs).

use serde::{Deserialize, Deserializer};

/// Kubernetes omits zero values (`omitempty`); a present-but-empty message
/// such as `emptyDir: {}` is `Some(default)`, not the default, so it stays.
pub(crate) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Kubernetes' decoder treats `null` (and a YAML key with no value) as the
/// field being absent, so `args:` with nothing after it is an empty list.
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}
