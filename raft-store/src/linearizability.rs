//! Linearizability checking for recorded histories of concurrent operations.
//!
//! A history lists, for every operation, when a client invoked it, what it
//! returned and when. [`check`] decides whether the operations can be put in
//! one order in which each takes effect atomically at some instant between its
//! call and its return, with every result matching a sequential [`Model`].
//!
//! The search walks the call and return entries in time order and backtracks
//! (Wing and Gong), skips (set of linearized operations, model state) pairs it
//! has already explored (Lowe), and checks the independent parts of a history
//! that [`Model::partition`] returns one at a time (P-compositionality).
//!
//! Operations whose outcome is unknown (`output: None`) may have taken effect
//! at any instant after their call, or never. The search only places them when
//! that is needed to place some other operation, so histories with many
//! timed-out or unanswered requests stay cheap to check.
//!
//! When a part fails, it is shrunk to a few operations that still fail with
//! the results of all the part's other operations forgotten, so the report is
//! a small, self-contained proof that the history is not linearizable.

use serde::{Deserialize, Serialize};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt::{Debug, Write as _};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::{Duration, Instant};

/// A sequential specification that concurrent histories are checked against.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Clone + Debug;
    type Output: Clone + Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input` to `state`; returns the next state if the model allows
    /// `output` (None = the op's result is unknown) as that op's result, None
    /// otherwise.
    ///
    /// With `output == None`, return the state the operation leaves behind had
    /// it taken effect, or None if it cannot take effect from `state`; that it
    /// never took effect is considered separately. Forgetting a result must
    /// never rule an order out: if `step(s, i, Some(o))` is `Some(t)`, then
    /// `step(s, i, None)` is `Some(t)` or `t == s`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Splits a history into independent parts (P-compositionality), e.g. per
    /// key: lists of indices into `history` such that the history is
    /// linearizable exactly when every part is. Operations in no part are not
    /// checked. Default: one part.
    fn partition(&self, history: &[Operation<Self::Input, Self::Output>]) -> Vec<Vec<usize>> {
        vec![(0..history.len()).collect()]
    }
}

/// One operation of a history, as a client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation<I, O> {
    /// The client that issued it; informational only.
    pub client: u64,
    pub input: I,
    /// When it was invoked, in nanoseconds since the start of the run.
    pub call: u64,
    /// None: outcome unknown (timeout, lost connection), so it may or may not
    /// have taken effect.
    pub output: Option<O>,
    /// When its result arrived, in nanoseconds since the start of the run.
    /// None: never returned, treated as returning at +infinity.
    pub ret: Option<u64>,
}

/// The result of [`check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict<I, O> {
    Linearizable,
    NotLinearizable {
        /// The smallest failing sub-history found: the ops (cloned) of the
        /// failing part after shrinking, in history order. It fails on its
        /// own, and still fails if every other op of the part had timed out
        /// (the explanation says so, or names the weaker guarantee left when
        /// the budget ran out), so it proves the whole history wrong.
        ops: Vec<Operation<I, O>>,
        /// What went wrong: the longest linearizable prefix reached, the
        /// state(s) there and the op that could not be placed.
        explanation: String,
    },
    /// The time budget ran out before an answer was found (or the model's
    /// partition named operations that do not exist).
    Unknown {
        reason: String,
    },
}

impl<I, O> Verdict<I, O> {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    pub fn is_not_linearizable(&self) -> bool {
        matches!(self, Verdict::NotLinearizable { .. })
    }
}

/// Checks whether `history` is linearizable with respect to `model`, spending
/// at most about `budget` of wall-clock time (searching and shrinking). Ops
/// whose intervals merely touch (one's call at the other's return) count as
/// concurrent. The verdict depends only on the history, not on timing, unless
/// the budget runs out.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: Duration,
) -> Verdict<M::Input, M::Output> {
    let started = Instant::now();
    // A budget too large to add to the clock means no limit at all.
    let deadline = started.checked_add(budget);
    let mut parts = model.partition(history);
    for part in &mut parts {
        part.sort_unstable();
        part.dedup();
    }
    if let Some(&bad) = parts.iter().flatten().find(|&&i| i >= history.len()) {
        return Verdict::Unknown {
            reason: format!(
                "the model's partition names operation {bad}, but the history has only {} operations",
                history.len()
            ),
        };
    }
    for (index, part) in parts.iter().enumerate() {
        let ops: Vec<&Operation<M::Input, M::Output>> = part.iter().map(|&i| &history[i]).collect();
        let items: Vec<Item<'_, M::Input, M::Output>> =
            ops.iter().map(|op| Item::recorded(op)).collect();
        let label = format!("part {} of {}", index + 1, parts.len());
        // A violation deep inside a long part is only proved once every way to
        // linearize what comes before it has failed, which can take very long.
        // So the whole part first gets a share of the time; if that runs out,
        // the ops around where the search got stuck are checked on their own.
        let outcome = match search(model, &items, share(deadline, 4)) {
            Outcome::OutOfTime { blocked: Some(blocked), .. } => {
                if let Some((kept, failure)) = localize(model, &ops, blocked, deadline) {
                    let start = Start::Window(kept, failure);
                    return report(model, history, part, &label, start, deadline);
                }
                search(model, &items, deadline)
            }
            Outcome::OutOfTime { blocked: None, .. } => search(model, &items, deadline),
            outcome => outcome,
        };
        match outcome {
            Outcome::Linearizable(_) => {}
            Outcome::OutOfTime { deepest, .. } => {
                return Verdict::Unknown {
                    reason: format!(
                        "time budget of {budget:?} ran out after {:?} in {label} ({n} \
                         operations; the parts before it are linearizable): the longest \
                         linearizable prefix found so far has {deepest} of its {n} operations",
                        started.elapsed(),
                        n = items.len(),
                    ),
                };
            }
            Outcome::Violation(failure) => {
                let start = Start::Whole(failure);
                return report(model, history, part, &label, start, deadline);
            }
        }
    }
    Verdict::Linearizable
}

/// Registers over several keys; every key starts absent (None). Parts are
/// per key, so the state is the value of the one key a part touches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvModel;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvInput {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: String,
    },
    /// Sets `new` if the current value equals `expected` (None: absent).
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
    Delete {
        key: String,
    },
}

