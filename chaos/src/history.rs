//! What a run records: every client operation with its invoke and complete
//! times (nanoseconds since the run started), every watch event, every
//! fenced write, and the store's own history read back after healing.

use berth_raft_store::linearizability::{KvInput, KvOutput, Operation};
use serde::{Deserialize, Serialize};

/// How a client call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Answered with a result.
    Ok,
    /// Refused in a way that proves it took no effect.
    Fail,
    /// Timed out or lost its connection: it may or may not have taken effect.
    Unknown,
}

/// One operation on the etcd registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterOp {
    pub client: u64,
    /// The peer (0-based) it was sent to.
    pub peer: usize,
    pub input: KvInput,
    pub call: u64,
    pub ret: Option<u64>,
    pub outcome: Outcome,
    pub output: Option<KvOutput>,
    /// The store revision of an acknowledged write.
    pub revision: Option<i64>,
}

impl RegisterOp {
    pub fn is_write(&self) -> bool {
        !matches!(self.input, KvInput::Get { .. })
    }

    /// A write that took effect for certain (a CAS that swapped).
    pub fn acknowledged_write(&self) -> bool {
        self.outcome == Outcome::Ok
            && match (&self.input, &self.output) {
                (KvInput::Put { .. }, _) => true,
                (KvInput::Cas { .. }, Some(KvOutput::Cas(swapped))) => *swapped,
                _ => false,
            }
    }
}

/// The history the linearizability checker reads: proved failures are left
/// out (they took no effect), unknown outcomes may have taken effect any
/// time after their call.
pub fn checker_history(ops: &[RegisterOp]) -> Vec<Operation<KvInput, KvOutput>> {
    ops.iter()
        .filter(|op| op.outcome != Outcome::Fail)
        .map(|op| {
            let known = op.outcome == Outcome::Ok;
            Operation {
                client: op.client,
                input: op.input.clone(),
                call: op.call,
                output: if known { op.output.clone() } else { None },
                ret: if known { op.ret } else { None },
            }
        })
        .collect()
}

/// A write a client was told succeeded, at `revision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckedWrite {
    pub key: String,
    pub revision: i64,
    /// The value written, where the store keeps it as text.
    pub value: Option<String>,
}

/// One change of the key space, as a watch delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreEvent {
    pub revision: i64,
    pub key: String,
    /// None for a delete; the value as text (lossy for binary values).
    pub value: Option<String>,
}

/// What one watcher (pinned to one peer) received.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchLog {
    pub peer: usize,
    /// The revision the first watch started from.
    pub start_revision: i64,
    pub events: Vec<StoreEvent>,
    /// For each event, the number of the watch response that carried it
    /// (counted over the whole log), for the atomicity check.
    pub responses: Vec<u64>,
    /// Times the stream broke and was resumed from the next revision.
    pub resumes: u32,
}

/// One write of the leader-elected writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencedWrite {
    pub candidate: usize,
    /// The revision in the fencing token the write carried.
    pub token: i64,
    pub call: u64,
    pub ret: Option<u64>,
    pub outcome: Outcome,
    /// The revision the write committed at, when accepted.
    pub revision: Option<i64>,
}

/// One peer's key space after healing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    pub peer: usize,
    /// None when the peer did not answer.
    pub revision: Option<i64>,
    pub hash: Option<u32>,
}

/// One create or update of the API-object workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiWrite {
    pub writer: u64,
    pub object: String,
    pub call: u64,
    pub ret: u64,
    pub outcome: Outcome,
    /// The resourceVersion the update was conditioned on (None: a create).
    pub from: Option<i64>,
    /// The resourceVersion it produced, when accepted.
    pub to: Option<i64>,
}
