//! berth-client: what every control loop needs to talk to the API servers.
//!
//! A typed gRPC client with failover across peers, informers (list + watch +
//! cache), a rate-limited work queue, and fenced leader election on a Lease.
