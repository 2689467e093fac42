//! The log of one crash trial (every operation the clients attempted, with what each
//! was meant to do and how it ended) and the check of a store's state read back after
//! the crash against it. Pure: no I/O, no clock.
//!
//! The harness only ever has one operation at a time touching a given relationship
//! (a document is checked out by the client that writes or deletes it), so the
//! operations on one relationship are totally ordered by the order they were begun in
//! this log. With that, the state a relationship may legally have after the crash is:
//! the effect of the last acknowledged operation on it (or its state when the trial
//! began), or the effect of any unacknowledged operation after that one. Anything else
//! is a violation. An unacknowledged operation is also checked for atomicity: each of
//! its units (a write, a delete, one message of an import stream) is applied entirely
//! or not at all, and the messages of an import stream are applied in order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A relationship the harness writes: `crash/doc:DOC#viewer@crash/user:USER`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub doc: String,
    pub user: String,
}

/// The resource type of every relationship the harness writes.
pub const DOC_TYPE: &str = "crash/doc";
/// The relation of every relationship the harness writes.
pub const RELATION: &str = "viewer";
/// The subject type of every relationship the harness writes.
pub const USER_TYPE: &str = "crash/user";

impl Key {
    pub fn new(doc: impl Into<String>, user: impl Into<String>) -> Key {
        Key {
            doc: doc.into(),
            user: user.into(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{DOC_TYPE}:{}#{RELATION}@{USER_TYPE}:{}",
            self.doc, self.user
        )
    }
}

/// What an operation does to one relationship.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Present,
    Absent,
}

impl Effect {
    fn of(present: bool) -> Effect {
        if present {
            Effect::Present
        } else {
            Effect::Absent
        }
    }
}

/// The API call an operation made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    /// WriteRelationships with TOUCH updates (and possibly DELETE ones).
    Write,
    /// WriteRelationships with DELETE updates only.
    Delete,
    /// DeleteRelationships by a filter.
    FilterDelete,
    /// An ImportRelationships stream.
    Import,
}

impl OpKind {
    pub const ALL: [OpKind; 4] = [
        OpKind::Write,
        OpKind::Delete,
        OpKind::FilterDelete,
        OpKind::Import,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Write => "write",
            OpKind::Delete => "delete",
            OpKind::FilterDelete => "filter-delete",
            OpKind::Import => "import",
        }
    }
}

/// How an operation ended, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent, no answer yet (counts as unacknowledged when checked).
    Pending,
    /// The server answered OK, with this revision token.
    Acked(String),
    /// The call failed or was cut off (the server was killed): it may or may not have
    /// been applied.
    Unacked(String),
}

/// One attempted operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    /// Which client sent it, and to which server: for messages.
    pub client: String,
    /// The parts the server must apply atomically, in the order it receives them: one
    /// for a write or a delete, one per message for an import stream.
    pub units: Vec<Vec<(Key, Effect)>>,
    pub outcome: Outcome,
}

impl Op {
    pub fn is_acked(&self) -> bool {
        matches!(self.outcome, Outcome::Acked(_))
    }

    fn describe(&self, index: usize) -> String {
        let how = match &self.outcome {
            Outcome::Acked(token) => format!("acknowledged at {token}"),
            Outcome::Pending => "never answered".to_string(),
            Outcome::Unacked(e) => format!("not acknowledged: {e}"),
        };
        format!("{} #{index} by {} ({how})", self.kind.name(), self.client)
    }
}

/// Where an operation is in a [`Ledger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpId(usize);

/// The state at the start of a trial and every operation of the trial, in the order
/// they were begun.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    initial: BTreeSet<Key>,
    ops: Vec<Op>,
}

impl Ledger {
    /// A trial that starts from `initial` (the relationships present, as read back
    /// and checked after the previous trial).
    pub fn new(initial: BTreeSet<Key>) -> Ledger {
        Ledger {
            initial,
            ops: Vec::new(),
        }
    }

    /// Records an operation about to be sent; its outcome is [`Outcome::Pending`] until
    /// [`Ledger::finish`].
    pub fn begin(&mut self, kind: OpKind, client: String, units: Vec<Vec<(Key, Effect)>>) -> OpId {
        self.ops.push(Op {
            kind,
            client,
            units,
            outcome: Outcome::Pending,
        });
        OpId(self.ops.len() - 1)
    }

