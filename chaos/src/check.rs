//! The checkers: each reads recorded histories and returns the violations
//! it found, each naming what broke and where.

use crate::history::{AckedWrite, ApiWrite, FencedWrite, Outcome, PeerState, StoreEvent, WatchLog};
use berth_raft_store::linearizability::{check, KvInput, KvModel, KvOutput, Operation, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// One broken guarantee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Which checker: linearizability, lost-write, watch, fencing, convergence.
    pub checker: String,
    pub message: String,
}

fn violation(checker: &str, message: String) -> Violation {
    Violation { checker: checker.into(), message }
}

/// The register history against etcd's register semantics, within `budget`.
/// Returns the violation (with the smallest failing sub-history) or, when
/// the budget ran out, the reason the answer is unknown.
pub fn linearizability(
    history: &[Operation<KvInput, KvOutput>],
    budget: Duration,
) -> Result<Option<Violation>, String> {
    match check(&KvModel, history, budget) {
        Verdict::Linearizable => Ok(None),
        Verdict::NotLinearizable { ops, explanation } => {
            let ops = serde_json::to_string(&ops).unwrap_or_default();
            Ok(Some(violation(
                "linearizability",
                format!("{explanation}; smallest failing sub-history: {ops}"),
            )))
        }
        Verdict::Unknown { reason } => Err(reason),
    }
}

/// Every acknowledged write must be in the store's final history, at the
/// revision it was acknowledged at, with the value written.
pub fn lost_writes(acked: &[AckedWrite], store: &[StoreEvent]) -> Vec<Violation> {
    let at: HashMap<(i64, &str), &StoreEvent> =
        store.iter().map(|e| ((e.revision, e.key.as_str()), e)).collect();
    acked
        .iter()
        .filter_map(|write| match at.get(&(write.revision, write.key.as_str())) {
            None => Some(violation(
                "lost-write",
                format!(
                    "write of {} acknowledged at revision {} is not in the store's history",
                    write.key, write.revision
                ),
            )),
            Some(event) if write.value.is_some() && event.value != write.value => Some(violation(
                "lost-write",
                format!(
                    "write of {}={:?} acknowledged at revision {}, but the store holds {:?} there",
                    write.key, write.value, write.revision, event.value
                ),
            )),
            Some(_) => None,
        })
        .collect()
}

/// Each watcher's events against the store's final history of the watched
/// prefix: ordered by revision, no event twice, the events of one revision
/// in one response (atomic), none missing between where
/// the watch started and where it is now (across resumptions), none the
/// store never had, and caught up with the store after healing.
pub fn watches(logs: &[WatchLog], store: &[StoreEvent], prefix: &str) -> Vec<Violation> {
    let reference: Vec<&StoreEvent> = store.iter().filter(|e| e.key.starts_with(prefix)).collect();
    let last = reference.last().map_or(0, |e| e.revision);
    let mut found = Vec::new();
    for log in logs {
        let peer = log.peer + 1;
        let mut seen: HashSet<(i64, &str)> = HashSet::new();
        let mut previous = 0;
        for event in &log.events {
            if event.revision < previous {
                found.push(violation(
                    "watch",
                    format!(
                        "watch on peer {peer}: revision {} of {} arrived after revision {previous}",
                        event.revision, event.key
                    ),
                ));
            }
            previous = previous.max(event.revision);
            if !seen.insert((event.revision, event.key.as_str())) {
                found.push(violation(
                    "watch",
                    format!(
                        "watch on peer {peer}: revision {} of {} arrived twice",
                        event.revision, event.key
                    ),
                ));
            }
        }
        let mut responses: BTreeMap<i64, HashSet<u64>> = BTreeMap::new();
        for (event, response) in log.events.iter().zip(&log.responses) {
            responses.entry(event.revision).or_default().insert(*response);
        }
        for (revision, carried_by) in responses.iter().filter(|(_, r)| r.len() > 1) {
            found.push(violation(
                "watch",
                format!(
                    "watch on peer {peer}: the events of revision {revision} came in {} \
                     responses, not one",
                    carried_by.len()
                ),
            ));
        }
        let received: HashMap<(i64, &str), &StoreEvent> =
            log.events.iter().map(|e| ((e.revision, e.key.as_str()), e)).collect();
        let within = |e: &&&StoreEvent| e.revision >= log.start_revision && e.revision <= previous;
        for expected in reference.iter().filter(within) {
            match received.get(&(expected.revision, expected.key.as_str())) {
                None => found.push(violation(
                    "watch",
                    format!(
                        "watch on peer {peer}: gap, revision {} of {} never arrived (the watch \
                         got as far as revision {previous})",
                        expected.revision, expected.key
                    ),
                )),
                Some(got) if got.value != expected.value => found.push(violation(
                    "watch",
                    format!(
                        "watch on peer {peer}: revision {} of {} carried {:?}, the store has {:?}",
                        expected.revision, expected.key, got.value, expected.value
                    ),
                )),
                Some(_) => {}
            }
        }
        let known: HashSet<(i64, &str)> =
            reference.iter().map(|e| (e.revision, e.key.as_str())).collect();
        for event in &log.events {
            if !known.contains(&(event.revision, event.key.as_str())) {
                found.push(violation(
                    "watch",
                    format!(
                        "watch on peer {peer}: revision {} of {} is not in the store's history",
                        event.revision, event.key
                    ),
                ));
            }
        }
        if previous < last {
            found.push(violation(
                "watch",
                format!(
                    "watch on peer {peer} stopped at revision {previous}; the store's last \
                     change under {prefix} is at revision {last}"
                ),
            ));
        }
    }
    found
}

