//! berth-raft-store: the replicated store that plays etcd's role.
//!
//! Every API-server peer embeds it. One openraft group whose voters are the
//! peers replicates a log on RocksDB; applying it builds an MVCC key space
//! with etcd v3 semantics (revisions, watch, txn, leases, compaction), served
//! in-process to the API server and over gRPC as an etcd v3 facade.