impl KvInput {
    pub fn key(&self) -> &str {
        match self {
            KvInput::Get { key }
            | KvInput::Put { key, .. }
            | KvInput::Cas { key, .. }
            | KvInput::Delete { key } => key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvOutput {
    Get(Option<String>),
    Put,
    /// Whether the swap happened.
    Cas(bool),
    Delete,
}

impl Model for KvModel {
    type State = Option<String>;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> Self::State {
        None
    }

    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State> {
        match (input, output) {
            // A read with an unknown result constrains nothing.
            (KvInput::Get { .. }, None) => Some(state.clone()),
            (KvInput::Get { .. }, Some(KvOutput::Get(seen))) => {
                (seen == state).then(|| state.clone())
            }
            (KvInput::Put { value, .. }, None | Some(KvOutput::Put)) => Some(Some(value.clone())),
            // Unknown CAS outcome: only the successful swap has an effect; a
            // failed one is the same as the CAS never taking effect.
            (KvInput::Cas { expected, new, .. }, None | Some(KvOutput::Cas(true))) => {
                (expected == state).then(|| Some(new.clone()))
            }
            (KvInput::Cas { expected, .. }, Some(KvOutput::Cas(false))) => {
                (expected != state).then(|| state.clone())
            }
            (KvInput::Delete { .. }, None | Some(KvOutput::Delete)) => Some(None),
            // An output of the wrong kind for the input is never allowed.
            _ => None,
        }
    }

    fn partition(&self, history: &[Operation<KvInput, KvOutput>]) -> Vec<Vec<usize>> {
        let mut part_of: HashMap<&str, usize> = HashMap::new();
        let mut parts: Vec<Vec<usize>> = Vec::new();
        for (index, op) in history.iter().enumerate() {
            let part = *part_of.entry(op.input.key()).or_insert_with(|| {
                parts.push(Vec::new());
                parts.len() - 1
            });
            parts[part].push(index);
        }
        parts
    }
}

/// Steps between clock reads: reading it on every step would cost more than
/// the steps themselves.
const CLOCK_EVERY: u64 = 256;

/// Distinct states the explanation lists for the deepest prefix.
const STATES_SHOWN: usize = 4;
/// Prefix operations the explanation lists before eliding the earliest.
const PREFIX_SHOWN: usize = 16;

/// An operation as the search sees it.
struct Item<'h, I, O> {
    op: &'h Operation<I, O>,
    /// May be left out, and its result (if any) is ignored.
    optional: bool,
    /// The latest instant at which it can take effect.
    until: u128,
}

impl<'h, I, O> Item<'h, I, O> {
    /// As recorded: an op with an unknown outcome may take effect at any time
    /// after its call (a timed-out request can still be applied later) or never.
    fn recorded(op: &'h Operation<I, O>) -> Self {
        let optional = op.output.is_none();
        let until = if optional { u128::MAX } else { return_time(op) };
        Item { op, optional, until }
    }

    /// With its result forgotten, as if it took effect within its interval or
    /// never. Every linearization of the history remains one, so a failure
    /// found this way is a failure of the history itself.
    fn within_interval(op: &'h Operation<I, O>) -> Self {
        let until = if op.output.is_none() { u128::MAX } else { return_time(op) };
        Item { op, optional: true, until }
    }

    /// With its result forgotten, as if the request had timed out: it took
    /// effect at any time after its call, or never. Weaker still, so a
    /// failure found this way proves more.
    fn after_call(op: &'h Operation<I, O>) -> Self {
        Item { op, optional: true, until: u128::MAX }
    }

    fn output(&self) -> Option<&O> {
        if self.optional {
            None
        } else {
            self.op.output.as_ref()
        }
    }
}

fn return_time<I, O>(op: &Operation<I, O>) -> u128 {
    // A return stamped before its call can only be clock noise; treat the op
    // as instantaneous.
    op.ret.map_or(u128::MAX, |ret| u128::from(ret.max(op.call)))
}

enum Outcome<S> {
    /// The items placed, in order; the rest never took effect.
    Linearizable(Vec<usize>),
    Violation(Failure<S>),
    /// With the length of the longest linearizable prefix found, and the item
    /// that could not be placed after it.
    OutOfTime {
        deepest: usize,
        blocked: Option<usize>,
    },
}

/// Where the search got stuck, as indices into the items it searched.
struct Failure<S> {
    /// The longest linearizable prefix found, in linearization order.
    prefix: Vec<usize>,
    /// Distinct states reached at the end of prefixes of that length.
    states: Vec<S>,
    /// The op whose return was reached before it could be placed.
    blocked: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn is_subset(&self, of: &Bits) -> bool {
        self.0.iter().zip(&of.0).all(|(a, b)| a & !b == 0)
    }
}

/// A circular doubly linked list over nodes `0..len` with a sentinel at `len`,
/// so that a removed node can be put back in O(1) when backtracking.
struct Links {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Links {
    fn new(len: usize) -> Self {
        let size = len + 1;
        Links {
            next: (0..size).map(|i| (i + 1) % size).collect(),
            prev: (0..size).map(|i| (i + size - 1) % size).collect(),
        }
    }

    fn sentinel(&self) -> usize {
        self.next.len() - 1
    }

    fn first(&self) -> usize {
        self.next[self.sentinel()]
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    /// Undoes `unlink(node)`; relinks must mirror the unlinks in reverse order.
    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        self.prev[next] = node;
    }
}

/// Where the search looks for the next op to place.
#[derive(Clone, Copy)]
enum Cursor {
    /// At a node of the list of call and return entries of required ops.
    Required(usize),
    /// At a node of the list of optional ops, ordered by call.
    Optional(usize),
}

/// One placed op, with what is needed to take it back. States are numbered
/// by [`Steps`].
struct Frame {
    /// Identifies the configuration this placement leads to.
    serial: u64,
    item: usize,
    node: usize,
    optional: bool,
    prior: usize,
    prior_now: u64,
    frontier: usize,
}

/// A fast multiplicative hasher for the search's own tables: their keys are
/// not attacker-chosen, so SipHash's flooding resistance buys nothing there.
#[derive(Default)]
struct QuickHasher(u64);

impl QuickHasher {
    fn add(&mut self, word: u64) {
        // Multiplying by an odd constant (2^64 / golden ratio) spreads each
        // word's bits upwards; rotating first keeps earlier words in play.
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Hasher for QuickHasher {
    fn finish(&self) -> u64 {
        // Tables pick buckets by the low bits, which multiplying leaves the
        // least mixed, so fold the high half in.
        self.0 ^ (self.0 >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let mut last = [0; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.add(u64::from_le_bytes(last));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

type QuickMap<K, V> = HashMap<K, V, BuildHasherDefault<QuickHasher>>;

/// Cached model results kept before the cache is emptied, bounding its memory.
const RESULTS_KEPT: usize = 1 << 22;

/// The model's states, numbered as they are met, and its results by (state,
/// item): the search asks for the same ones over and over, notably for ops
/// with an unknown outcome, which stay candidates to the end.
struct Steps<'m, 'i, 'h, M: Model> {
    model: &'m M,
    items: &'i [Item<'h, M::Input, M::Output>],
    states: Vec<M::State>,
    numbers: QuickMap<M::State, usize>,
    results: QuickMap<(usize, usize), Option<usize>>,
    /// The states that placing some optional item has led to.
    reached: Vec<usize>,
    is_reached: Vec<bool>,
    /// Per item: how many of `reached` are folded into its summary, and the
    /// summary of its results from them.
    summaries: Vec<(usize, Summary)>,
}

/// What applying an item gives from a set of states.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Summary {
    /// The set is empty.
    Nothing,
    /// The same from each: the next state, or None where it cannot apply.
    Same(Option<usize>),
    Varies,
}

impl<'m, 'i, 'h, M: Model> Steps<'m, 'i, 'h, M> {
    fn new(model: &'m M, items: &'i [Item<'h, M::Input, M::Output>]) -> Self {
        let mut steps = Steps {
            model,
            items,
            states: Vec::new(),
            numbers: QuickMap::default(),
            results: QuickMap::default(),
            reached: Vec::new(),
            is_reached: Vec::new(),
            summaries: vec![(0, Summary::Nothing); items.len()],
        };
        steps.number(model.init());
        steps
    }

    fn number(&mut self, state: M::State) -> usize {
        if let Some(&n) = self.numbers.get(&state) {
            return n;
        }
        self.numbers.insert(state.clone(), self.states.len());
        self.states.push(state);
        self.states.len() - 1
    }

    /// The state after applying `item` to `state`, if the model allows it.
    fn apply(&mut self, state: usize, item: usize) -> Option<usize> {
        if let Some(&result) = self.results.get(&(state, item)) {
            return result;
        }
        let it = &self.items[item];
        let next = self.model.step(&self.states[state], &it.op.input, it.output());
        let result = next.map(|next| self.number(next));
        if self.results.len() >= RESULTS_KEPT {
            self.results.clear();
        }
        self.results.insert((state, item), result);
        result
    }

    /// Records that placing an optional item led to `state`.
    fn reach(&mut self, state: usize) {
        if self.is_reached.len() <= state {
            self.is_reached.resize(state + 1, false);
        }
        if !self.is_reached[state] {
            self.is_reached[state] = true;
            self.reached.push(state);
        }
    }

    /// What applying `item` gives from every reached state.
    fn summary(&mut self, item: usize) -> Summary {
        let (mut folded, mut summary) = self.summaries[item];
        while folded < self.reached.len() && summary != Summary::Varies {
            let result = self.apply(self.reached[folded], item);
            summary = match summary {
                Summary::Nothing => Summary::Same(result),
                Summary::Same(same) if same == result => summary,
                _ => Summary::Varies,
            };
            folded += 1;
        }
        self.summaries[item] = (self.reached.len(), summary);
        summary
    }

    /// Whether `item` might observe an optional item placed in `state`: unless
    /// it gives one same result from every reached state, and that is also
    /// what it gives from `state` (or it applies to none of them), it gives
    /// the same after any optional item as before it.
    fn sensitive(&mut self, item: usize, state: usize) -> bool {
        match self.summary(item) {
            Summary::Same(None) => false,
            Summary::Same(Some(result)) => self.apply(state, item) != Some(result),
            Summary::Nothing | Summary::Varies => true,
        }
    }

    /// Whether `item` could be placed right after optional item `placed`
    /// moved `state` to `next` (a reached state), `now` being as in `search`
    /// before that.
    fn observes(
        &mut self,
        item: usize,
        placed: usize,
        state: usize,
        next: usize,
        now: u64,
    ) -> bool {
        let it = &self.items[item];
        if it.optional && it.until < u128::from(now.max(self.items[placed].op.call)) {
            return false;
        }
        let Some(after) = self.apply(next, item) else {
            return false;
        };
        // An optional item that changes nothing is never placed.
        if it.optional && after == next {
            return false;
        }
        !self.overlooks(item, placed, state, now, after)
    }

    /// Whether `item`, giving `next` when placed right after optional item
    /// `placed`, which was placed in `prior` (`prior_now` being as in
    /// `search` there), does not depend on it. Either it gives the same from
    /// `prior`, so placing `placed` first was pointless and the branch without
    /// it is explored from the parent; or `item` is required and could have
    /// gone first with `placed` right after it, reaching this very
    /// configuration, which the parent explores first as it tries required
    /// items before optional ones. Without this, every unanswered write would
    /// be tried before every later op, multiplying the search.
    fn overlooks(
        &mut self,
        item: usize,
        placed: usize,
        prior: usize,
        prior_now: u64,
        next: usize,
    ) -> bool {
        let it = &self.items[item];
        let swappable =
            !it.optional && self.items[placed].until >= u128::from(prior_now.max(it.op.call));
        match self.apply(prior, item) {
            Some(alone) if alone == next => true,
            Some(alone) if swappable => self.apply(alone, placed) == Some(next),
            _ => false,
        }
    }

    /// The state after placing `item`, or None if the model forbids it here or
    /// if it does not depend on the optional item placed just before (see
    /// `overlooks`).
    fn next_state(&mut self, item: usize, state: usize, stack: &[Frame]) -> Option<usize> {
        let next = self.apply(state, item)?;
        match stack.last() {
            Some(top)
                if top.optional
                    && self.overlooks(item, top.item, top.prior, top.prior_now, next) =>
            {
                None
            }
            _ => Some(next),
        }
    }
}

/// Explored configurations: for each (placed required ops, state), the
/// minimal sets of placed optional ops seen with it. Having placed more
/// optional ops only removes options, so a superset of a seen set cannot
/// succeed where the seen one did not.
type Memo = QuickMap<(Bits, usize), Vec<Bits>>;

fn admit(memo: &mut Memo, required: &Bits, optional: &Bits, state: usize) -> bool {
    match memo.entry((required.clone(), state)) {
        Entry::Occupied(mut seen) => {
            let seen = seen.get_mut();
            if seen.iter().any(|s| s.is_subset(optional)) {
                return false;
            }
            seen.retain(|s| !optional.is_subset(s));
            seen.push(optional.clone());
            true
        }
        Entry::Vacant(slot) => {
            slot.insert(vec![optional.clone()]);
            true
        }
    }
}

/// Searches for a linearization of `items` (one part): every required item
/// placed between its call and its return, optional ones placed by their
/// `until` or left out.
fn search<M: Model>(
    model: &M,
    items: &[Item<'_, M::Input, M::Output>],
    deadline: Option<Instant>,
) -> Outcome<M::State> {
    let mut slot = vec![0; items.len()];
    let (mut required_count, mut optional_count) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let counter = if item.optional { &mut optional_count } else { &mut required_count };
        slot[i] = *counter;
        *counter += 1;
    }

    // Required items are placed by walking their call and return entries in
    // time order. A call sorts before a return at the same instant, so ops
    // that merely touch count as concurrent.
    let mut entries: Vec<(u128, bool, usize)> = Vec::with_capacity(2 * required_count);
    for (i, item) in items.iter().enumerate().filter(|(_, item)| !item.optional) {
        entries.push((u128::from(item.op.call), false, i));
        entries.push((item.until, true, i));
    }
    entries.sort_unstable();
    let entry_item: Vec<usize> = entries.iter().map(|e| e.2).collect();
    let entry_time: Vec<u128> = entries.iter().map(|e| e.0).chain([u128::MAX]).collect();
    let mut return_node: Vec<Option<usize>> = vec![None; entries.len()];
    let mut call_node = vec![0; items.len()];
    for (node, &(_, is_return, i)) in entries.iter().enumerate() {
        if is_return {
            return_node[call_node[i]] = Some(node);
        } else {
            call_node[i] = node;
        }
    }
    let mut required = Links::new(entries.len());

    // Optional items never block the walk, so they sit in a list of their own.
    let mut pending: Vec<(u64, usize)> = items
        .iter()
        .enumerate()
        .filter(|(_, item)| item.optional)
        .map(|(i, item)| (item.op.call, i))
        .collect();
    pending.sort_unstable();
    let mut optional = Links::new(pending.len());

    let mut steps = Steps::new(model, items);
    let mut state = 0;
    let mut placed_required = Bits::new(required_count);
    let mut placed_optional = Bits::new(optional_count);
    let mut left = required_count;
    let mut stack: Vec<Frame> = Vec::new();
    let mut memo = Memo::default();
    let mut watch = Watch { owner: None, reached: 0, items: Vec::new() };
    let mut serial: u64 = 0;
    let mut best = Failure { prefix: Vec::new(), states: Vec::new(), blocked: None };
    let mut deepest = 0;
    // The latest call among placed ops: whatever is placed next takes effect
    // no earlier, so optional items with an earlier `until` are out.
    let mut now: u64 = 0;
    // The earliest return entry among unplaced required items; optional items
    // called after it cannot be placed yet.
    let mut frontier = required.sentinel();
    let mut cursor = Cursor::Required(required.first());
    let mut count: u64 = 0;

    loop {
        // Optional items still unplaced may simply never have taken effect.
        if left == 0 {
            return Outcome::Linearizable(stack.iter().map(|f| f.item).collect());
        }
        if count.is_multiple_of(CLOCK_EVERY) && deadline.is_some_and(|d| Instant::now() >= d) {
            return Outcome::OutOfTime { deepest, blocked: best.blocked };
        }
        count += 1;

        match cursor {
            Cursor::Required(node) => {
                let Some(ret) = return_node.get(node).copied().flatten() else {
                    // A return (or the end): every item called before it was tried.
                    frontier = node;
                    cursor = Cursor::Optional(optional.first());
                    continue;
                };
                let i = entry_item[node];
                if let Some(next) = steps.next_state(i, state, &stack) {
                    placed_required.insert(slot[i]);
                    if admit(&mut memo, &placed_required, &placed_optional, next) {
                        serial += 1;
                        stack.push(Frame {
                            serial,
                            item: i,
                            node,
                            optional: false,
                            prior: state,
                            prior_now: now,
                            frontier,
                        });
                        state = next;
                        deepest = deepest.max(stack.len());
                        now = now.max(items[i].op.call);
                        required.unlink(node);
                        required.unlink(ret);
                        left -= 1;
                        cursor = Cursor::Required(required.first());
                        continue;
                    }
                    placed_required.remove(slot[i]);
                }
                cursor = Cursor::Required(required.next[node]);
            }
            Cursor::Optional(node) => {
                if node != optional.sentinel()
                    && u128::from(pending[node].0) <= entry_time[frontier]
                {
                    let i = pending[node].1;
                    // Taking effect without changing the state achieves
                    // nothing that leaving the op out does not.
                    let next = (items[i].until >= u128::from(now))
                        .then(|| steps.next_state(i, state, &stack))
                        .flatten()
                        .filter(|&next| next != state);
                    if let Some(next) = next {
                        steps.reach(next);
                        let view = Candidates {
                            entry_item: &entry_item,
                            return_node: &return_node,
                            required: &required,
                            optional: &optional,
                            pending: &pending,
                            frontier_time: entry_time[frontier],
                        };
                        let owner = (stack.len(), stack.last().map_or(0, |top| top.serial));
                        watch.refresh(&mut steps, &view, owner, state, now);
                        // Placing it leads straight to a dead end unless some
                        // candidate then observes its effect.
                        let then = now.max(items[i].op.call);
                        let seen = watch
                            .items
                            .iter()
                            .any(|&q| q != i && steps.observes(q, i, state, next, now));
                        placed_optional.insert(slot[i]);
                        if seen && admit(&mut memo, &placed_required, &placed_optional, next) {
                            serial += 1;
                            stack.push(Frame {
                                serial,
                                item: i,
                                node,
                                optional: true,
                                prior: state,
                                prior_now: now,
                                frontier,
                            });
                            state = next;
                            deepest = deepest.max(stack.len());
                            now = then;
                            optional.unlink(node);
                            cursor = Cursor::Required(required.first());
                            continue;
                        }
                        placed_optional.remove(slot[i]);
                    }
                    cursor = Cursor::Optional(optional.next[node]);
                    continue;
                }

                // Dead end: the item returning at the frontier cannot be placed.
                // Right after an optional item it only shows that placing that
                // item did not help, which is not worth reporting.
                if stack.last().is_none_or(|top| !top.optional) {
                    note_dead_end(&mut best, &stack, state, entry_item.get(frontier).copied());
                }
                let Some(frame) = stack.pop() else {
                    let states = best.states.iter().map(|&n| steps.states[n].clone()).collect();
                    return Outcome::Violation(Failure {
                        prefix: best.prefix,
                        states,
                        blocked: best.blocked,
                    });
                };
                state = frame.prior;
                now = frame.prior_now;
                frontier = frame.frontier;
                if frame.optional {
                    placed_optional.remove(slot[frame.item]);
                    optional.relink(frame.node);
                    cursor = Cursor::Optional(optional.next[frame.node]);
                } else {
                    placed_required.remove(slot[frame.item]);
                    if let Some(ret) = return_node[frame.node] {
                        required.relink(ret);
                    }
                    required.relink(frame.node);
                    left += 1;
                    cursor = Cursor::Required(required.next[frame.node]);
                }
            }
        }
    }
}

/// The candidates at one configuration that might observe an optional item
/// placed there (see `gather`), kept while that configuration is explored.
struct Watch {
    /// The configuration: its depth and its last placement's serial.
    owner: Option<(usize, u64)>,
    /// How many reached states the list accounts for.
    reached: usize,
    items: Vec<usize>,
}

impl Watch {
    /// Brings the list up to date for the configuration `owner` (see `gather`).
    fn refresh<M: Model>(
        &mut self,
        steps: &mut Steps<'_, '_, '_, M>,
        view: &Candidates<'_>,
        owner: (usize, u64),
        state: usize,
        now: u64,
    ) {
        if self.owner != Some(owner) || self.reached != steps.reached.len() {
            gather(steps, view, state, now, &mut self.items);
            self.owner = Some(owner);
            self.reached = steps.reached.len();
        }
    }
}

/// What `gather` needs to see of a configuration.
struct Candidates<'s> {
    entry_item: &'s [usize],
    return_node: &'s [Option<usize>],
    required: &'s Links,
    optional: &'s Links,
    pending: &'s [(u64, usize)],
    frontier_time: u128,
}

/// Collects into `out` the candidates at a configuration (in `state`, with
/// `now` as in `search`) that might observe an optional item placed there:
/// those `Steps::sensitive` at `state`. The others give the same result
/// after any optional item as before it, so `Steps::next_state` would turn
/// them down. Checking every pair of optional item and candidate instead
/// costs the square of the number of unanswered requests at every dead end.
fn gather<M: Model>(
    steps: &mut Steps<'_, '_, '_, M>,
    view: &Candidates<'_>,
    state: usize,
    now: u64,
    out: &mut Vec<usize>,
) {
    out.clear();
    // Required candidates: the calls before the frontier.
    let mut node = view.required.first();
    while view.return_node.get(node).copied().flatten().is_some() {
        let i = view.entry_item[node];
        if steps.sensitive(i, state) {
            out.push(i);
        }
        node = view.required.next[node];
    }
    let mut node = view.optional.first();
    while node != view.optional.sentinel() && u128::from(view.pending[node].0) <= view.frontier_time
    {
        let i = view.pending[node].1;
        if steps.items[i].until >= u128::from(now) && steps.sensitive(i, state) {
            out.push(i);
        }
        node = view.optional.next[node];
    }
}

/// Keeps in `best` the deepest dead end so far (states by number), with up to
/// `STATES_SHOWN` states reached at that depth.
fn note_dead_end(best: &mut Failure<usize>, stack: &[Frame], state: usize, blocked: Option<usize>) {
    let depth = stack.len();
    if depth > best.prefix.len() || best.states.is_empty() {
        *best = Failure {
            prefix: stack.iter().map(|f| f.item).collect(),
            states: vec![state],
            blocked,
        };
    } else if depth == best.prefix.len()
        && best.states.len() < STATES_SHOWN
        && !best.states.contains(&state)
    {
        best.states.push(state);
    }
}

/// How the ops left out of a shrunk sub-history are treated when checking it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leeway {
    /// As [`Item::within_interval`].
    WithinInterval,
    /// As [`Item::after_call`].
    AfterCall,
}

impl Leeway {
    fn item<'h, I, O>(self, op: &'h Operation<I, O>) -> Item<'h, I, O> {
        match self {
            Leeway::WithinInterval => Item::within_interval(op),
            Leeway::AfterCall => Item::after_call(op),
        }
    }
}

/// The result of shrinking a failing part, as indices into the part.
struct Shrunk<S> {
    /// The ops that keep their results.
    kept: Vec<usize>,
    /// Where the search got stuck with the other ops' results forgotten.
    failure: Failure<S>,
    /// How the other ops were treated in that search.
    leeway: Leeway,
    complete: bool,
}

/// Shrinks a failing part to a small sub-history that fails even with the
/// results of all other ops forgotten, which makes it a proof that the whole
/// part fails. Plain removal would not: dropping the write a stale read saw
/// leaves a "read of a value never written" that says nothing about the
/// history.
///
/// Shrinking with other ops confined to their intervals is cheap, as each can
/// then be placed only in a short window, but the result may lean on a
/// dropped write that happened early and could not move. So that sub-history
/// is then checked with the others free to take effect at any time after
/// their call; while it passes, the dropped ops that the passing order placed
/// after their return are restored; and a last pass shrinks again under that
/// stricter rule, now cheap because few ops are kept.
fn shrink<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    kept: Vec<bool>,
    failure: Failure<M::State>,
    deadline: Option<Instant>,
) -> Shrunk<M::State> {
    let (mut kept, mut failure) = (kept, failure);
    // Starting from a window around the op that could not be placed saves
    // many trials and steers the result towards that op's story.
    if !kept.contains(&false) {
        if let Some(blocked) = failure.blocked {
            if let Some(found) = localize(model, ops, blocked, deadline) {
                (kept, failure) = found;
            }
        }
    }
    let narrow = delta_debug(model, ops, kept, failure, Leeway::WithinInterval, deadline);
    if !narrow.complete {
        return narrow;
    }
    let mut kept = vec![false; ops.len()];
    for &i in &narrow.kept {
        kept[i] = true;
    }
    loop {
        let trial = trial_items(ops, &kept, Leeway::AfterCall);
        match search(model, &trial, deadline) {
            Outcome::Violation(failure) => {
                return delta_debug(model, ops, kept, failure, Leeway::AfterCall, deadline)
            }
            Outcome::OutOfTime { .. } => return Shrunk { complete: false, ..narrow },
            Outcome::Linearizable(order) => {
                let mut now = 0;
                let mut restored = false;
                for i in order {
                    now = ops[i].call.max(now);
                    if !kept[i] && ops[i].output.is_some() && u128::from(now) > return_time(ops[i])
                    {
                        kept[i] = true;
                        restored = true;
                    }
                }
                // Only reachable if the two searches disagree; the narrow result stands.
                if !restored {
                    return narrow;
                }
            }
        }
    }
}

/// Steps back, in ops finished before it was called, that the first window
/// around an op reaches; each next window reaches four times as far.
const FIRST_REACH: usize = 8;

/// Looks for a violation among the ops around `blocked`, the op a search
/// could not place: those called by its return and returning no earlier than
/// the window's start, with every other op's result forgotten (as in
/// [`Item::within_interval`]). A failing window proves the whole part fails,
/// and is much cheaper to search than a long part. Windows reach further back
/// each time, up to everything called by the blocked op's return, within a
/// quarter of the time left: a window that takes longer will not be followed
/// by a faster, larger one.
fn localize<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    blocked: usize,
    deadline: Option<Instant>,
) -> Option<(Vec<bool>, Failure<M::State>)> {
    let end = return_time(ops[blocked]);
    let begin = u128::from(ops[blocked].call);
    let mut earlier: Vec<u128> =
        ops.iter().map(|op| return_time(op)).filter(|&ret| ret < begin).collect();
    earlier.sort_unstable_by(|a, b| b.cmp(a));
    let until = share(deadline, 4);
    let mut reach = FIRST_REACH;
    loop {
        let from = earlier.get(reach - 1).copied().unwrap_or(0);
        let kept: Vec<bool> =
            ops.iter().map(|op| u128::from(op.call) <= end && return_time(op) >= from).collect();
        if kept.contains(&false) {
            let trial = trial_items(ops, &kept, Leeway::WithinInterval);
            match search(model, &trial, until) {
                Outcome::Violation(failure) => return Some((kept, failure)),
                Outcome::OutOfTime { .. } => return None,
                Outcome::Linearizable(_) => {}
            }
        }
        if reach >= earlier.len() {
            return None;
        }
        reach *= 4;
    }
}

/// The instant a `1/parts` share of the time left before `deadline` ends.
fn share(deadline: Option<Instant>, parts: u32) -> Option<Instant> {
    deadline.map(|deadline| {
        let now = Instant::now();
        now + deadline.saturating_duration_since(now) / parts
    })
}

fn trial_items<'h, I, O>(
    ops: &[&'h Operation<I, O>],
    kept: &[bool],
    leeway: Leeway,
) -> Vec<Item<'h, I, O>> {
    (0..ops.len())
        .map(|i| if kept[i] { Item::recorded(ops[i]) } else { leeway.item(ops[i]) })
        .collect()
}