    pub fn finish(&mut self, id: OpId, outcome: Outcome) {
        if let Some(op) = self.ops.get_mut(id.0) {
            op.outcome = outcome;
        }
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn initial(&self) -> &BTreeSet<Key> {
        &self.initial
    }
}

/// Something the state read back after a crash shows that the acknowledged log forbids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Should be present (an acknowledged write, or present when the trial began and
    /// not deleted since), and is absent.
    Lost { key: Key, by: String },
    /// Should be absent (an acknowledged delete, and no write since), and is present.
    Undeleted { key: Key, by: String },
    /// Present, but absent when the trial began and written by no operation since.
    Unexpected { key: Key },
    /// A relationship the harness does not write at all (not of its shape).
    Foreign { relationship: String },
    /// One unit of an unacknowledged operation is partly applied.
    HalfApplied {
        op: String,
        unit: usize,
        applied: Key,
        missing: Key,
    },
    /// A later message of an unacknowledged import stream is applied, an earlier one
    /// is not.
    OutOfOrder {
        op: String,
        applied: usize,
        missing: usize,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost { key, by } => write!(f, "lost: `{key}` is absent, but {by} left it present"),
            Violation::Undeleted { key, by } => {
                write!(f, "not deleted: `{key}` is present, but {by} left it absent")
            }
            Violation::Unexpected { key } => write!(
                f,
                "unexpected: `{key}` is present, but it was absent when the trial began and no operation wrote it"
            ),
            Violation::Foreign { relationship } => {
                write!(f, "foreign: `{relationship}` was never written by the harness")
            }
            Violation::HalfApplied {
                op,
                unit,
                applied,
                missing,
            } => write!(
                f,
                "half applied: unit {unit} of {op}: `{applied}` took effect, `{missing}` did not"
            ),
            Violation::OutOfOrder {
                op,
                applied,
                missing,
            } => write!(
                f,
                "out of order: message {applied} of {op} took effect, message {missing} before it did not"
            ),
        }
    }
}

/// What became of an unacknowledged operation, as far as the state read back tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Applied,
    NotApplied,
    /// Some messages of an import stream, a prefix of them.
    Partial,
    /// Nothing in the state tells (every relationship it names was already as it
    /// would have left it, or was changed again later).
    Undetermined,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub violations: Vec<Violation>,
    /// Acknowledged operations, by kind.
    pub acked: BTreeMap<OpKind, usize>,
    /// Unacknowledged operations, by what became of them.
    pub unacked: BTreeMap<FateName, usize>,
    /// Relationships whose state the log fixes exactly (last touched by an acknowledged
    /// operation, or by none in this trial) and that were found as required.
    pub fixed_states_checked: usize,
    /// Relationships read back.
    pub observed: usize,
}

/// [`Fate`] as a map key, ordered as printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FateName {
    Applied,
    NotApplied,
    Partial,
    Undetermined,
}

impl From<Fate> for FateName {
    fn from(f: Fate) -> FateName {
        match f {
            Fate::Applied => FateName::Applied,
            Fate::NotApplied => FateName::NotApplied,
            Fate::Partial => FateName::Partial,
            Fate::Undetermined => FateName::Undetermined,
        }
    }
}

impl Verdict {
    pub fn acked_total(&self) -> usize {
        self.acked.values().sum()
    }

    pub fn unacked_total(&self) -> usize {
        self.unacked.values().sum()
    }

    pub fn unacked_of(&self, fate: Fate) -> usize {
        self.unacked
            .get(&FateName::from(fate))
            .copied()
            .unwrap_or(0)
    }
}

/// One step in the history of one relationship: operation `op` (its unit `unit`)
/// leaves it `effect`.
#[derive(Debug, Clone, Copy)]
struct Step {
    op: usize,
    effect: Effect,
    acked: bool,
}

/// What the steps before some point allow the relationship to be: the state fixed by
/// the last acknowledged step (or the initial state), and the effects of the
/// unacknowledged steps after it.
#[derive(Debug, Clone)]
struct Possible {
    fixed: Effect,
    /// The acknowledged operation that fixed it (`None`: the initial state).
    fixed_by: Option<usize>,
    maybe: Vec<Effect>,
}