/// At most one fenced writer at a time: in commit order, no accepted write
/// may carry an older token than one accepted before it.
pub fn fencing(writes: &[FencedWrite]) -> Vec<Violation> {
    let mut accepted: Vec<(i64, &FencedWrite)> = writes
        .iter()
        .filter(|w| w.outcome == Outcome::Ok)
        .filter_map(|w| Some((w.revision?, w)))
        .collect();
    accepted.sort_by_key(|(revision, _)| *revision);
    let mut newest: Option<(i64, &FencedWrite)> = None;
    let mut found = Vec::new();
    for (revision, write) in accepted {
        match newest {
            Some((at, before)) if write.token < before.token => found.push(violation(
                "fencing",
                format!(
                    "candidate {} wrote at revision {revision} with token {} after candidate {} \
                     had written at revision {at} with the newer token {}: two writers at once",
                    write.candidate, write.token, before.candidate, before.token
                ),
            )),
            _ => newest = Some((revision, write)),
        }
    }
    found
}

/// resourceVersion preconditions hold: of the accepted writes of one
/// object, at most one was a create and at most one was conditioned on
/// each resourceVersion, and each produced a newer resourceVersion.
pub fn preconditions(writes: &[ApiWrite]) -> Vec<Violation> {
    let mut accepted: HashMap<(&str, Option<i64>), &ApiWrite> = HashMap::new();
    let mut found = Vec::new();
    for write in writes.iter().filter(|w| w.outcome == Outcome::Ok) {
        let condition = match write.from {
            Some(rv) => format!("resourceVersion {rv}"),
            None => "absence (create)".to_string(),
        };
        if let Some(first) = accepted.insert((write.object.as_str(), write.from), write) {
            found.push(violation(
                "preconditions",
                format!(
                    "{}: writers {} and {} both had a write conditioned on {condition} accepted \
                     (producing {:?} and {:?})",
                    write.object, first.writer, write.writer, first.to, write.to
                ),
            ));
        }
        if let (Some(from), Some(to)) = (write.from, write.to) {
            if to <= from {
                found.push(violation(
                    "preconditions",
                    format!(
                        "{}: an update from resourceVersion {from} produced {to}",
                        write.object
                    ),
                ));
            }
        }
    }
    found
}