/// Delta debugging: drops windows of kept ops, halving the window size down
/// to single ops, as long as the part still fails with the dropped ops'
/// results forgotten. `failure` belongs to the starting point. Windows are
/// tried from the end, so reads go before the earlier writes they depend on.
fn delta_debug<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    mut kept: Vec<bool>,
    mut failure: Failure<M::State>,
    leeway: Leeway,
    deadline: Option<Instant>,
) -> Shrunk<M::State> {
    let mut count = kept.iter().filter(|&&k| k).count();
    let mut chunk = (count / 2).max(1);
    let finish = |kept: &[bool], failure, complete| Shrunk {
        kept: (0..kept.len()).filter(|&i| kept[i]).collect(),
        failure,
        leeway,
        complete,
    };
    loop {
        let mut removed = false;
        // How many kept ops, counted from the end, were tried and must stay.
        let mut tried = 0;
        while tried < count && count > 1 {
            let live: Vec<usize> = (0..ops.len()).filter(|&i| kept[i]).collect();
            let window = &live[count - (tried + chunk).min(count)..count - tried];
            let mut trial_kept = kept.clone();
            for &i in window {
                trial_kept[i] = false;
            }
            match search(model, &trial_items(ops, &trial_kept, leeway), deadline) {
                Outcome::Violation(found) => {
                    count -= window.len();
                    kept = trial_kept;
                    failure = found;
                    removed = true;
                }
                Outcome::Linearizable(_) => tried += window.len(),
                Outcome::OutOfTime { .. } => return finish(&kept, failure, false),
            }
        }
        if chunk == 1 && !removed {
            return finish(&kept, failure, true);
        }
        chunk = (chunk / 2).clamp(1, (count / 2).max(1));
    }
}