impl Possible {
    fn after(initial: bool, steps: &[Step]) -> Possible {
        let mut p = Possible {
            fixed: Effect::of(initial),
            fixed_by: None,
            maybe: Vec::new(),
        };
        for s in steps {
            if s.acked {
                p = Possible {
                    fixed: s.effect,
                    fixed_by: Some(s.op),
                    maybe: Vec::new(),
                };
            } else {
                p.maybe.push(s.effect);
            }
        }
        p
    }

    fn allows(&self, e: Effect) -> bool {
        self.fixed == e || self.maybe.contains(&e)
    }

    /// The one state this relationship can have, if there is only one.
    fn only(&self) -> Option<Effect> {
        self.maybe
            .iter()
            .all(|&m| m == self.fixed)
            .then_some(self.fixed)
    }
}

/// What one relationship says about whether a unit was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evidence {
    Applied,
    NotApplied,
    Nothing,
}

/// Checks the state read back after a crash (`observed`: the harness's relationships;
/// `foreign`: anything else found) against the trial's log.
pub fn verify(ledger: &Ledger, observed: &BTreeSet<Key>, foreign: &[String]) -> Verdict {
    let mut verdict = Verdict {
        observed: observed.len() + foreign.len(),
        ..Verdict::default()
    };
    let ops = ledger.ops();

    // Each relationship's history, in the order the operations were begun.
    let mut history: BTreeMap<&Key, Vec<Step>> = BTreeMap::new();
    for key in ledger.initial() {
        history.entry(key).or_default();
    }
    for (i, op) in ops.iter().enumerate() {
        for unit in &op.units {
            for (key, effect) in unit {
                history.entry(key).or_default().push(Step {
                    op: i,
                    effect: *effect,
                    acked: op.is_acked(),
                });
            }
        }
    }

    // Every relationship's final state must be one the log allows.
    for (key, steps) in &history {
        let possible = Possible::after(ledger.initial().contains(*key), steps);
        let found = Effect::of(observed.contains(*key));
        if possible.allows(found) {
            if possible.maybe.is_empty() {
                verdict.fixed_states_checked += 1;
            }
            continue;
        }
        let by = match possible.fixed_by.and_then(|i| ops.get(i).map(|op| (i, op))) {
            Some((i, op)) => op.describe(i),
            None => "the state when the trial began".to_string(),
        };
        let key = (*key).clone();
        verdict
            .violations
            .push(match (possible.fixed, possible.fixed_by) {
                (Effect::Present, _) => Violation::Lost { key, by },
                (Effect::Absent, Some(_)) => Violation::Undeleted { key, by },
                (Effect::Absent, None) => Violation::Unexpected { key },
            });
    }
    for key in observed {
        if !history.contains_key(key) {
            verdict
                .violations
                .push(Violation::Unexpected { key: key.clone() });
        }
    }
    for r in foreign {
        verdict.violations.push(Violation::Foreign {
            relationship: r.clone(),
        });
    }

    // Unacknowledged operations: each unit all or nothing, an import's messages in order.
    for (i, op) in ops.iter().enumerate() {
        if op.is_acked() {
            *verdict.acked.entry(op.kind).or_default() += 1;
            continue;
        }
        let mut units = Vec::with_capacity(op.units.len());
        for (u, unit) in op.units.iter().enumerate() {
            let mut applied: Option<&Key> = None;
            let mut missing: Option<&Key> = None;
            for (key, effect) in unit {
                match evidence(ledger, &history, observed, i, key, *effect) {
                    Evidence::Applied => applied = applied.or(Some(key)),
                    Evidence::NotApplied => missing = missing.or(Some(key)),
                    Evidence::Nothing => {}
                }
            }
            units.push(match (applied, missing) {
                (Some(a), Some(m)) => {
                    verdict.violations.push(Violation::HalfApplied {
                        op: op.describe(i),
                        unit: u,
                        applied: a.clone(),
                        missing: m.clone(),
                    });
                    Evidence::Nothing
                }
                (Some(_), None) => Evidence::Applied,
                (None, Some(_)) => Evidence::NotApplied,
                (None, None) => Evidence::Nothing,
            });
        }
        if op.kind == OpKind::Import {
            let last_applied = units.iter().rposition(|e| *e == Evidence::Applied);
            let first_missing = units.iter().position(|e| *e == Evidence::NotApplied);
            if let (Some(a), Some(m)) = (last_applied, first_missing) {
                if m < a {
                    verdict.violations.push(Violation::OutOfOrder {
                        op: op.describe(i),
                        applied: a,
                        missing: m,
                    });
                }
            }
        }
        let any_applied = units.contains(&Evidence::Applied);
        let any_missing = units.contains(&Evidence::NotApplied);
        let fate = match (any_applied, any_missing) {
            (true, false) if units.iter().all(|e| *e == Evidence::Applied) => Fate::Applied,
            (false, true) if units.iter().all(|e| *e == Evidence::NotApplied) => Fate::NotApplied,
            (true, true) => Fate::Partial,
            _ => Fate::Undetermined,
        };
        *verdict.unacked.entry(fate.into()).or_default() += 1;
    }
    verdict
}

