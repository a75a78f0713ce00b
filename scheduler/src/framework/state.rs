//! What plugins hand to themselves within one scheduling cycle.

use std::any::{Any, TypeId};
use std::collections::HashMap;

/// Typed values keyed by their type: a plugin stores its own type (private
/// to it), so plugins cannot read each other's state by accident.
#[derive(Default)]
pub struct CycleState {
    values: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl CycleState {
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Box::new(value));
    }

    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.values.get(&TypeId::of::<T>()).and_then(|v| v.downcast_ref())
    }
}