/// Where shrinking a failing part starts.
enum Start<S> {
    /// The whole part failed; where its search got stuck.
    Whole(Failure<S>),
    /// The ops kept here failed with the others' results forgotten, as found
    /// by `localize` when searching the whole part took too long.
    Window(Vec<bool>, Failure<S>),
}

fn report<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    part: &[usize],
    label: &str,
    start: Start<M::State>,
    deadline: Option<Instant>,
) -> Verdict<M::Input, M::Output> {
    let ops: Vec<&Operation<M::Input, M::Output>> = part.iter().map(|&i| &history[i]).collect();
    let (kept, failure, whole) = match start {
        Start::Whole(failure) => {
            let whole = explain(&failure, &ops, |i| format!("history op {}", part[i]), false);
            (vec![true; ops.len()], failure, whole)
        }
        Start::Window(kept, failure) => {
            let window = kept.iter().filter(|&&k| k).count();
            let around = failure
                .blocked
                .map_or(String::new(), |i| format!(" around history op {}", part[i]));
            let whole = format!(
                "searching it all took too long, but a window of {window} operations{around} \
                 failed with the others' results forgotten"
            );
            (kept, failure, whole)
        }
    };
    let shrunk = shrink(model, &ops, kept, failure, deadline);
    let picked = &shrunk.kept;
    let sub: Vec<&Operation<M::Input, M::Output>> = picked.iter().map(|&i| ops[i]).collect();
    let indices: Vec<usize> = picked.iter().map(|&i| part[i]).collect();
    let name = |i: usize| format!("#{i} (history op {})", indices[i]);
    let own: Vec<Item<'_, M::Input, M::Output>> = sub.iter().map(|op| Item::recorded(op)).collect();
    let detail = match search(model, &own, deadline) {
        Outcome::Violation(f) => explain(&f, &sub, name, true),
        // Out of time: fall back on the last shrinking step's account.
        _ => {
            let mut position = vec![None; ops.len()];
            for (pos, &i) in picked.iter().enumerate() {
                position[i] = Some(pos);
            }
            explain(
                &shrunk.failure,
                &ops,
                |i| match position[i] {
                    Some(pos) => name(pos),
                    None => format!("history op {} (result ignored)", part[i]),
                },
                true,
            )
        }
    };
    let cut_short = if shrunk.complete { "" } else { " before the time budget ran out" };
    let leeway = match shrunk.leeway {
        Leeway::WithinInterval => "within its interval",
        Leeway::AfterCall => "at any time after its call",
    };
    let explanation = format!(
        "{label} ({} operations) is not linearizable. Shrunk{cut_short} to {} operations (history \
         indices {indices:?}), which fail even if each other operation of the part took effect \
         {leeway} or never: {detail}. In the whole part: {whole}.",
        ops.len(),
        sub.len(),
    );
    Verdict::NotLinearizable { ops: sub.into_iter().cloned().collect(), explanation }
}