/// Whether `key`'s state shows that operation `op` (which leaves it `effect`) was
/// applied. Only when `op` is the last operation on `key` and the state before it is
/// certain and different from `effect`.
fn evidence(
    ledger: &Ledger,
    history: &BTreeMap<&Key, Vec<Step>>,
    observed: &BTreeSet<Key>,
    op: usize,
    key: &Key,
    effect: Effect,
) -> Evidence {
    let Some(steps) = history.get(key) else {
        return Evidence::Nothing;
    };
    let Some(at) = steps.iter().position(|s| s.op == op) else {
        return Evidence::Nothing;
    };
    if steps.get(at + 1..).is_some_and(|later| !later.is_empty()) {
        return Evidence::Nothing;
    }
    let before = Possible::after(
        ledger.initial().contains(key),
        steps.get(..at).unwrap_or(&[]),
    );
    match before.only() {
        Some(b) if b != effect => {
            if Effect::of(observed.contains(key)) == effect {
                Evidence::Applied
            } else {
                Evidence::NotApplied
            }
        }
        _ => Evidence::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(doc: &str, user: &str) -> Key {
        Key::new(doc, user)
    }

    fn set<'a>(keys: impl IntoIterator<Item = &'a Key>) -> BTreeSet<Key> {
        keys.into_iter().cloned().collect()
    }

    fn touch<'a>(keys: impl IntoIterator<Item = &'a Key>) -> Vec<(Key, Effect)> {
        keys.into_iter()
            .map(|k| (k.clone(), Effect::Present))
            .collect()
    }

    fn delete<'a>(keys: impl IntoIterator<Item = &'a Key>) -> Vec<(Key, Effect)> {
        keys.into_iter()
            .map(|k| (k.clone(), Effect::Absent))
            .collect()
    }

    /// An operation of a test ledger: its kind, units and outcome.
    type Step = (OpKind, Vec<Vec<(Key, Effect)>>, Outcome);

    fn acked() -> Outcome {
        Outcome::Acked("r1".into())
    }

    fn cut() -> Outcome {
        Outcome::Unacked("UNAVAILABLE: connection reset".into())
    }

    /// A ledger from `(kind, units, outcome)` triples, in order.
    fn ledger<'a>(initial: impl IntoIterator<Item = &'a Key>, ops: Vec<Step>) -> Ledger {
        let mut l = Ledger::new(set(initial));
        for (kind, units, outcome) in ops {
            let id = l.begin(kind, "test".into(), units);
            l.finish(id, outcome);
        }
        l
    }

    #[test]
    fn acknowledged_writes_must_survive() {
        let (a, b) = (k("d1", "u0"), k("d1", "u1"));
        let l = ledger([], vec![(OpKind::Write, vec![touch([&a, &b])], acked())]);
        let ok = verify(&l, &set([&a, &b]), &[]);
        assert!(ok.violations.is_empty(), "{:?}", ok.violations);
        assert_eq!(ok.acked_total(), 1);
        assert_eq!(ok.fixed_states_checked, 2);

        let lost = verify(&l, &set(&[a]), &[]);
        assert_eq!(lost.violations.len(), 1, "{:?}", lost.violations);
        assert!(
            matches!(&lost.violations[0], Violation::Lost { key, .. } if *key == b),
            "{:?}",
            lost.violations
        );
    }

    #[test]
    fn acknowledged_deletes_must_stay_deleted_unless_written_again() {
        let a = k("d1", "u0");
        let deleted = ledger(
            [],
            vec![
                (OpKind::Write, vec![touch([&a])], acked()),
                (OpKind::Delete, vec![delete([&a])], acked()),
            ],
        );
        assert!(verify(&deleted, &set([]), &[]).violations.is_empty());
        let v = verify(&deleted, &set([&a]), &[]);
        assert!(
            matches!(&v.violations[..], [Violation::Undeleted { key, by }] if *key == a && by.starts_with("delete #1")),
            "{:?}",
            v.violations
        );

        let rewritten = ledger(
            [],
            vec![
                (OpKind::Write, vec![touch([&a])], acked()),
                (OpKind::FilterDelete, vec![delete([&a])], acked()),
                (OpKind::Write, vec![touch([&a])], acked()),
            ],
        );
        assert!(verify(&rewritten, &set([&a]), &[]).violations.is_empty());
        let v = verify(&rewritten, &set([]), &[]);
        assert!(
            matches!(&v.violations[..], [Violation::Lost { by, .. }] if by.starts_with("write #2")),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn the_state_a_trial_began_with_must_survive_it() {
        let (a, b) = (k("old", "u0"), k("old", "u1"));
        let l = ledger([&a, &b], vec![]);
        assert!(verify(&l, &set([&a, &b]), &[]).violations.is_empty());
        let v = verify(&l, &set(&[a]), &[]);
        assert!(
            matches!(&v.violations[..], [Violation::Lost { key, by }] if *key == b && by.contains("trial began")),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn what_nobody_wrote_must_not_appear() {
        let a = k("d1", "u0");
        let l = ledger([], vec![(OpKind::Write, vec![touch([&a])], acked())]);
        let ghost = k("d9", "u9");
        let v = verify(
            &l,
            &set([&a, &ghost]),
            &["crash/doc:x#owner@crash/user:y".into()],
        );
        assert_eq!(v.violations.len(), 2, "{:?}", v.violations);
        assert!(v.violations.contains(&Violation::Unexpected { key: ghost }));
        assert!(matches!(v.violations[1], Violation::Foreign { .. }));

        // A relationship deleted in an earlier trial (absent at the start) that only an
        // unacknowledged delete names cannot come back.
        let l = ledger([], vec![(OpKind::Delete, vec![delete([&a])], cut())]);
        let v = verify(&l, &set([&a]), &[]);
        assert_eq!(v.violations, vec![Violation::Unexpected { key: a }]);
    }

    #[test]
    fn an_unacknowledged_batch_is_all_or_nothing() {
        let keys = [k("d1", "u0"), k("d1", "u1"), k("d1", "u2")];
        let l = ledger([], vec![(OpKind::Write, vec![touch(&keys)], cut())]);

        let all = verify(&l, &set(&keys), &[]);
        assert!(all.violations.is_empty(), "{:?}", all.violations);
        assert_eq!(all.unacked_of(Fate::Applied), 1);
        let none = verify(&l, &set([]), &[]);
        assert!(none.violations.is_empty());
        assert_eq!(none.unacked_of(Fate::NotApplied), 1);

        let half = verify(&l, &set(&keys[..2]), &[]);
        assert!(
            matches!(&half.violations[..], [Violation::HalfApplied { unit: 0, missing, .. }] if *missing == keys[2]),
            "{:?}",
            half.violations
        );
    }

    #[test]
    fn a_half_applied_mix_of_touches_and_deletes_is_reported() {
        // One write touches a new relationship and deletes an acknowledged one.
        let (old, new) = (k("d1", "u0"), k("d2", "u0"));
        let mut units = touch([&new]);
        units.extend(delete([&old]));
        let l = ledger([&old], vec![(OpKind::Write, vec![units], cut())]);
        assert!(verify(&l, &set([&new]), &[]).violations.is_empty());
        assert!(verify(&l, &set([&old]), &[]).violations.is_empty());
        // The delete landed, the touch did not.
        let v = verify(&l, &set([]), &[]);
        assert!(
            matches!(&v.violations[..], [Violation::HalfApplied { applied, missing, .. }] if *applied == old && *missing == new),
            "{:?}",
            v.violations
        );
        // Both old and new: the touch landed, the delete did not.
        let v = verify(&l, &set(&[old, new]), &[]);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
    }

    #[test]
    fn relationships_already_in_the_target_state_tell_nothing() {
        // A re-touch of a document where one relationship is still present: that one
        // says nothing about whether the write landed.
        let (kept, gone) = (k("d1", "u0"), k("d1", "u1"));
        let l = ledger(
            [&kept],
            vec![(OpKind::Write, vec![touch([&kept, &gone])], cut())],
        );
        let v = verify(&l, &set([&kept]), &[]);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!(v.unacked_of(Fate::NotApplied), 1);
        let v = verify(&l, &set(&[kept, gone]), &[]);
        assert_eq!(v.unacked_of(Fate::Applied), 1);
    }

    #[test]
    fn an_unacknowledged_import_applies_a_prefix_of_its_messages() {
        let m: Vec<Vec<Key>> = (0..3)
            .map(|i| {
                (0..2)
                    .map(|u| k(&format!("imp{i}"), &format!("u{u}")))
                    .collect()
            })
            .collect();
        let units: Vec<Vec<(Key, Effect)>> = m.iter().map(touch).collect();
        let l = ledger([], vec![(OpKind::Import, units, cut())]);

        let prefix: Vec<Key> = m[0].iter().chain(&m[1]).cloned().collect();
        let v = verify(&l, &set(&prefix), &[]);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!(v.unacked_of(Fate::Partial), 1);

        let gap: Vec<Key> = m[0].iter().chain(&m[2]).cloned().collect();
        let v = verify(&l, &set(&gap), &[]);
        assert_eq!(
            v.violations,
            vec![Violation::OutOfOrder {
                op: "import #0 by test (not acknowledged: UNAVAILABLE: connection reset)".into(),
                applied: 2,
                missing: 1,
            }]
        );

        // Half of one message.
        let torn: Vec<Key> = m[0].iter().chain(&m[1][..1]).cloned().collect();
        let v = verify(&l, &set(&torn), &[]);
        assert!(
            matches!(&v.violations[..], [Violation::HalfApplied { unit: 1, .. }]),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn an_acknowledged_import_is_entirely_present() {
        let keys: Vec<Key> = (0..5).map(|u| k("imp", &format!("u{u}"))).collect();
        let l = ledger(
            [],
            vec![(
                OpKind::Import,
                vec![touch(&keys[..3]), touch(&keys[3..])],
                acked(),
            )],
        );
        assert!(verify(&l, &set(&keys), &[]).violations.is_empty());
        let v = verify(&l, &set(&keys[..3]), &[]);
        assert_eq!(v.violations.len(), 2, "{:?}", v.violations);
        assert!(v
            .violations
            .iter()
            .all(|x| matches!(x, Violation::Lost { .. })));
    }

    #[test]
    fn unacknowledged_steps_after_an_acknowledged_one_allow_either_state() {
        let a = k("d1", "u0");
        let l = ledger(
            [],
            vec![
                (OpKind::Write, vec![touch([&a])], acked()),
                (OpKind::Delete, vec![delete([&a])], cut()),
                (OpKind::Write, vec![touch([&a])], Outcome::Pending),
            ],
        );
        for observed in [set([]), set([&a])] {
            let v = verify(&l, &observed, &[]);
            assert!(v.violations.is_empty(), "{:?}", v.violations);
            // The two unacknowledged steps are followed or preceded by an uncertain
            // one: neither can be told applied or not.
            assert_eq!(v.unacked_of(Fate::Undetermined), 2);
            assert_eq!(v.fixed_states_checked, 0);
        }
        // An acknowledged step after unacknowledged ones fixes the state again.
        let l = ledger(
            [],
            vec![
                (OpKind::Write, vec![touch([&a])], cut()),
                (OpKind::Delete, vec![delete([&a])], acked()),
            ],
        );
        assert!(verify(&l, &set([]), &[]).violations.is_empty());
        assert_eq!(verify(&l, &set(&[a]), &[]).violations.len(), 1);
    }

    #[test]
    fn every_unit_of_an_operation_is_checked_on_its_own_keys() {
        // Two documents in one delete; each relationship only in that operation.
        let (a, b) = (k("d1", "u0"), k("d2", "u0"));
        let l = ledger(
            [&a, &b],
            vec![(OpKind::Delete, vec![delete([&a, &b])], cut())],
        );
        let v = verify(&l, &set([&b]), &[]);
        assert!(
            matches!(&v.violations[..], [Violation::HalfApplied { applied, missing, .. }] if *applied == a && *missing == b),
            "{:?}",
            v.violations
        );
    }
}
