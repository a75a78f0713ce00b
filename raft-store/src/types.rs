//! The openraft type configuration: what a log entry carries and what
//! applying it returns.

use berth_proto::raft_v1::{Command, CommandResult};
use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

openraft::declare_raft_types!(
    /// berth's Raft types: peers are u64 ids with an address, entries carry
    /// a store command, snapshots are files streamed in chunks.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = tokio::fs::File,
);

pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;

/// A command in the log, kept in its protobuf form on disk and on the wire.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Proposal(pub Command);

/// What applying a command produced, returned to the proposer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied(pub CommandResult);

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.op.as_ref().map(op_name))
    }
}

fn op_name(op: &berth_proto::raft_v1::command::Op) -> &'static str {
    use berth_proto::raft_v1::command::Op;
    match op {
        Op::Put(_) => "put",
        Op::DeleteRange(_) => "delete_range",
        Op::Txn(_) => "txn",
        Op::Compaction(_) => "compaction",
        Op::LeaseGrant(_) => "lease_grant",
        Op::LeaseRevoke(_) => "lease_revoke",
        Op::Batch(_) => "batch",
    }
}

macro_rules! serde_as_protobuf {
    ($wrapper:ident, $inner:ty) => {
        impl Serialize for $wrapper {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0.encode_to_vec())
            }
        }

        impl<'de> Deserialize<'de> for $wrapper {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let bytes: Vec<u8> = serde_bytes_vec(d)?;
                <$inner>::decode(bytes.as_slice()).map($wrapper).map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_protobuf!(Proposal, Command);
serde_as_protobuf!(Applied, CommandResult);

fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("protobuf bytes")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_byte_buf(Visitor)
}