fn describe<I: Debug, O: Debug>(op: &Operation<I, O>) -> String {
    let output = op.output.as_ref().map_or_else(|| "unknown".to_owned(), |o| format!("{o:?}"));
    let ret = op.ret.map_or_else(|| "never".to_owned(), |r| r.to_string());
    format!("client {} {:?} -> {output} (call {}, return {ret})", op.client, op.input, op.call)
}

fn explain<I: Debug, O: Debug, S: Debug>(
    failure: &Failure<S>,
    ops: &[&Operation<I, O>],
    name: impl Fn(usize) -> String,
    list_prefix: bool,
) -> String {
    let mut text = String::new();
    let depth = failure.prefix.len();
    if depth == 0 {
        let _ =
            write!(text, "no operation can be linearized first from state {:?}", failure.states);
    } else {
        let _ =
            write!(text, "the longest linearizable prefix has {depth} of {} operations", ops.len());
        if list_prefix {
            // The ops just before the failure matter most; elide the earliest.
            let skipped = depth.saturating_sub(PREFIX_SHOWN);
            let shown: Vec<String> = failure.prefix[skipped..]
                .iter()
                .map(|&i| format!("{}: {}", name(i), describe(ops[i])))
                .collect();
            let more = if skipped > 0 { "...; " } else { "" };
            let _ = write!(text, " [{more}{}]", shown.join("; "));
        }
        let _ = write!(text, ", after which the state is one of {:?}", failure.states);
    }
    if let Some(op) = failure.blocked {
        let _ = write!(
            text,
            "; then {}: {} could not be linearized before it returned",
            name(op),
            describe(ops[op])
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    type Op = Operation<KvInput, KvOutput>;

    const BUDGET: Duration = Duration::from_secs(20);

    fn get(client: u64, key: &str, call: u64, ret: u64, value: Option<&str>) -> Op {
        Operation {
            client,
            input: KvInput::Get { key: key.into() },
            call,
            output: Some(KvOutput::Get(value.map(Into::into))),
            ret: Some(ret),
        }
    }

    fn put(client: u64, key: &str, value: &str, call: u64, ret: u64) -> Op {
        Operation {
            client,
            input: KvInput::Put { key: key.into(), value: value.into() },
            call,
            output: Some(KvOutput::Put),
            ret: Some(ret),
        }
    }

    fn cas(
        client: u64,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ok: bool,
        call: u64,
        ret: u64,
    ) -> Op {
        Operation {
            client,
            input: KvInput::Cas {
                key: key.into(),
                expected: expected.map(Into::into),
                new: new.into(),
            },
            call,
            output: Some(KvOutput::Cas(ok)),
            ret: Some(ret),
        }
    }

    fn delete(client: u64, key: &str, call: u64, ret: u64) -> Op {
        Operation {
            client,
            input: KvInput::Delete { key: key.into() },
            call,
            output: Some(KvOutput::Delete),
            ret: Some(ret),
        }
    }

    /// Forgets the result of `op`, as after a timeout at `ret` (None: no answer ever).
    fn unknown(op: Op, ret: Option<u64>) -> Op {
        Operation { output: None, ret, ..op }
    }

    fn verdict(history: &[Op]) -> Verdict<KvInput, KvOutput> {
        check(&KvModel, history, BUDGET)
    }

    fn assert_linearizable(history: &[Op]) {
        let v = verdict(history);
        assert!(v.is_linearizable(), "expected linearizable, got {v:#?}");
    }

    fn assert_violation(history: &[Op]) -> (Vec<Op>, String) {
        match verdict(history) {
            Verdict::NotLinearizable { ops, explanation } => (ops, explanation),
            other => panic!("expected a violation, got {other:#?}"),
        }
    }

    // --- KvModel -----------------------------------------------------------

    #[test]
    fn kv_step_follows_register_semantics() {
        let m = KvModel;
        let a = Some("a".to_owned());
        let get = KvInput::Get { key: "k".into() };
        assert_eq!(m.step(&None, &get, Some(&KvOutput::Get(None))), Some(None));
        assert_eq!(m.step(&None, &get, Some(&KvOutput::Get(a.clone()))), None);
        assert_eq!(m.step(&a, &get, None), Some(a.clone()));
        let put = KvInput::Put { key: "k".into(), value: "a".into() };
        assert_eq!(m.step(&None, &put, Some(&KvOutput::Put)), Some(a.clone()));
        assert_eq!(m.step(&None, &put, None), Some(a.clone()));
        let swap = KvInput::Cas { key: "k".into(), expected: a.clone(), new: "b".into() };
        assert_eq!(m.step(&a, &swap, Some(&KvOutput::Cas(true))), Some(Some("b".into())));
        assert_eq!(m.step(&None, &swap, Some(&KvOutput::Cas(true))), None);
        assert_eq!(m.step(&None, &swap, Some(&KvOutput::Cas(false))), Some(None));
        assert_eq!(m.step(&a, &swap, Some(&KvOutput::Cas(false))), None);
        assert_eq!(m.step(&a, &swap, None), Some(Some("b".into())));
        assert_eq!(m.step(&None, &swap, None), None);
        let del = KvInput::Delete { key: "k".into() };
        assert_eq!(m.step(&a, &del, Some(&KvOutput::Delete)), Some(None));
        // Mismatched output kinds are never allowed.
        assert_eq!(m.step(&a, &del, Some(&KvOutput::Put)), None);
        assert_eq!(m.step(&a, &get, Some(&KvOutput::Cas(true))), None);
    }

    #[test]
    fn kv_partitions_by_key_in_order_of_first_use() {
        let h = vec![
            put(0, "b", "1", 0, 1),
            put(0, "a", "1", 2, 3),
            get(1, "b", 4, 5, Some("1")),
            delete(1, "c", 6, 7),
        ];
        assert_eq!(KvModel.partition(&h), vec![vec![0, 2], vec![1], vec![3]]);
    }

    // --- Basic verdicts ----------------------------------------------------

    #[test]
    fn empty_history_is_linearizable() {
        assert_linearizable(&[]);
    }

    #[test]
    fn sequential_history_passes() {
        assert_linearizable(&[
            get(0, "k", 0, 1, None),
            put(0, "k", "a", 2, 3),
            get(1, "k", 4, 5, Some("a")),
            cas(1, "k", Some("a"), "b", true, 6, 7),
            cas(0, "k", Some("a"), "c", false, 8, 9),
            get(0, "k", 10, 11, Some("b")),
            delete(1, "k", 12, 13),
            get(0, "k", 14, 15, None),
        ]);
    }

    #[test]
    fn history_order_in_the_slice_does_not_matter() {
        let mut h = vec![
            put(0, "k", "a", 0, 10),
            get(1, "k", 20, 30, Some("a")),
            put(0, "k", "b", 40, 50),
            get(1, "k", 60, 70, Some("b")),
        ];
        h.reverse();
        assert_linearizable(&h);
    }

    #[test]
    fn concurrent_writes_may_take_effect_in_either_order() {
        for winner in ["a", "b"] {
            assert_linearizable(&[
                put(0, "k", "a", 0, 10),
                put(1, "k", "b", 2, 12),
                get(2, "k", 20, 30, Some(winner)),
                get(3, "k", 40, 50, Some(winner)),
            ]);
        }
    }

    #[test]
    fn read_overlapping_a_write_may_see_old_or_new_value() {
        for seen in [None, Some("a")] {
            assert_linearizable(&[put(0, "k", "a", 0, 10), get(1, "k", 5, 15, seen)]);
        }
        // Two overlapping reads may even see new then old, since both overlap the write.
        assert_linearizable(&[
            put(0, "k", "a", 0, 100),
            get(1, "k", 10, 20, Some("a")),
            get(2, "k", 5, 30, None),
        ]);
    }

    #[test]
    fn ops_touching_at_one_instant_count_as_concurrent() {
        assert_linearizable(&[put(0, "k", "a", 0, 10), get(1, "k", 10, 20, None)]);
        assert_violation(&[put(0, "k", "a", 0, 10), get(1, "k", 11, 20, None)]);
    }

    #[test]
    fn stale_read_is_rejected() {
        let (ops, explanation) = assert_violation(&[
            put(0, "k", "1", 0, 10),
            put(1, "k", "2", 20, 30),
            get(2, "k", 40, 50, Some("1")),
        ]);
        assert_eq!(ops.len(), 3, "all three ops are needed to show the stale read: {ops:?}");
        assert!(explanation.contains("could not be linearized"), "{explanation}");
        assert!(explanation.contains("Get"), "{explanation}");
    }

    #[test]
    fn lost_write_is_rejected() {
        // Both writes were acknowledged, yet later reads keep seeing the older value.
        assert_violation(&[
            put(0, "k", "old", 0, 10),
            put(1, "k", "new", 20, 30),
            get(2, "k", 40, 50, Some("old")),
            get(3, "k", 60, 70, Some("old")),
        ]);
        // An acknowledged first write that later reads never see.
        assert_violation(&[
            put(0, "k", "a", 0, 10),
            get(1, "k", 20, 30, None),
            get(1, "k", 40, 50, None),
        ]);
    }

    #[test]
    fn read_of_a_value_never_written_is_rejected() {
        let (ops, explanation) =
            assert_violation(&[put(0, "k", "a", 0, 10), get(1, "k", 20, 30, Some("ghost"))]);
        assert_eq!(ops, vec![get(1, "k", 20, 30, Some("ghost"))]);
        assert!(explanation.contains("ghost"), "{explanation}");
    }

    #[test]
    fn double_cas_success_from_one_expected_value_is_rejected() {
        // Sequential and overlapping variants: only one of them can have swapped.
        assert_violation(&[
            put(0, "k", "a", 0, 10),
            cas(1, "k", Some("a"), "b", true, 20, 30),
            cas(2, "k", Some("a"), "c", true, 40, 50),
        ]);
        assert_violation(&[
            put(0, "k", "a", 0, 10),
            cas(1, "k", Some("a"), "b", true, 20, 50),
            cas(2, "k", Some("a"), "c", true, 25, 45),
        ]);
        // A write in between makes the second swap legal.
        assert_linearizable(&[
            put(0, "k", "a", 0, 10),
            cas(1, "k", Some("a"), "b", true, 20, 30),
            put(0, "k", "a", 35, 38),
            cas(2, "k", Some("a"), "c", true, 40, 50),
        ]);
    }

    #[test]
    fn failed_cas_must_see_a_different_value() {
        assert_violation(&[put(0, "k", "a", 0, 10), cas(1, "k", Some("a"), "b", false, 20, 30)]);
        assert_linearizable(&[put(0, "k", "a", 0, 10), cas(1, "k", Some("a"), "b", false, 5, 30)]);
    }

    #[test]
    fn unknown_cas_may_explain_a_later_read() {
        let swap = unknown(cas(1, "k", Some("a"), "b", true, 20, 0), Some(30));
        for seen in ["b", "a"] {
            assert_linearizable(&[
                put(0, "k", "a", 0, 10),
                swap.clone(),
                get(2, "k", 40, 50, Some(seen)),
            ]);
        }
        // The swap may land after the timeout, even after a read of the old value.
        assert_linearizable(&[
            put(0, "k", "a", 0, 10),
            swap.clone(),
            get(2, "k", 40, 50, Some("a")),
            get(2, "k", 60, 70, Some("b")),
        ]);
        // But it cannot have swapped from a value it did not expect.
        assert_violation(&[put(0, "k", "z", 0, 10), swap, get(2, "k", 40, 50, Some("b"))]);
    }

    #[test]
    fn write_that_never_returned_may_be_read_later() {
        let pending = unknown(put(1, "k", "b", 20, 0), None);
        assert_linearizable(&[
            put(0, "k", "a", 0, 10),
            pending.clone(),
            get(2, "k", 40, 50, Some("b")),
        ]);
        // Or it may never take effect.
        assert_linearizable(&[
            put(0, "k", "a", 0, 10),
            pending.clone(),
            get(2, "k", 40, 50, Some("a")),
        ]);
        // Once seen, it cannot be unseen.
        assert_violation(&[
            put(0, "k", "a", 0, 10),
            pending.clone(),
            get(2, "k", 40, 50, Some("b")),
            get(2, "k", 60, 70, Some("a")),
        ]);
        // Nor can it take effect before its call.
        assert_violation(&[put(0, "k", "a", 0, 10), get(2, "k", 12, 15, Some("b")), pending]);
    }

    #[test]
    fn unknown_read_constrains_nothing() {
        let blind = unknown(get(1, "k", 20, 30, Some("never-written")), Some(30));
        assert_linearizable(&[
            put(0, "k", "a", 0, 10),
            blind.clone(),
            get(2, "k", 40, 50, Some("a")),
        ]);
        assert_linearizable(&[unknown(blind, None)]);
    }

    #[test]
    fn known_result_that_never_returned_must_still_be_placed() {
        let read = Operation { ret: None, ..get(1, "k", 20, 0, Some("zz")) };
        assert_violation(&[put(0, "k", "a", 0, 10), read.clone()]);
        assert_linearizable(&[put(0, "k", "a", 0, 10), read, put(2, "k", "zz", 30, 40)]);
    }

    #[test]
    fn return_before_call_is_treated_as_instantaneous() {
        assert_linearizable(&[put(0, "k", "a", 10, 5), get(1, "k", 20, 30, Some("a"))]);
    }

    #[test]
    fn many_unanswered_writes_do_not_explode_the_search() {
        // Forty writes that never returned, read back in scrambled order, each
        // read overwritten by an acknowledged write in between.
        let mut h = vec![put(0, "k", "start", 0, 1)];
        for i in 0..40u64 {
            h.push(unknown(put(1 + i, "k", &format!("p{i}"), 2 + i, 0), None));
        }
        let mut t = 100;
        for i in 0..40u64 {
            let which = (i * 17) % 40;
            h.push(get(100, "k", t, t + 5, Some(&format!("p{which}"))));
            h.push(put(100, "k", &format!("w{i}"), t + 10, t + 15));
            t += 20;
        }
        let started = Instant::now();
        assert_linearizable(&h);
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());

        // The same history with one unanswered write read twice cannot be linearized.
        h.push(get(100, "k", t, t + 5, Some("p0")));
        let started = Instant::now();
        let (ops, _) = assert_violation(&h);
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(ops.len() <= 4, "{ops:#?}");
    }

    #[test]
    fn multi_key_history_with_one_bad_key_shrinks_to_that_key() {
        let mut h = Vec::new();
        let mut t = 0;
        for round in 0..30u64 {
            for key in ["a", "b", "c"] {
                let v = format!("{key}{round}");
                h.push(put(round % 3, key, &v, t, t + 7));
                h.push(get((round + 1) % 3, key, t + 3, t + 12, Some(&v)));
                t += 15;
            }
        }
        // Plant a stale read of key "b" after two later writes completed.
        let stale = get(9, "b", t + 1, t + 2, Some("b3"));
        h.insert(40, stale.clone());
        let (ops, explanation) = assert_violation(&h);
        assert!(ops.iter().all(|op| op.input.key() == "b"), "{ops:#?}");
        assert_eq!(ops.len(), 3, "{ops:#?}");
        assert!(ops.contains(&stale), "{ops:#?}");
        assert!(explanation.contains("part 2 of 3"), "{explanation}");
        assert!(explanation.contains("b3"), "{explanation}");
    }

    #[test]
    fn double_cas_in_a_multi_key_history_shrinks_to_the_two_swaps() {
        let mut h = Vec::new();
        for i in 0..20u64 {
            h.push(put(i % 4, "x", &format!("x{i}"), i * 10, i * 10 + 15));
            h.push(get(i % 4 + 4, "y", i * 10 + 2, i * 10 + 4, None));
        }
        let first = cas(8, "z", None, "z1", true, 50, 60);
        let second = cas(9, "z", None, "z2", true, 70, 80);
        h.extend([first.clone(), get(8, "z", 62, 65, Some("z1")), second.clone()]);
        let (ops, explanation) = assert_violation(&h);
        assert_eq!(ops, vec![first, second], "{explanation}");
    }

    #[test]
    fn explanation_names_the_blocked_op_and_states() {
        let (_, explanation) = assert_violation(&[
            put(0, "k", "1", 0, 10),
            put(1, "k", "2", 20, 30),
            get(2, "k", 40, 50, Some("1")),
        ]);
        assert!(
            explanation.contains("the longest linearizable prefix has 2 of 3 operations"),
            "{explanation}"
        );
        assert!(explanation.contains("Some(\"2\")"), "{explanation}");
        assert!(explanation.contains("client 2 Get"), "{explanation}");
    }

    #[test]
    fn verdicts_are_deterministic() {
        let h = planted(7, &Spec::SMALL).expect("a stale read can be planted");
        assert_eq!(verdict(&h), verdict(&h));
    }

    #[test]
    fn zero_budget_returns_unknown() {
        let h = generate(3, &Spec::SMALL);
        match check(&KvModel, &h, Duration::ZERO) {
            Verdict::Unknown { reason } => assert!(reason.contains("part 1 of"), "{reason}"),
            other => panic!("expected Unknown, got {other:#?}"),
        }
    }

    #[test]
    fn huge_budget_means_no_limit() {
        assert!(check(&KvModel, &generate(5, &Spec::SMALL), Duration::MAX).is_linearizable());
    }

    #[test]
    fn history_round_trips_through_json() {
        let h = generate(11, &Spec::SMALL);
        let json = serde_json::to_string(&h).expect("serialize");
        let back: Vec<Op> = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, h);
        let v = verdict(&planted(11, &Spec::SMALL).expect("plantable"));
        let back: Verdict<KvInput, KvOutput> =
            serde_json::from_str(&serde_json::to_string(&v).expect("serialize"))
                .expect("deserialize");
        assert_eq!(back, v);
    }

    /// Whether some order of some subset holding every required item is
    /// legal, by trying them all: a slow but obviously right reference.
    fn brute_force_items<M: Model>(model: &M, items: &[Item<'_, M::Input, M::Output>]) -> bool {
        fn place<M: Model>(
            model: &M,
            items: &[Item<'_, M::Input, M::Output>],
            used: &mut [bool],
            state: &M::State,
            now: u64,
        ) -> bool {
            if items.iter().zip(used.iter()).all(|(item, &u)| u || item.optional) {
                return true;
            }
            for (i, item) in items.iter().enumerate() {
                let at = now.max(item.op.call);
                if used[i] || u128::from(at) > item.until {
                    continue;
                }
                if let Some(next) = model.step(state, &item.op.input, item.output()) {
                    used[i] = true;
                    if place(model, items, used, &next, at) {
                        return true;
                    }
                    used[i] = false;
                }
            }
            false
        }
        place(model, items, &mut vec![false; items.len()], &model.init(), 0)
    }

    /// Replays a linearization the search returned, checking every rule.
    fn assert_legal_order(items: &[Item<'_, KvInput, KvOutput>], order: &[usize]) {
        let mut state = KvModel.init();
        let mut now = 0;
        for &i in order {
            now = items[i].op.call.max(now);
            assert!(u128::from(now) <= items[i].until, "{order:?}: item {i} placed too late");
            state =
                KvModel.step(&state, &items[i].op.input, items[i].output()).expect("legal step");
        }
        for (i, item) in items.iter().enumerate() {
            assert!(item.optional || order.contains(&i), "{order:?}: required item {i} left out");
        }
    }

    fn brute_force<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> bool {
        let items: Vec<Item<'_, M::Input, M::Output>> =
            history.iter().map(Item::recorded).collect();
        brute_force_items(model, &items)
    }

    fn tiny_history(rng: &mut Lcg) -> Vec<Op> {
        let values = [None, Some("a"), Some("b"), Some("c")];
        let pick = |rng: &mut Lcg| values[rng.below(4) as usize];
        let n = 1 + rng.below(7);
        (0..n)
            .map(|client| {
                let call = rng.below(20);
                let ret = call + rng.below(15);
                let mut op = match rng.below(4) {
                    0 => get(client, "k", call, ret, pick(rng)),
                    1 => put(client, "k", pick(rng).unwrap_or("a"), call, ret),
                    2 => cas(
                        client,
                        "k",
                        pick(rng),
                        pick(rng).unwrap_or("b"),
                        rng.percent(50),
                        call,
                        ret,
                    ),
                    _ => delete(client, "k", call, ret),
                };
                if rng.percent(20) {
                    op.output = None;
                    if rng.percent(30) {
                        op.ret = None;
                    }
                }
                op
            })
            .collect()
    }

    #[test]
    fn verdicts_agree_with_brute_force_on_tiny_histories() {
        let mut rng = Lcg(2024);
        let (mut good, mut bad) = (0, 0);
        for case in 0..5_000 {
            let h = tiny_history(&mut rng);
            let expected = brute_force(&KvModel, &h);
            match verdict(&h) {
                Verdict::Linearizable => {
                    assert!(expected, "case {case}: accepted a bad history {h:#?}");
                    good += 1;
                }
                Verdict::NotLinearizable { ops, explanation } => {
                    assert!(
                        !expected,
                        "case {case}: rejected a good history {h:#?}\n{explanation}"
                    );
                    assert!(!brute_force(&KvModel, &ops), "case {case}: witness passes {ops:#?}");
                    // The witness still fails with every other op timed out.
                    assert!(explanation.contains("at any time after its call"), "{explanation}");
                    let relaxed: Vec<Op> = h
                        .iter()
                        .map(|op| {
                            if ops.contains(op) {
                                op.clone()
                            } else {
                                Operation { output: None, ..op.clone() }
                            }
                        })
                        .collect();
                    assert!(!brute_force(&KvModel, &relaxed), "case {case}: {ops:#?} in {h:#?}");
                    bad += 1;
                }
                other => panic!("case {case}: {other:#?}"),
            }
        }
        // Both kinds must be well represented for the comparison to mean much.
        assert!(good > 1_000 && bad > 1_000, "{good} linearizable, {bad} not");
    }

    #[test]
    fn search_with_forgotten_results_agrees_with_brute_force() {
        // The shrinking searches, where dropped ops may take effect within
        // their interval or at any time after their call.
        let mut rng = Lcg(99);
        for case in 0..3_000 {
            let h = tiny_history(&mut rng);
            let items: Vec<Item<'_, KvInput, KvOutput>> = h
                .iter()
                .map(|op| match rng.below(3) {
                    0 => Item::recorded(op),
                    1 => Item::within_interval(op),
                    _ => Item::after_call(op),
                })
                .collect();
            let found = match search(&KvModel, &items, None) {
                Outcome::Linearizable(order) => {
                    assert_legal_order(&items, &order);
                    true
                }
                _ => false,
            };
            assert_eq!(found, brute_force_items(&KvModel, &items), "case {case}: {h:#?}");
        }
    }

    #[test]
    fn counter_verdicts_agree_with_brute_force() {
        let mut rng = Lcg(77);
        for case in 0..2_000 {
            let n = 1 + rng.below(6);
            let h: Vec<Operation<i64, i64>> = (0..n)
                .map(|client| {
                    let call = rng.below(20);
                    let delta = 1 + rng.below(3) as i64;
                    let total = rng.below(10) as i64;
                    let mut op = add(client, delta, total, call, call + rng.below(15));
                    if rng.percent(25) {
                        op.output = None;
                    }
                    op
                })
                .collect();
            let v = check(&Counter, &h, BUDGET);
            assert_eq!(v.is_linearizable(), brute_force(&Counter, &h), "case {case}: {h:?} {v:?}");
        }
    }

    #[test]
    fn running_out_of_time_while_shrinking_still_reports_the_violation() {
        let h = [put(0, "k", "1", 0, 10), put(1, "k", "2", 20, 30), get(2, "k", 40, 50, Some("1"))];
        let ops: Vec<&Op> = h.iter().collect();
        let items: Vec<Item<'_, KvInput, KvOutput>> =
            ops.iter().map(|op| Item::recorded(op)).collect();
        let Outcome::Violation(failure) = search(&KvModel, &items, None) else {
            panic!("the history is not linearizable");
        };
        let expired = Some(Instant::now());
        match report(&KvModel, &h, &[0, 1, 2], "part 1 of 1", Start::Whole(failure), expired) {
            Verdict::NotLinearizable { ops, explanation } => {
                assert_eq!(ops.len(), 3);
                assert!(explanation.contains("before the time budget ran out"), "{explanation}");
            }
            other => panic!("{other:?}"),
        }
    }

    // --- A model relying on the default single partition -------------------

    /// A counter whose ops add to it and return the new total.
    struct Counter;

    impl Model for Counter {
        type State = i64;
        type Input = i64;
        type Output = i64;

        fn init(&self) -> i64 {
            0
        }

        fn step(&self, state: &i64, input: &i64, output: Option<&i64>) -> Option<i64> {
            let next = state + input;
            output.is_none_or(|&o| o == next).then_some(next)
        }
    }

    fn add(client: u64, delta: i64, total: i64, call: u64, ret: u64) -> Operation<i64, i64> {
        Operation { client, input: delta, call, output: Some(total), ret: Some(ret) }
    }

    #[test]
    fn default_partition_checks_the_whole_history() {
        let ok = [add(0, 1, 1, 0, 10), add(1, 2, 3, 5, 15), add(2, 3, 6, 20, 30)];
        assert!(check(&Counter, &ok, BUDGET).is_linearizable());
        let swapped = [add(0, 1, 1, 0, 10), add(1, 2, 3, 5, 15), add(2, 3, 4, 20, 30)];
        assert!(check(&Counter, &swapped, BUDGET).is_not_linearizable());
    }

    struct BrokenPartition;

    impl Model for BrokenPartition {
        type State = i64;
        type Input = i64;
        type Output = i64;

        fn init(&self) -> i64 {
            0
        }

        fn step(&self, state: &i64, input: &i64, output: Option<&i64>) -> Option<i64> {
            Counter.step(state, input, output)
        }

        fn partition(&self, history: &[Operation<i64, i64>]) -> Vec<Vec<usize>> {
            vec![vec![history.len()]]
        }
    }

    #[test]
    fn partition_naming_a_missing_op_is_reported() {
        match check(&BrokenPartition, &[add(0, 1, 1, 0, 1)], BUDGET) {
            Verdict::Unknown { reason } => assert!(reason.contains("partition"), "{reason}"),
            other => panic!("expected Unknown, got {other:?}"),
        }
    }

    // --- Internals ---------------------------------------------------------

    #[test]
    fn links_relink_in_reverse_order_restores_the_list() {
        let mut l = Links::new(4);
        let order = |l: &Links| {
            let mut out = Vec::new();
            let mut n = l.first();
            while n != l.sentinel() {
                out.push(n);
                n = l.next[n];
            }
            out
        };
        l.unlink(1);
        l.unlink(2);
        assert_eq!(order(&l), vec![0, 3]);
        l.unlink(0);
        assert_eq!(order(&l), vec![3]);
        l.relink(0);
        l.relink(2);
        l.relink(1);
        assert_eq!(order(&l), vec![0, 1, 2, 3]);
    }

    #[test]
    fn bits_subset() {
        let mut a = Bits::new(130);
        let mut b = Bits::new(130);
        a.insert(3);
        a.insert(129);
        b.insert(3);
        assert!(b.is_subset(&a));
        assert!(!a.is_subset(&b));
        b.insert(129);
        b.insert(64);
        assert!(a.is_subset(&b));
        b.remove(64);
        assert_eq!(a, b);
    }

    // --- Randomised histories from real sequential executions ---------------

    /// A 64-bit linear congruential generator: enough randomness for tests.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn percent(&mut self, p: u64) -> bool {
            self.below(100) < p
        }
    }

    struct Spec {
        clients: u64,
        ops_per_client: usize,
        keys: u64,
        /// Chance that an op's outcome is lost (timeout or no answer).
        unknown_percent: u64,
    }

    impl Spec {
        const SMALL: Spec = Spec { clients: 5, ops_per_client: 20, keys: 2, unknown_percent: 5 };
        const BIG: Spec = Spec { clients: 10, ops_per_client: 200, keys: 3, unknown_percent: 3 };
    }

    enum Kind {
        Get,
        Put,
        Cas,
        Delete,
    }

    struct Planned {
        client: u64,
        call: u64,
        /// When the op really takes effect, inside its interval.
        point: u64,
        ret: Option<u64>,
        key: String,
        kind: Kind,
        /// None: the client never learns the outcome.
        applied: Option<bool>,
    }

    /// Runs random ops against a real register map, each taking effect at a
    /// random instant inside its own random interval, and records what clients saw.
    fn generate(seed: u64, spec: &Spec) -> Vec<Op> {
        let mut rng = Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
        let mut planned = Vec::new();
        for client in 0..spec.clients {
            let mut t = rng.below(10);
            for _ in 0..spec.ops_per_client {
                let call = t + rng.below(8);
                let point = call + rng.below(30);
                let ret = point + rng.below(30);
                let kind = match rng.below(10) {
                    0..=3 => Kind::Get,
                    4..=6 => Kind::Put,
                    7..=8 => Kind::Cas,
                    _ => Kind::Delete,
                };
                let lost = rng.percent(spec.unknown_percent);
                let applied = if lost { Some(rng.percent(50)) } else { None };
                let answered = !lost || rng.percent(50);
                planned.push(Planned {
                    client,
                    call,
                    point,
                    ret: answered.then_some(ret),
                    key: format!("k{}", rng.below(spec.keys)),
                    kind,
                    applied,
                });
                // A client gives up on a hung request and moves on.
                t = ret + 1;
            }
        }

        planned.sort_by_key(|p| (p.point, p.client));
        let mut store: BTreeMap<String, String> = BTreeMap::new();
        let mut fresh = 0;
        let mut history = Vec::new();
        for p in planned {
            let current = store.get(&p.key).cloned();
            let key = p.key.clone();
            fresh += 1;
            let value = format!("v{fresh}");
            let (input, output) = match p.kind {
                Kind::Get => (KvInput::Get { key }, KvOutput::Get(current)),
                Kind::Put => (KvInput::Put { key, value }, KvOutput::Put),
                Kind::Delete => (KvInput::Delete { key }, KvOutput::Delete),
                Kind::Cas => {
                    // Mostly expect the current value, so that swaps succeed often.
                    let expected = if rng.percent(70) {
                        current.clone()
                    } else {
                        Some(format!("v{}", rng.below(fresh)))
                    };
                    let ok = expected == current;
                    (KvInput::Cas { key, expected, new: value }, KvOutput::Cas(ok))
                }
            };
            let takes_effect = p.applied.unwrap_or(true);
            if takes_effect {
                match &input {
                    KvInput::Put { value, .. } => {
                        store.insert(p.key.clone(), value.clone());
                    }
                    KvInput::Cas { new, .. } if output == KvOutput::Cas(true) => {
                        store.insert(p.key.clone(), new.clone());
                    }
                    KvInput::Delete { .. } => {
                        store.remove(&p.key);
                    }
                    _ => {}
                }
            }
            let output = if p.applied.is_some() { None } else { Some(output) };
            history.push(Operation { client: p.client, input, call: p.call, output, ret: p.ret });
        }
        history.sort_by_key(|op| (op.call, op.client));
        history
    }

    /// A generated history plus a read, by a fresh client, of a value whose
    /// only writer was followed by another acknowledged write that completed
    /// before the read began. Values are unique, so no order can explain it.
    fn planted(seed: u64, spec: &Spec) -> Option<Vec<Op>> {
        let mut history = generate(seed, spec);
        let mut rng = Lcg(seed ^ 0xABCD);
        let mut candidates = Vec::new();
        for w in &history {
            let (Some(w_ret), Some(w_out)) = (w.ret, &w.output) else { continue };
            let overwrites =
                matches!(w_out, KvOutput::Put | KvOutput::Delete | KvOutput::Cas(true));
            if !overwrites {
                continue;
            }
            for p in &history {
                if let (KvInput::Put { key, value }, Some(KvOutput::Put), Some(p_ret)) =
                    (&p.input, &p.output, p.ret)
                {
                    if key == w.input.key() && p_ret < w.call {
                        candidates.push((key.clone(), value.clone(), w_ret));
                    }
                }
            }
        }
        if candidates.is_empty() {
            return None;
        }
        let (key, value, after) =
            candidates.swap_remove(rng.below(candidates.len() as u64) as usize);
        let stale = get(1_000, &key, after + 1, after + 2, Some(&value));
        let at = history.partition_point(|op| op.call <= stale.call);
        history.insert(at, stale);
        Some(history)
    }

    #[test]
    fn generator_produces_concurrency_and_lost_outcomes() {
        let h = generate(1, &Spec::SMALL);
        let overlapping = h.windows(2).filter(|w| w[0].ret.is_none_or(|r| r >= w[1].call)).count();
        assert!(overlapping > 10, "too little concurrency: {overlapping}");
        let lost: usize = (0..20)
            .map(|s| generate(s, &Spec::SMALL).iter().filter(|op| op.output.is_none()).count())
            .sum();
        assert!(lost > 10, "too few unknown outcomes: {lost}");
    }

    #[test]
    fn random_histories_from_real_executions_pass() {
        for seed in 0..200 {
            let h = generate(seed, &Spec::SMALL);
            let v = verdict(&h);
            assert!(v.is_linearizable(), "seed {seed}: {v:#?}\nhistory: {h:#?}");
        }
    }

    #[test]
    fn random_histories_with_a_planted_stale_read_fail() {
        let mut checked = 0;
        let mut largest = 0;
        for seed in 0..200 {
            let Some(h) = planted(seed, &Spec::SMALL) else { continue };
            checked += 1;
            let (ops, explanation) = match verdict(&h) {
                Verdict::NotLinearizable { ops, explanation } => (ops, explanation),
                other => panic!("seed {seed}: expected a violation, got {other:#?}"),
            };
            // The planted read is part of every failing witness.
            assert!(
                ops.iter().any(|op| op.client == 1_000),
                "seed {seed}: {ops:#?}\n{explanation}"
            );
            let key = ops[0].input.key();
            assert!(ops.iter().all(|op| op.input.key() == key), "seed {seed}: {ops:#?}");
            largest = largest.max(ops.len());
        }
        assert!(checked >= 150, "only {checked} histories could be planted");
        assert!(largest <= 3, "a shrunk witness had {largest} ops");
    }

    #[test]
    fn localize_proves_a_violation_from_a_window_around_the_blocked_op() {
        let spec = Spec { clients: 10, ops_per_client: 80, keys: 1, unknown_percent: 3 };
        let h = planted(3, &spec).expect("plantable");
        let ops: Vec<&Op> = h.iter().collect();
        let stale = h.iter().position(|op| op.client == 1_000).expect("planted read");
        let Some((kept, _)) = localize(&KvModel, &ops, stale, None) else {
            panic!("no window around the planted read fails");
        };
        let window = kept.iter().filter(|&&k| k).count();
        assert!(window < ops.len() / 10, "window of {window} ops");
        assert!(kept[stale]);
        let trial = trial_items(&ops, &kept, Leeway::WithinInterval);
        assert!(matches!(search(&KvModel, &trial, None), Outcome::Violation(_)));
    }

    #[test]
    fn many_unknown_outcomes_on_one_key_stay_cheap() {
        let spec = Spec { clients: 10, ops_per_client: 100, keys: 1, unknown_percent: 10 };
        for seed in 0..3 {
            let h = generate(seed, &spec);
            let started = Instant::now();
            let v = check(&KvModel, &h, Duration::from_secs(60));
            assert!(v.is_linearizable(), "seed {seed}: {v:#?}");
            assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        }
    }

    #[test]
    fn big_history_finishes_quickly() {
        let h = generate(42, &Spec::BIG);
        assert!(h.len() > 1_500, "{}", h.len());
        let started = Instant::now();
        let v = check(&KvModel, &h, Duration::from_secs(30));
        let took = started.elapsed();
        assert!(v.is_linearizable(), "{v:#?}");
        assert!(took < Duration::from_secs(3), "took {took:?}");
        eprintln!("big history: {} ops checked in {took:?}", h.len());
    }

    #[test]
    fn big_history_with_a_planted_stale_read_fails_quickly() {
        let h = planted(42, &Spec::BIG).expect("plantable");
        let started = Instant::now();
        let v = check(&KvModel, &h, Duration::from_secs(30));
        let took = started.elapsed();
        match v {
            Verdict::NotLinearizable { ops, explanation } => {
                assert!(ops.iter().any(|op| op.client == 1_000), "{ops:#?}");
                assert!(ops.len() <= 4, "{ops:#?}");
                assert!(!explanation.contains("before the time budget ran out"), "{explanation}");
                eprintln!(
                    "big planted history: {} ops, shrunk to {} in {took:?}",
                    h.len(),
                    ops.len()
                );
            }
            other => panic!("expected a violation, got {other:#?}"),
        }
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }
}
