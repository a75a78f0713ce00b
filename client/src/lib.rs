//! berth-client: what every control loop needs to talk to the API servers.
//!
//! - [`Client`]: gRPC connections to every API server peer, with failover
//!   and retries of what is safe to retry; [`Api`] gives a resource's typed
//!   verbs over it.
//! - [`Informer`]: list + watch + an indexed local [`Cache`], relisting when
//!   the watch window is lost.
//! - [`WorkQueue`]: a rate-limited queue of keys that collapses duplicates
//!   and never hands one key to two workers at once.
//! - [`EventRecorder`]: Events on the objects a component acted on,
//!   written in the background without ever making the component wait.
//! - [`LeaderElector`]: leader election on a Lease, yielding a
//!   [`FenceToken`] the API server checks on every write of the leader.

mod api;
mod client;
mod error;
mod events;
mod informer;
mod leader;
mod queue;
mod resource;

pub use api::{
    Api, DeleteParams, ListParams, ObjectList, Scalable, WatchEvent, WatchParams, WatchStream,
};
pub use client::{Client, Config, WarningHandler};
pub use error::Error;
pub use events::{EventRecorder, EventType, EventWriter};
pub use informer::{key, Cache, Change, Index, Informer, InformerParams};
pub use leader::{ElectionTiming, FenceToken, LeaderElector};
pub use queue::{RateLimit, WorkQueue};
pub use resource::ApiResource;