/// After healing every peer holds the same key space: the same revision and
/// the same hash.
pub fn convergence(states: &[PeerState]) -> Vec<Violation> {
    let mut by_state: BTreeMap<(Option<i64>, Option<u32>), Vec<usize>> = BTreeMap::new();
    for state in states {
        by_state.entry((state.revision, state.hash)).or_default().push(state.peer + 1);
    }
    if by_state.len() <= 1 && !by_state.keys().any(|(r, h)| r.is_none() || h.is_none()) {
        return Vec::new();
    }
    let described: Vec<String> = by_state
        .iter()
        .map(|((revision, hash), peers)| match (revision, hash) {
            (Some(r), Some(h)) => format!("peers {peers:?} at revision {r} hash {h:#010x}"),
            _ => format!("peers {peers:?} did not answer"),
        })
        .collect();
    vec![violation("convergence", format!("peers differ after healing: {}", described.join("; ")))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{checker_history, RegisterOp};

    fn op(client: u64, input: KvInput, call: u64, ret: u64, output: KvOutput) -> RegisterOp {
        RegisterOp {
            client,
            peer: 0,
            input,
            call,
            ret: Some(ret),
            outcome: Outcome::Ok,
            output: Some(output),
            revision: None,
        }
    }

    fn put(client: u64, value: &str, call: u64, ret: u64) -> RegisterOp {
        let input = KvInput::Put { key: "k".into(), value: value.into() };
        op(client, input, call, ret, KvOutput::Put)
    }

    fn get(client: u64, value: Option<&str>, call: u64, ret: u64) -> RegisterOp {
        let output = KvOutput::Get(value.map(String::from));
        op(client, KvInput::Get { key: "k".into() }, call, ret, output)
    }

    fn event(revision: i64, key: &str, value: &str) -> StoreEvent {
        StoreEvent { revision, key: key.into(), value: Some(value.into()) }
    }

    const BUDGET: Duration = Duration::from_secs(5);

    #[test]
    fn a_clean_register_history_passes() {
        let ops = [put(1, "a", 0, 10), get(2, Some("a"), 20, 30), put(1, "b", 40, 50)];
        assert_eq!(linearizability(&checker_history(&ops), BUDGET), Ok(None));
    }

    #[test]
    fn a_stale_read_is_caught() {
        let ops = [put(1, "a", 0, 10), put(1, "b", 20, 30), get(2, Some("a"), 40, 50)];
        let found = linearizability(&checker_history(&ops), BUDGET).unwrap().unwrap();
        assert_eq!(found.checker, "linearizability");
        assert!(found.message.contains("smallest failing sub-history"), "{}", found.message);
    }

    #[test]
    fn a_refused_write_is_left_out_and_an_unknown_one_may_have_happened() {
        let mut refused = put(1, "x", 0, 10);
        refused.outcome = Outcome::Fail;
        let mut unknown = put(3, "y", 5, 15);
        unknown.outcome = Outcome::Unknown;
        let ops = [refused, unknown, get(2, Some("y"), 100, 110)];
        assert_eq!(linearizability(&checker_history(&ops), BUDGET), Ok(None));
        let mut read_refused = ops.clone();
        read_refused[2] = get(2, Some("x"), 100, 110);
        assert!(linearizability(&checker_history(&read_refused), BUDGET).unwrap().is_some());
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let store = [event(5, "/chaos/k0", "a"), event(7, "/chaos/k0", "c")];
        let kept = AckedWrite { key: "/chaos/k0".into(), revision: 5, value: Some("a".into()) };
        let lost = AckedWrite { key: "/chaos/k0".into(), revision: 6, value: Some("b".into()) };
        let changed = AckedWrite { key: "/chaos/k0".into(), revision: 7, value: Some("z".into()) };
        assert!(lost_writes(std::slice::from_ref(&kept), &store).is_empty());
        let found = lost_writes(&[kept, lost, changed], &store);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].message.contains("revision 6"), "{found:?}");
        assert!(found[1].message.contains("\"z\""), "{found:?}");
    }

    fn log(events: &[StoreEvent]) -> WatchLog {
        // One response per revision.
        let responses = events.iter().map(|e| e.revision as u64).collect();
        WatchLog { peer: 0, start_revision: 2, events: events.to_vec(), responses, resumes: 1 }
    }

    #[test]
    fn a_transaction_split_across_watch_responses_is_caught() {
        let store = [event(2, "/chaos/pair/a", "1"), event(2, "/chaos/pair/b", "1")];
        let together = log(&store);
        assert_eq!(watches(std::slice::from_ref(&together), &store, "/chaos/"), vec![]);
        let mut split = together;
        split.responses = vec![0, 1];
        let found = watches(&[split], &store, "/chaos/");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("revision 2 came in 2 responses"), "{found:?}");
    }

    #[test]
    fn a_complete_watch_passes_and_a_watch_gap_is_caught() {
        let store = [event(1, "/chaos/a", "0"), event(2, "/chaos/a", "1"), event(3, "/other", "x")];
        let store = [&store[..], &[event(4, "/chaos/b", "2"), event(5, "/chaos/a", "3")]].concat();
        let complete =
            [event(2, "/chaos/a", "1"), event(4, "/chaos/b", "2"), event(5, "/chaos/a", "3")];
        assert_eq!(watches(&[log(&complete)], &store, "/chaos/"), vec![]);
        let gap = [event(2, "/chaos/a", "1"), event(5, "/chaos/a", "3")];
        let found = watches(&[log(&gap)], &store, "/chaos/");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("gap, revision 4"), "{found:?}");
    }

    #[test]
    fn reordered_duplicated_invented_and_stalled_watches_are_caught() {
        let store =
            [event(2, "/chaos/a", "1"), event(4, "/chaos/b", "2"), event(5, "/chaos/a", "3")];
        let reordered =
            [event(4, "/chaos/b", "2"), event(2, "/chaos/a", "1"), event(5, "/chaos/a", "3")];
        let found = watches(&[log(&reordered)], &store, "/chaos/");
        assert!(found.iter().any(|v| v.message.contains("arrived after")), "{found:?}");
        let twice = [
            event(2, "/chaos/a", "1"),
            event(2, "/chaos/a", "1"),
            event(4, "/chaos/b", "2"),
            event(5, "/chaos/a", "3"),
        ];
        let found = watches(&[log(&twice)], &store, "/chaos/");
        assert!(found.iter().any(|v| v.message.contains("arrived twice")), "{found:?}");
        let invented = [
            event(2, "/chaos/a", "1"),
            event(3, "/chaos/c", "?"),
            event(4, "/chaos/b", "2"),
            event(5, "/chaos/a", "3"),
        ];
        let found = watches(&[log(&invented)], &store, "/chaos/");
        assert!(found.iter().any(|v| v.message.contains("not in the store")), "{found:?}");
        let stalled = [event(2, "/chaos/a", "1")];
        let found = watches(&[log(&stalled)], &store, "/chaos/");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("stopped at revision 2"), "{found:?}");
    }

    fn fenced(candidate: usize, token: i64, revision: i64) -> FencedWrite {
        FencedWrite {
            candidate,
            token,
            call: 0,
            ret: Some(1),
            outcome: Outcome::Ok,
            revision: Some(revision),
        }
    }

    #[test]
    fn successive_fenced_writers_pass_and_two_at_once_are_caught() {
        let mut refused = fenced(0, 10, 0);
        refused.outcome = Outcome::Fail;
        refused.revision = None;
        let handover =
            [fenced(0, 10, 11), fenced(0, 10, 12), fenced(1, 13, 14), refused, fenced(1, 13, 15)];
        assert_eq!(fencing(&handover), vec![]);
        let overlap = [fenced(0, 10, 11), fenced(1, 13, 14), fenced(0, 10, 15)];
        let found = fencing(&overlap);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("revision 15 with token 10"), "{found:?}");
    }

    fn api(writer: u64, from: Option<i64>, to: i64) -> ApiWrite {
        let object = "chaos-obj-0".to_string();
        ApiWrite { writer, object, call: 0, ret: 1, outcome: Outcome::Ok, from, to: Some(to) }
    }

    #[test]
    fn a_lost_update_through_a_broken_precondition_is_caught() {
        let mut conflict = api(2, Some(5), 0);
        conflict.outcome = Outcome::Fail;
        conflict.to = None;
        let fine = [api(1, None, 5), conflict, api(1, Some(5), 8), api(2, Some(8), 9)];
        assert_eq!(preconditions(&fine), vec![]);
        let both = [api(1, None, 5), api(1, Some(5), 8), api(2, Some(5), 9)];
        let found = preconditions(&both);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("resourceVersion 5"), "{found:?}");
        assert_eq!(preconditions(&[api(1, None, 5), api(2, None, 6)]).len(), 1);
        assert_eq!(preconditions(&[api(1, Some(7), 7)]).len(), 1);
    }

    #[test]
    fn diverged_or_silent_peers_fail_convergence() {
        let at = |peer, revision, hash| PeerState { peer, revision, hash };
        assert_eq!(convergence(&[at(0, Some(9), Some(1)), at(1, Some(9), Some(1))]), vec![]);
        let diverged = convergence(&[at(0, Some(9), Some(1)), at(1, Some(9), Some(2))]);
        assert_eq!(diverged.len(), 1);
        assert!(diverged[0].message.contains("hash"), "{diverged:?}");
        assert_eq!(convergence(&[at(0, Some(9), Some(1)), at(1, None, None)]).len(), 1);
    }
}
