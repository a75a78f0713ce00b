//! Device plugins, through the kubelet device-plugin API v1beta1 over unix
//! sockets. The kubelet serves Registration on `<dir>/kubelet.sock`; each
//! registered plugin gets a session that follows its ListAndWatch stream
//! (every call with a deadline). The [`DeviceManager`] counts each
//! resource's healthy devices for the Node, allocates devices to a pod's
//! containers at admission (never one device to two containers), applies
//! the plugins' answers to the CRI container config, and checkpoints the
//! allocations so a restarted kubelet keeps them. [`plugin`] is the other
//! side, for plugins written with berth.

mod allocator;
mod checkpoint;
mod client;
mod error;
mod manager;
pub mod plugin;
mod registration;

pub use error::DevicesError;
pub use manager::{DeviceConfig, DeviceManager, ResourceCount, HEALTHY, KUBELET_SOCKET};
pub use registration::VERSION;

#[cfg(test)]
mod tests;
