//! The engine: the current graph revision behind an atomic pointer, a short history of
//! earlier revisions for exact-snapshot reads, a write path that validates, persists and
//! then publishes, and the Check entry point.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use arbiter_schema::{
    compile, object_id_problem, AllowedKind, AllowedSubject, CaveatRef, ObjectRef, RelationId, Relationship,
    SubjectRef, TypeId, WILDCARD_ID,
};
use arc_swap::ArcSwap;
use chrono::{TimeZone, Utc};

use crate::caveats::{CaveatId, NO_CAVEAT};
use crate::check::{touch_closures, Evaluator, Verdict};
use crate::error::EngineError;
use crate::expand::{ExpandNode, ExpandTree, Expander};
use crate::explain::{Explainer, UNSEEN_MARK};
use crate::filter::{RelationshipFilter, ResolvedFilter};
use crate::graph::{
    Edge, GraphChange, GraphVersion, ObjectKey, Micros, RequestTime, ResourceKey, StoredRelationship,
    SubjectKey, NEVER,
};
use crate::intern::{Interner, NameView, Sym, ELLIPSIS, WILDCARD};
use crate::paging::{cmp_keys, cursor_parts, key_parts, Ordered, Smallest};
use crate::load::{GraphLoader, ShapeSyms, Shapes};
use crate::lookup::LookupContext;
use crate::policy::{
    typed_value, CedarOutcome, CompiledPolicies, EntityData, Hierarchy, ObjectAttributes, PolicyError, PolicyModel, PolicyText,
    MAX_ENTITIES,
};
use crate::schema_plan::SchemaPlan;
use crate::store::{
    relationship_key, AttributeChange, Change, ChangeOp, ChangesAfter, Commit, LoggedCommit, MemoryStore, RelationshipRef,
    RelationshipStore,
};

/// How many offending relationships a refused schema change lists.
const ORPHAN_EXAMPLES: usize = 10;
/// A symbol no relationship uses: stands for a subject id nobody has written.
const UNSEEN: Sym = Sym::MAX - 1;

/// An item's resource and subject ids as the interner has them (`None`: never written).
#[derive(Debug, Clone, Copy)]
struct KnownIds {
    resource: Option<Sym>,
    subject: Option<Sym>,
}

/// CheckBulk batches at least this large are warmed first ([`Engine::warm`]).
const WARM_BATCH: usize = 4;
/// How many arrow hops CheckBulk's warm pass follows from each item's resource.
const WARM_WAVES: usize = 12;
/// Per item and wave, how many objects the warm pass may touch (wide fan-outs are left
/// to the Check itself).
const WARM_FANOUT: usize = 4;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Maximum number of hops (arrows, subject sets) a Check may take.
    pub max_depth: u32,
    /// How long earlier revisions stay readable with `at_exact_snapshot`.
    pub history_window: Duration,
    /// Upper bound on revisions kept for the history window.
    pub history_limit: usize,
    /// Upper bound on the relationship changes the kept revisions hold between them:
    /// each kept revision pins the copies its changes made, so a bulk import of millions
    /// in batches would otherwise keep every batch's copies for the whole window.
    pub history_max_changes: usize,
    /// CheckBulk touches its items' objects before checking them ([`Engine::check_bulk`])
    /// only on graphs with at least this many relationships. A smaller graph (at about
    /// 76 bytes a relationship, 200,000 are some 15 MB) stays in a server's last-level
    /// cache, where the touches find nothing to fetch and cost a sixth of a batch; a
    /// batch's ids are looked up side by side either way.
    pub warm_min_relationships: usize,
}

/// The most bytes a relationship's caveat context may take, as canonical JSON
/// (SpiceDB's default `--max-relationship-context-size`).
pub const MAX_CAVEAT_CONTEXT_BYTES: usize = 25_000;

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_depth: 50,
            history_window: Duration::from_secs(600),
            history_limit: 4096,
            history_max_changes: 250_000,
            warm_min_relationships: 200_000,
        }
    }
}

/// Which revision a read sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// The newest revision applied here.
    #[default]
    MinimizeLatency,
    /// At least this revision.
    AtLeastAsFresh(u64),
    /// Exactly this revision (within the history window).
    AtExactSnapshot(u64),
    /// The newest committed revision.
    FullyConsistent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOp {
    /// Insert; fails if the relationship exists.
    Create,
    /// Insert or replace.
    Touch,
    /// Remove if present.
    Delete,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RelationshipUpdate {
    pub op: UpdateOp,
    pub relationship: Relationship,
}

/// A write of one object's attributes: the new values and labels (replacing what it
/// had), or `None` to delete them.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeUpdate {
    pub object_type: String,
    pub object_id: String,
    pub attributes: Option<ObjectAttributes>,
}

/// A permission question, with strings as the caller gave them.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckRequest<'a> {
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    pub permission: &'a str,
    pub subject_type: &'a str,
    pub subject_id: &'a str,
    /// `None` for the object itself.
    pub subject_relation: Option<&'a str>,
    pub consistency: Consistency,
    /// The request context handed to Cedar policies (time of day, IP, ...).
    pub context: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// Attribute values of the principal (the subject's object) for this request only,
    /// added to its stored ones for Cedar (AuthZEN's `subject.properties`). Only
    /// attributes declared with source `request` may be given; a stored one is refused
    /// (a request cannot replace a stored fact). Undeclared keys are left out, as in a
    /// context; a mistyped one is an error.
    pub principal_attributes: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// Attribute values of the resource for this request only, like
    /// `principal_attributes` (AuthZEN's `resource.properties`).
    pub resource_attributes: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Denied,
    /// Allowed only if the request gives the caveat parameters
    /// [`CheckResponse::missing_context`] names and they satisfy the caveats. A caller
    /// that does not act on it must treat it as denied.
    Conditional,
}

/// `(type, id, attributes)` of every object with attributes, as
/// [`Engine::export_attributes`] returns them.
pub type ExportedAttributes = Vec<(String, String, ObjectAttributes)>;

/// What [`Engine::explain`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub decision: Decision,
    /// With the graph allowing: the relationships of one path, resource to subject.
    pub path: Vec<String>,
    /// The Cedar policies that decided, when Cedar did.
    pub policies: Vec<String>,
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResponse {
    pub decision: Decision,
    /// The revision the answer was computed at.
    pub revision: u64,
    /// For [`Decision::Conditional`]: the caveat parameters the request did not give,
    /// sorted. Empty otherwise.
    pub missing_context: Vec<String>,
}

/// LookupResources: which `resource_type` objects may the subject `permission`?
#[derive(Debug, Clone, Copy)]
pub struct LookupResourcesRequest<'a> {
    pub resource_type: &'a str,
    pub permission: &'a str,
    pub subject_type: &'a str,
    pub subject_id: &'a str,
    pub subject_relation: Option<&'a str>,
    pub consistency: Consistency,
    /// The last id of the previous page.
    pub cursor: Option<&'a str>,
    pub limit: Option<usize>,
    /// Caveat parameters, for relationships with caveats.
    pub context: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// One resource LookupResources found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundResource {
    pub id: String,
    /// Empty: the subject has the permission. Otherwise it has it only if the request
    /// gives these caveat parameters (sorted) and they satisfy the caveats.
    pub missing_context: Vec<String>,
}

/// What [`Engine::apply_external`] did with one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Relationship changes applied.
    pub applied: usize,
    /// What was refused, each with its reason.
    pub rejected: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupResourcesPage {
    pub resources: Vec<FoundResource>,
    /// Pass back as `cursor` for the next page; `None` when this was the last.
    pub next_cursor: Option<String>,
    pub revision: u64,
}

impl LookupResourcesPage {
    /// The ids found, conditional ones included (see [`FoundResource::missing_context`]).
    pub fn ids(&self) -> Vec<&str> {
        self.resources.iter().map(|r| r.id.as_str()).collect()
    }
}

/// LookupSubjects: which subjects of `subject_type` (or `subject_type#relation`) have
/// `permission` on the resource?
#[derive(Debug, Clone, Copy)]
pub struct LookupSubjectsRequest<'a> {
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    pub permission: &'a str,
    pub subject_type: &'a str,
    pub subject_relation: Option<&'a str>,
    pub consistency: Consistency,
    pub cursor: Option<&'a str>,
    pub limit: Option<usize>,
    /// Report subject sets only where relationships name them (the semantics of a
    /// validation file's expected relations). By default a subject set the schema reaches
    /// (a resource's own userset) is reported too, as Check counts it.
    pub written_subject_sets_only: bool,
    /// Caveat parameters, for relationships with caveats.
    pub context: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundSubject {
    /// An id, or `*` for a wildcard.
    pub subject_id: String,
    /// Empty: the subject has the permission. Otherwise only if the request gives these
    /// caveat parameters (sorted) and they satisfy the caveats.
    pub missing_context: Vec<String>,
    /// For a wildcard: the ids it does not cover, each with the caveat parameters its
    /// exclusion waits on (empty: excluded outright).
    pub excluded: Vec<Excluded>,
}

impl FoundSubject {
    /// The ids a wildcard does not cover, conditionally excluded ones included.
    pub fn excluded_ids(&self) -> Vec<&str> {
        self.excluded.iter().map(|e| e.id.as_str()).collect()
    }
}

/// A subject a wildcard does not cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    pub id: String,
    /// Empty: excluded. Otherwise its answer differs from the wildcard's only under a
    /// condition on these caveat parameters.
    pub missing_context: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupSubjectsPage {
    pub subjects: Vec<FoundSubject>,
    pub next_cursor: Option<String>,
    pub revision: u64,
}

/// A write precondition: some (or no) live relationship matches the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precondition {
    pub must_match: bool,
    pub filter: RelationshipFilter,
}

/// One page of ReadRelationships.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadPage {
    pub relationships: Vec<Relationship>,
    /// Pass back as `cursor` for the next page; `None` when this was the last.
    pub next_cursor: Option<String>,
    pub revision: u64,
}

/// Called after every published write (see [`Engine::subscribe`]).
pub type Listener = Box<dyn Fn(&LoggedCommit) + Send + Sync>;

struct Listeners(RwLock<Vec<Listener>>);

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.read().map(|l| l.len()).unwrap_or(0);
        write!(f, "Listeners({n})")
    }
}

impl std::ops::Deref for Listeners {
    type Target = RwLock<Vec<Listener>>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    interner: Interner,
    /// Every (caveat, context) pair relationships have carried; edges hold their ids.
    caveats: crate::caveats::Caveats,
    current: ArcSwap<GraphVersion>,
    /// Earlier revisions for exact-snapshot reads: when each was published, the graph,
    /// and how many changes it made.
    history: Mutex<VecDeque<(Instant, Arc<GraphVersion>, usize)>>,
    /// When the last compaction ended and how long it took.
    last_compaction: Mutex<Option<(Instant, Duration)>>,
    write_lock: Mutex<()>,
    store: Box<dyn RelationshipStore>,
    listeners: Listeners,
}

/// The chunk a lookup or read without a limit is gathered in.
pub const LOOKUP_CHUNK: usize = 1024;

/// A read with a limit up to this keeps only the limit's relationships while it scans
/// (see [`Engine::read_relationships_each`]).
pub const READ_HEAP_LIMIT: usize = 10_000;

/// ReadRelationships: the relationships a filter selects, after a cursor.
#[derive(Debug, Clone, Copy)]
pub struct ReadRequest<'a> {
    pub filter: &'a RelationshipFilter,
    /// Only resources whose id starts with this (the filter must name a resource type).
    pub id_prefix: Option<&'a str>,
    pub consistency: Consistency,
    /// The key of the last relationship of the previous page
    /// ([`crate::store::relationship_key`]).
    pub cursor: Option<&'a str>,
    pub limit: Option<usize>,
}

/// Imports of at least this many relationships write to the store on a second thread
/// while the graph is built (below it, a thread costs more than it saves).
const PARALLEL_IMPORT: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Wall-clock time in the engine's unit.
pub fn now_micros() -> Micros {
    crate::graph::wall_clock_micros()
}

impl Engine {
    /// An engine over a process-memory store.
    pub fn in_memory(config: EngineConfig) -> Self {
        Engine::empty(Box::new(MemoryStore::default()), config)
    }

    fn empty(store: Box<dyn RelationshipStore>, config: EngineConfig) -> Self {
        let graph = Arc::new(GraphVersion::empty());
        Engine {
            config,
            interner: Interner::default(),
            caveats: crate::caveats::Caveats::default(),
            current: ArcSwap::new(graph.clone()),
            history: Mutex::new(VecDeque::from([(Instant::now(), graph, 0)])),
            last_compaction: Mutex::new(None),
            write_lock: Mutex::new(()),
            store,
            listeners: Listeners(RwLock::new(Vec::new())),
        }
    }

    /// Opens an engine over `store`, rebuilding the graph from what it holds. Every
    /// stored relationship is validated against the stored schema on the way in.
    pub fn open(store: Box<dyn RelationshipStore>, config: EngineConfig) -> Result<Self, EngineError> {
        let engine = Engine::empty(store, config);
        let mut loader = GraphLoader::new(&engine);
        let scanned = engine.store.scan(&mut loader);
        let graph = match (scanned, loader.finish()) {
            (_, Err(e)) => return Err(e),
            (Err(e), Ok(_)) => return Err(EngineError::Store(e.0)),
            (Ok(()), Ok(graph)) => Arc::new(graph),
        };
        engine.current.store(graph.clone());
        *lock(&engine.history) = VecDeque::from([(Instant::now(), graph, 0)]);
        engine.interner.fold();
        Ok(engine)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn interner(&self) -> &Interner {
        &self.interner
    }

    /// The newest revision.
    pub fn revision(&self) -> u64 {
        self.current.load().revision
    }

    /// The current schema text as written, if any.
    pub fn schema_text(&self) -> Option<String> {
        self.current.load().plan.as_ref().map(|p| p.text.clone())
    }

    /// The newest published revision.
    pub fn current(&self) -> Arc<GraphVersion> {
        self.current.load_full()
    }

    /// Pins the revision a read sees, without touching the reference count on the hot
    /// path (the common consistency modes read the current revision).
    fn pin(&self, consistency: Consistency) -> Result<Pinned, EngineError> {
        match consistency {
            Consistency::MinimizeLatency | Consistency::FullyConsistent => {
                Ok(Pinned::Current(self.current.load()))
            }
            other => self.snapshot(other).map(Pinned::Owned),
        }
    }

    /// The revision a read with `consistency` sees.
    pub fn snapshot(&self, consistency: Consistency) -> Result<Arc<GraphVersion>, EngineError> {
        let cur = self.current.load_full();
        match consistency {
            Consistency::MinimizeLatency | Consistency::FullyConsistent => Ok(cur),
            Consistency::AtLeastAsFresh(r) => {
                if cur.revision >= r {
                    Ok(cur)
                } else {
                    Err(EngineError::RevisionUnavailable {
                        requested: r,
                        newest: cur.revision,
                    })
                }
            }
            Consistency::AtExactSnapshot(r) => {
                if cur.revision == r {
                    return Ok(cur);
                }
                if r > cur.revision {
                    return Err(EngineError::RevisionUnavailable {
                        requested: r,
                        newest: cur.revision,
                    });
                }
                let mut history = lock(&self.history);
                self.prune(&mut history);
                let oldest = history
                    .front()
                    .map(|(_, g, _)| g.revision)
                    .unwrap_or(cur.revision);
                // Revisions are dense, but a revision's graph is the newest one at or
                // below it.
                match history.iter().rev().find(|(_, g, _)| g.revision <= r) {
                    Some((_, g, _)) if r >= oldest => Ok(g.clone()),
                    _ => Err(EngineError::SnapshotTooOld {
                        requested: r,
                        oldest,
                    }),
                }
            }
        }
    }

    fn prune(&self, history: &mut VecDeque<(Instant, Arc<GraphVersion>, usize)>) {
        let now = Instant::now();
        // The changes the kept revisions made after the oldest one.
        let mut changes: usize = history.iter().skip(1).map(|(_, _, c)| *c).sum();
        while history.len() > 1 {
            let too_many = history.len() > self.config.history_limit || changes > self.config.history_max_changes;
            // An entry stays readable until the window has passed since it was replaced.
            let replaced_at = history.get(1).map(|(t, _, _)| *t).unwrap_or(now);
            if too_many || now.duration_since(replaced_at) > self.config.history_window {
                history.pop_front();
                changes -= history.front().map(|(_, _, c)| *c).unwrap_or(0);
            } else {
                break;
            }
        }
    }

    /// Makes `graph` current; `changes` is how many relationship changes it made.
    fn publish(&self, graph: GraphVersion, changes: usize) -> u64 {
        let revision = graph.revision;
        let graph = Arc::new(graph);
        self.current.store(graph.clone());
        let mut history = lock(&self.history);
        history.push_back((Instant::now(), graph, changes));
        self.prune(&mut history);
        revision
    }

    /// Compacts (see [`Engine::compact`]) when it is due: the changes since the last
    /// compaction have reached a sixty-fourth of the indexes, or writes have been quiet
    /// for `quiet`. The server calls this on a timer, off the request path.
    pub fn compact_if_due(&self, quiet: Duration) -> bool {
        let cur = self.current.load();
        let published = lock(&self.history).back().map(|(t, _, _)| *t);
        let is_quiet = published.is_some_and(|t| t.elapsed() >= quiet);
        if !cur.has_changes() {
            if is_quiet {
                // Ids written since the last fold (by writes that needed no compaction,
                // or an import) move to the symbol table's lock-free part, once no
                // more are coming (an import interns long before it publishes).
                self.interner.fold_if_settled();
            }
            return false;
        }
        // While writes keep coming, compactions (whose cost is the whole graph's) are
        // spaced to use at most a fifth of a core; a write past an eighth compacts itself.
        let rested = lock(&self.last_compaction).is_none_or(|(ended, took)| ended.elapsed() >= took * 4);
        if !(is_quiet || (rested && cur.changes_exceed(64))) {
            return false;
        }
        drop(cur);
        self.compact()
    }

    /// Folds the changes made since the last compaction into the current revision's
    /// flat indexes: same revision, same contents, and reads stop probing the changes
    /// before the indexes. The work happens outside the write lock; writes published
    /// meanwhile are rebased onto the result ([`GraphVersion::rebase`]), which is dropped
    /// only if one of them compacted by itself. Also folds the ids interned since the
    /// last compaction into the symbol table's lock-free part ([`Interner::fold`]), even
    /// when the graph has no changes. Returns whether a compacted revision was published.
    pub fn compact(&self) -> bool {
        // The ids interned since the last compaction move to the symbol table's
        // lock-free part (see `Interner`), whether or not the graph has changes to fold
        // (an import merges its batches into new indexes itself).
        self.interner.fold();
        let cur = self.current.load_full();
        if !cur.has_changes() {
            return false;
        }
        let started = Instant::now();
        let mut compacted = (*cur).clone();
        compacted.compact();
        let _guard = lock(&self.write_lock);
        let now = self.current.load_full();
        let next = if Arc::ptr_eq(&cur, &now) {
            compacted
        } else {
            // Writes published meanwhile: keep their changes on top of the new indexes.
            match compacted.rebase(&cur, &now) {
                Some(next) => next,
                None => return false,
            }
        };
        let next = Arc::new(next);
        self.current.store(next.clone());
        let relationships = next.len();
        let mut history = lock(&self.history);
        if let Some(last) = history.back_mut().filter(|(_, g, _)| Arc::ptr_eq(g, &now)) {
            last.1 = next;
            // The earlier revisions kept pin the old indexes whole: count the new ones
            // as every relationship copied, so the history's bound lets them go.
            last.2 = last.2.max(relationships);
        }
        self.prune(&mut history);
        drop(history);
        *lock(&self.last_compaction) = Some((Instant::now(), started.elapsed()));
        true
    }

    /// Replaces the schema. Refused, with the relationships in the way, if existing
    /// relationships would no longer fit.
    pub fn write_schema(&self, text: &str) -> Result<u64, EngineError> {
        let _guard = lock(&self.write_lock);
        let cur = self.current.load_full();
        let (plan, policies) = self.plan_schema_at(&cur, text)?;
        let mut next = (*cur).clone();
        next.revision = cur.revision + 1;
        next.set_plan(Some(Arc::new(plan)));
        next.policies = policies;
        self.store
            .commit(&Commit { revision: next.revision, schema: Some(text), ..Commit::default() })
            .map_err(|e| EngineError::Store(e.0))?;
        let revision = self.publish(next, 1);
        self.notify(revision, Vec::new(), Some(text), None, Vec::new());
        Ok(revision)
    }

    /// Checks a schema as [`Engine::write_schema`] would at the newest revision, without
    /// writing it (see [`Engine::plan_write`]).
    pub fn plan_schema(&self, text: &str) -> Result<(), EngineError> {
        let _guard = lock(&self.write_lock);
        let cur = self.current.load_full();
        self.plan_schema_at(&cur, text).map(|_| ())
    }

    /// The plan of a new schema and the running policies compiled against it, or why
    /// the schema cannot replace the current one.
    fn plan_schema_at(
        &self,
        cur: &GraphVersion,
        text: &str,
    ) -> Result<(SchemaPlan, Option<Arc<CompiledPolicies>>), EngineError> {
        let compiled = compile(text).map_err(EngineError::InvalidSchema)?;
        let plan = SchemaPlan::new(compiled, text.to_string(), &self.interner);
        let mut count = 0usize;
        let mut examples = Vec::new();
        for stored in cur.iter() {
            if let Err(reason) = self.fits(&plan, &stored) {
                count += 1;
                if examples.len() < ORPHAN_EXAMPLES {
                    examples.push(format!("`{}` ({reason})", self.describe(&stored)));
                }
            }
        }
        if count > 0 {
            examples.sort();
            return Err(EngineError::WouldOrphan { count, examples });
        }
        let policies = match &cur.policies {
            None => None,
            Some(p) => Some(Arc::new(
                CompiledPolicies::compile(&plan.schema, p.model.clone()).map_err(EngineError::SchemaBreaksPolicies)?,
            )),
        };
        self.check_stored_attributes(cur, policies.as_deref()).map_err(EngineError::SchemaBreaksPolicies)?;
        Ok((plan, policies))
    }

    /// Applies one revision that was ordered and made durable elsewhere (a replica
    /// replaying Postgres' changelog): its schema first, if it has one, then its changes,
    /// each validated against the schema in force. What does not validate is left out
    /// and reported, never fatal: the replica keeps serving. A revision at or below the
    /// current one was applied already and is skipped. The applied part is committed to
    /// this engine's own store at `revision`, so a restart resumes after it.
    pub fn apply_external(
        &self,
        revision: u64,
        changes: Vec<Change>,
        schema: Option<&str>,
    ) -> Result<ApplyReport, EngineError> {
        self.apply_logged(LoggedCommit {
            revision,
            committed_at_micros: 0,
            changes,
            schema: schema.map(str::to_string),
            policy_model: None,
            attributes: Vec::new(),
        })
    }

    /// [`Engine::apply_external`] for a whole logged commit: its schema, then its policy
    /// model (compiled against the schema in force; refused if it does not compile or
    /// would strand stored attributes), then its relationship and attribute changes, each
    /// validated as a write would be.
    pub fn apply_logged(&self, commit: LoggedCommit) -> Result<ApplyReport, EngineError> {
        let LoggedCommit { revision, changes, schema, policy_model, attributes, .. } = commit;
        let schema = schema.as_deref();
        let _guard = lock(&self.write_lock);
        let cur = self.current.load_full();
        let mut report = ApplyReport::default();
        if revision <= cur.revision {
            return Ok(report);
        }
        let mut next = (*cur).clone();
        next.revision = revision;
        let mut applied_schema = None;
        if let Some(text) = schema {
            match self.plan_schema_at(&cur, text) {
                Ok((plan, policies)) => {
                    next.set_plan(Some(Arc::new(plan)));
                    next.policies = policies;
                    applied_schema = Some(text);
                }
                Err(e) => report.rejected.push(format!("schema at revision {revision}: {e}")),
            }
        }
        let mut applied_model = None;
        if let Some(json) = policy_model.as_deref() {
            let compiled = compile_model(next.plan.as_deref(), json).and_then(|c| {
                // Objects this commit rewrites are checked in their new form (a label
                // removed from the model and from its objects in one commit).
                let mut probe = next.clone();
                for a in &attributes {
                    let attrs = a.attributes.as_deref().map(ObjectAttributes::decode).transpose().ok().flatten();
                    let key = ObjectKey {
                        object_type: self.interner.intern(&a.object_type),
                        object_id: self.interner.intern(&a.object_id),
                    };
                    probe.set_attributes(key, attrs.map(Arc::new));
                }
                self.recheck_attributes(&probe, c.as_ref()).map_err(EngineError::InvalidPolicy)?;
                Ok(c)
            });
            match compiled {
                Ok(c) => {
                    next.policies = c.map(Arc::new);
                    applied_model = Some(json);
                }
                Err(e) => report.rejected.push(format!("policies at revision {revision}: {e}")),
            }
        }
        let mut applied_attributes = Vec::new();
        for a in attributes {
            let decoded = match &a.attributes {
                None => Ok(None),
                Some(json) => ObjectAttributes::decode(json).and_then(|attrs| {
                    let policies = next.policies.as_deref().ok_or_else(|| "no attributes are declared".to_string())?;
                    policies.check_object(&a.object_type, &a.object_id, &attrs)?;
                    Ok(Some(attrs))
                }),
            };
            match decoded {
                Ok(attrs) => {
                    let key = ObjectKey {
                        object_type: self.interner.intern(&a.object_type),
                        object_id: self.interner.intern(&a.object_id),
                    };
                    next.set_attributes(key, attrs.map(Arc::new));
                    applied_attributes.push(a);
                }
                Err(e) => report.rejected.push(format!(
                    "attributes of `{}:{}` at revision {revision}: {e}",
                    a.object_type, a.object_id
                )),
            }
        }
        let mut graph_changes = Vec::with_capacity(changes.len());
        let mut accepted = Vec::with_capacity(changes.len());
        if let Some(plan) = next.plan.clone() {
            let mut shapes = Shapes::default();
            for change in changes {
                match shapes.validate(self, &plan, RelationshipRef::of(&change.relationship)) {
                    Ok(stored) => {
                        graph_changes.push(match change.op {
                            ChangeOp::Touch => GraphChange::Upsert(stored.resource, stored.edge),
                            ChangeOp::Delete => GraphChange::Remove(stored.resource, stored.edge.subject),
                        });
                        accepted.push(change);
                    }
                    Err(e) => report.rejected.push(format!("`{}` at revision {revision}: {e}", change.relationship)),
                }
            }
        } else {
            report.rejected.extend(
                changes.iter().map(|c| format!("`{}` at revision {revision}: no schema is written", c.relationship)),
            );
        }
        // One change per relationship (the last wins), as a write would have it.
        let mut last = std::collections::HashMap::with_capacity(graph_changes.len());
        for (i, g) in graph_changes.iter().enumerate() {
            last.insert(g.identity(), i);
        }
        let (graph_changes, accepted): (Vec<GraphChange>, Vec<Change>) = graph_changes
            .into_iter()
            .zip(accepted)
            .enumerate()
            .filter(|(i, (g, _))| last.get(&g.identity()) == Some(i))
            .map(|(_, pair)| pair)
            .unzip();
        let copies = next.apply(&graph_changes);
        report.applied = accepted.len();
        self.store
            .commit(&Commit {
                revision,
                schema: applied_schema,
                policy_model: applied_model,
                changes: &accepted,
                attributes: &applied_attributes,
            })
            .map_err(|e| EngineError::Store(e.0))?;
        self.publish(next, copies + applied_attributes.len());
        self.notify(revision, accepted, applied_schema, applied_model.map(str::to_string), applied_attributes);
        Ok(report)
    }

    /// Why a stored relationship does not fit `plan`, if it does not.
    fn fits(&self, plan: &SchemaPlan, stored: &StoredRelationship) -> Result<(), String> {
        let schema = &plan.schema;
        let type_name = self.interner.resolve(stored.resource.object_type);
        let rel_name = self.interner.resolve(stored.resource.relation);
        let Some((_, def)) = schema.definition_by_name(&type_name) else {
            return Err(format!("type `{type_name}` no longer exists"));
        };
        let Some(rel) = def.relation_id(&rel_name).and_then(|r| def.relation(r)) else {
            return Err(format!(
                "relation `{rel_name}` no longer exists on `{type_name}`"
            ));
        };
        if rel.is_permission() {
            return Err(format!("`{rel_name}` on `{type_name}` is now a permission"));
        }
        let s = stored.edge.subject;
        let sub_type_name = self.interner.resolve(s.object_type);
        let Some((sub_ty, sub_def)) = schema.definition_by_name(&sub_type_name) else {
            return Err(format!("subject type `{sub_type_name}` no longer exists"));
        };
        let kind = if s.object_id == WILDCARD {
            AllowedKind::Wildcard
        } else if s.relation == ELLIPSIS {
            AllowedKind::Object
        } else {
            let srel = self.interner.resolve(s.relation);
            match sub_def.relation_id(&srel) {
                Some(r) => AllowedKind::SubjectSet(r),
                None => {
                    return Err(format!(
                        "relation `{srel}` no longer exists on `{sub_type_name}`"
                    ))
                }
            }
        };
        let caveat = match self.caveats.get(stored.edge.caveat) {
            None => None,
            Some(c) => {
                let Some(id) = schema.caveat_id(&c.name) else {
                    return Err(format!("caveat `{}` no longer exists", c.name));
                };
                if let (Some(ctx), Some(program)) = (&c.context, schema.caveat(id).and_then(|c| c.program.as_ref())) {
                    program.bind_strict(ctx).map_err(|e| format!("its context no longer fits caveat `{}`: {}", c.name, e.0))?;
                }
                Some(id)
            }
        };
        if allowed_match(
            rel.allowed_subjects(),
            sub_ty,
            kind,
            stored.edge.expires_at != NEVER,
            caveat,
        ) {
            Ok(())
        } else {
            Err(format!(
                "`{rel_name}` on `{type_name}` no longer allows this subject type"
            ))
        }
    }

    /// A stored relationship in relationship syntax.
    pub fn describe(&self, stored: &StoredRelationship) -> String {
        self.to_relationship(stored).to_string()
    }

    /// A stored relationship as a [`Relationship`].
    pub fn to_relationship(&self, stored: &StoredRelationship) -> Relationship {
        let r = &stored.resource;
        let s = &stored.edge.subject;
        Relationship {
            resource: ObjectRef {
                object_type: self.interner.resolve(r.object_type).to_string(),
                object_id: self.interner.resolve(r.object_id).to_string(),
            },
            relation: self.interner.resolve(r.relation).to_string(),
            subject: SubjectRef {
                object: ObjectRef {
                    object_type: self.interner.resolve(s.object_type).to_string(),
                    object_id: self.interner.resolve(s.object_id).to_string(),
                },
                relation: (s.relation != ELLIPSIS)
                    .then(|| self.interner.resolve(s.relation).to_string()),
            },
            caveat: self.caveats.get(stored.edge.caveat).map(|c| CaveatRef {
                name: c.name.to_string(),
                context: c.context.as_deref().cloned(),
            }),
            expiration: (stored.edge.expires_at != NEVER)
                .then(|| Utc.timestamp_micros(stored.edge.expires_at).single())
                .flatten(),
        }
    }

    /// Checks one relationship against the schema and interns it.
    fn validate_relationship(
        &self,
        plan: &SchemaPlan,
        r: &Relationship,
    ) -> Result<(ResourceKey, Edge), EngineError> {
        self.validate_ref(plan, RelationshipRef::of(r))
    }

    /// The caveat of `r`, checked against the schema: defined, with a context whose
    /// every key is a parameter and every value fits its type, at most
    /// [`MAX_CAVEAT_CONTEXT_BYTES`]. Interned; `(schema caveat, id)`.
    fn validate_caveat(&self, plan: &SchemaPlan, r: &RelationshipRef<'_>) -> Result<Option<(u16, CaveatId)>, EngineError> {
        let Some(c) = r.caveat else { return Ok(None) };
        let display = || r.to_relationship().to_string();
        let Some(id) = plan.schema.caveat_id(c.name) else {
            return Err(EngineError::InvalidArgument(format!(
                "caveat `{}` is not defined in the schema, in `{}`",
                c.name,
                display()
            )));
        };
        let context = c.context.to_map().map_err(|e| {
            EngineError::InvalidArgument(format!("{e}, in `{}`", display()))
        })?;
        // An empty context is no context.
        let context = context.filter(|c| !c.is_empty()).map(|c| {
            let text = crate::caveats::canonical(&c);
            (c, text)
        });
        if let Some((ctx, text)) = &context {
            let size = text.len();
            if size > MAX_CAVEAT_CONTEXT_BYTES {
                return Err(EngineError::InvalidArgument(format!(
                    "the caveat context of `{}` is {size} bytes; at most {MAX_CAVEAT_CONTEXT_BYTES} are allowed",
                    display()
                )));
            }
            crate::bounds::json_fields("the caveat context", ctx.iter()).map_err(EngineError::InvalidArgument)?;
            if let Some(program) = plan.schema.caveat(id).and_then(|c| c.program.as_ref()) {
                program.bind_strict(ctx).map_err(|e| {
                    EngineError::InvalidArgument(format!(
                        "invalid context for caveat `{}`: {}, in `{}`",
                        c.name,
                        e.0,
                        display()
                    ))
                })?;
            }
        }
        Ok(Some((id, self.caveats.intern(c.name, context))))
    }

    /// Checks one relationship (borrowed) against the schema and interns it.
    pub(crate) fn validate_ref(&self, plan: &SchemaPlan, r: RelationshipRef<'_>) -> Result<(ResourceKey, Edge), EngineError> {
        let schema = &plan.schema;
        let display = || r.to_relationship().to_string();
        if let Some(problem) = object_id_problem(r.resource_id) {
            return Err(EngineError::InvalidArgument(format!("{problem} (resource of `{}`)", display())));
        }
        if r.subject_id != WILDCARD_ID {
            if let Some(problem) = object_id_problem(r.subject_id) {
                return Err(EngineError::InvalidArgument(format!("{problem} (subject of `{}`)", display())));
            }
        }
        let Some((ty, def)) = schema.definition_by_name(r.resource_type) else {
            return Err(EngineError::UnknownType(r.resource_type.to_string()));
        };
        let Some((rid, rel)) = def.relation_id(r.relation).and_then(|id| def.relation(id).map(|rel| (id, rel))) else {
            return Err(EngineError::UnknownRelation { object_type: def.name.clone(), relation: r.relation.to_string() });
        };
        if rel.is_permission() {
            return Err(EngineError::WriteToPermission { object_type: def.name.clone(), relation: r.relation.to_string() });
        }
        let Some((sub_ty, sub_def)) = schema.definition_by_name(r.subject_type) else {
            return Err(EngineError::UnknownType(r.subject_type.to_string()));
        };
        let is_wildcard = r.subject_id == WILDCARD_ID;
        let kind = match (r.subject_relation, is_wildcard) {
            (None, true) => AllowedKind::Wildcard,
            (None, false) => AllowedKind::Object,
            (Some(_), true) => {
                return Err(EngineError::InvalidArgument(format!(
                    "a wildcard subject cannot have a relation, in `{}`",
                    display()
                )))
            }
            (Some(srel), false) => match sub_def.relation_id(srel) {
                Some(id) => AllowedKind::SubjectSet(id),
                None => {
                    return Err(EngineError::UnknownRelation {
                        object_type: sub_def.name.clone(),
                        relation: srel.to_string(),
                    })
                }
            },
        };
        let caveat = self.validate_caveat(plan, &r)?;
        if !allowed_match(rel.allowed_subjects(), sub_ty, kind, r.expires_at.is_some(), caveat.map(|c| c.0)) {
            let allowed: Vec<String> = rel
                .allowed_subjects()
                .iter()
                .map(|a| arbiter_schema::printer::subject_type(schema, a))
                .collect();
            let mut subject = match kind {
                AllowedKind::Object => sub_def.name.clone(),
                AllowedKind::Wildcard => format!("{}:*", sub_def.name),
                AllowedKind::SubjectSet(_) => format!("{}#{}", sub_def.name, r.subject_relation.unwrap_or("")),
            };
            match (r.caveat, r.expires_at.is_some()) {
                (Some(c), true) => {
                    let _ = write!(subject, " with {} and expiration", c.name);
                }
                (Some(c), false) => {
                    let _ = write!(subject, " with {}", c.name);
                }
                (None, true) => subject.push_str(" with expiration"),
                (None, false) => {}
            }
            return Err(EngineError::SubjectNotAllowed {
                relationship: display(),
                object_type: def.name.clone(),
                relation: r.relation.to_string(),
                subject,
                allowed: allowed.join(", "),
            });
        }
        let key = ResourceKey {
            object_type: plan.type_sym(ty),
            relation: plan.rel_sym(ty, rid),
            object_id: self.interner.intern(r.resource_id),
        };
        let subject = SubjectKey {
            object_type: plan.type_sym(sub_ty),
            relation: match kind {
                AllowedKind::SubjectSet(srel) => plan.rel_sym(sub_ty, srel),
                _ => ELLIPSIS,
            },
            object_id: if is_wildcard { WILDCARD } else { self.interner.intern(r.subject_id) },
        };
        let expires_at = r.expires_at.unwrap_or(NEVER);
        Ok((
            key,
            Edge {
                subject,
                caveat: caveat.map_or(NO_CAVEAT, |c| c.1),
                expires_at,
            },
        ))
    }

    /// Checks one update against the current schema without writing it.
    pub fn validate_update(&self, update: &RelationshipUpdate) -> Result<(), EngineError> {
        let cur = self.current.load();
        let plan = cur.plan.as_deref().ok_or(EngineError::NoSchema)?;
        self.validate_relationship(plan, &update.relationship)
            .map(|_| ())
    }

    /// Applies relationship updates atomically: all of them at one new revision, or none.
    pub fn write(&self, updates: &[RelationshipUpdate]) -> Result<u64, EngineError> {
        self.write_with_preconditions(updates, &[])
    }

    /// Applies relationship updates atomically if every precondition holds at the newest
    /// revision (judged under the write lock, so nothing slips in between).
    pub fn write_with_preconditions(
        &self,
        updates: &[RelationshipUpdate],
        preconditions: &[Precondition],
    ) -> Result<u64, EngineError> {
        let _guard = lock(&self.write_lock);
        let cur = self.current.load_full();
        let (graph_changes, changes) = self.plan_write_at(&cur, updates, preconditions)?;
        self.commit_locked(&cur, &graph_changes, changes)
    }

    /// What [`Engine::write_with_preconditions`] would log at the newest revision, without
    /// writing: for a replica whose writes are ordered elsewhere (Postgres), which holds
    /// that order while it plans, so the newest revision is the truth.
    pub fn plan_write(
        &self,
        updates: &[RelationshipUpdate],
        preconditions: &[Precondition],
    ) -> Result<Vec<Change>, EngineError> {
        let _guard = lock(&self.write_lock);
        let cur = self.current.load_full();
        Ok(self.plan_write_at(&cur, updates, preconditions)?.1)
    }

    fn plan_write_at(
        &self,
        cur: &GraphVersion,
        updates: &[RelationshipUpdate],
        preconditions: &[Precondition],
    ) -> Result<(Vec<GraphChange>, Vec<Change>), EngineError> {
        let plan = cur.plan.clone().ok_or(EngineError::NoSchema)?;
        self.check_preconditions(cur, &plan, preconditions)?;
        let mut validated = Vec::with_capacity(updates.len());
        let mut seen = HashSet::with_capacity(updates.len());
        for u in updates {
            let (key, edge) = self.validate_relationship(&plan, &u.relationship)?;
            if !seen.insert((key, edge.subject)) {
                return Err(EngineError::DuplicateInWrite(u.relationship.to_string()));
            }
            validated.push((u, key, edge));
        }
        let now = now_micros();
        let mut graph_changes = Vec::with_capacity(validated.len());
        let mut changes = Vec::with_capacity(validated.len());
        for (u, key, edge) in validated {
            let existing = cur.find(&key, &edge.subject);
            match u.op {
                UpdateOp::Create if existing.is_some_and(|e| e.live_at(now)) => {
                    return Err(EngineError::AlreadyExists(u.relationship.to_string()));
                }
                UpdateOp::Create | UpdateOp::Touch => {
                    graph_changes.push(GraphChange::Upsert(key, edge));
                    changes.push(Change { op: ChangeOp::Touch, relationship: u.relationship.clone() });
                }
                UpdateOp::Delete => {
                    if existing.is_some() {
                        graph_changes.push(GraphChange::Remove(key, edge.subject));
                        changes.push(Change { op: ChangeOp::Delete, relationship: u.relationship.clone() });
                    }
                }
            }
        }
        Ok((graph_changes, changes))
    }

    /// Validates relationships for [`Engine::import`] without writing them (a replica's
    /// import path, which writes to Postgres).
    pub fn validate_import(&self, relationships: &[Relationship]) -> Result<(), EngineError> {
        let cur = self.current.load_full();
        let plan = cur.plan.clone().ok_or(EngineError::NoSchema)?;
        let mut shapes = Shapes::default();
        for r in relationships {
            shapes.validate(self, &plan, RelationshipRef::of(r))?;
        }
        Ok(())
    }

    /// Bulk load: inserts or replaces every relationship at one new revision. Unlike
    /// [`Engine::write`], a relationship given twice is taken once (the last wins), so an
    /// import can be re-run. Validation is per shape (see `load.rs`), so large batches
    /// cost little more than interning their ids.
    ///
    /// Every relationship is validated before anything is written. Then, for a large
    /// batch and with a core to spare, the store makes it durable on one thread while
    /// this one interns it and builds the next revision of the graph (the two halves of
    /// an import cost about the same); the revision is published only once both are
    /// done.
    pub fn import(&self, relationships: Vec<Relationship>) -> Result<u64, EngineError> {
        let _guard = lock(&self.write_lock);
        let cur = self.current.load_full();
        let plan = cur.plan.clone().ok_or(EngineError::NoSchema)?;
        let parallel = relationships.len() >= PARALLEL_IMPORT && crate::graph::spare_core();
        let accept = |shapes: &mut Shapes, part: &[Relationship]| -> Result<Vec<ShapeSyms>, EngineError> {
            let mut syms = Vec::with_capacity(part.len());
            for r in part {
                syms.push(shapes.accept(self, &plan, RelationshipRef::of(r))?);
            }
            Ok(syms)
        };
        let mut shapes = Shapes::default();
        // With a core to spare, the two halves are validated side by side; the first
        // half's error, if any, is the first in the batch.
        let syms = if parallel {
            let (front, back) = relationships.split_at(relationships.len() / 2);
            let (front, back) = std::thread::scope(|s| {
                let back = s.spawn(|| accept(&mut Shapes::default(), back));
                (accept(&mut shapes, front), back.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            });
            let mut syms = front?;
            syms.extend(back?);
            syms
        } else {
            accept(&mut shapes, &relationships)?
        };
        let changes: Vec<Change> =
            relationships.into_iter().map(|relationship| Change { op: ChangeOp::Touch, relationship }).collect();
        self.commit_built(&cur, changes, parallel, |next, changes| {
            let graph_changes: Vec<GraphChange> = changes
                .iter()
                .zip(&syms)
                .map(|(c, syms)| {
                    let stored = shapes.stored(&self.interner, *syms, RelationshipRef::of(&c.relationship));
                    GraphChange::Upsert(stored.resource, stored.edge)
                })
                .collect();
            next.apply(&graph_changes)
        })
    }

    /// Deletes every relationship the filter selects (expired ones too), atomically, if
    /// the preconditions hold. With a limit, more matches than the limit is refused and
    /// nothing is deleted. Returns how many were deleted and the revision (the current
    /// one when nothing matched).
    pub fn delete_matching(
        &self,
        filter: &RelationshipFilter,
        preconditions: &[Precondition],
        limit: Option<usize>,
    ) -> Result<(usize, u64), EngineError> {
        let _guard = lock(&self.write_lock);
        let cur = self.current.load_full();
        let (graph_changes, changes) = self.plan_delete_at(&cur, filter, preconditions, limit)?;
        if changes.is_empty() {
            return Ok((0, cur.revision));
        }
        let count = changes.len();
        Ok((count, self.commit_locked(&cur, &graph_changes, changes)?))
    }

    /// The deletions [`Engine::delete_matching`] would log at the newest revision, without
    /// writing (see [`Engine::plan_write`]).
    pub fn plan_delete(
        &self,
        filter: &RelationshipFilter,
        preconditions: &[Precondition],
        limit: Option<usize>,
    ) -> Result<Vec<Change>, EngineError> {
        let _guard = lock(&self.write_lock);
        let cur = self.current.load_full();
        Ok(self.plan_delete_at(&cur, filter, preconditions, limit)?.1)
    }

    fn plan_delete_at(
        &self,
        cur: &GraphVersion,
        filter: &RelationshipFilter,
        preconditions: &[Precondition],
        limit: Option<usize>,
    ) -> Result<(Vec<GraphChange>, Vec<Change>), EngineError> {
        let plan = cur.plan.clone().ok_or(EngineError::NoSchema)?;
        self.check_preconditions(cur, &plan, preconditions)?;
        let resolved = ResolvedFilter::resolve(filter, &plan, &self.interner)?;
        let selected = resolved.select(cur);
        if let Some(limit) = limit {
            if selected.len() > limit {
                return Err(EngineError::TooManyMatches { filter: filter.to_string(), count: selected.len(), limit });
            }
        }
        Ok(self.deletions(&selected))
    }

    /// Graph removals and changelog entries deleting `stored`.
    fn deletions(&self, stored: &[StoredRelationship]) -> (Vec<GraphChange>, Vec<Change>) {
        stored
            .iter()
            .map(|s| {
                (
                    GraphChange::Remove(s.resource, s.edge.subject),
                    Change { op: ChangeOp::Delete, relationship: self.to_relationship(s) },
                )
            })
            .unzip()
    }

    /// Deletes the relationships that expired before `now` (a storage sweep: they are
    /// already invisible to every read). Returns how many were removed.
    pub fn sweep_expired(&self, now: Micros) -> Result<usize, EngineError> {
        if self.current.load().expiring() == 0 {
            return Ok(0);
        }
        let _guard = lock(&self.write_lock);
        let cur = self.current.load_full();
        let expired: Vec<StoredRelationship> = cur
            .iter()
            .filter(|s| s.edge.expires_at != NEVER && !s.edge.live_at(now))
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let (graph_changes, changes) = self.deletions(&expired);
        self.commit_locked(&cur, &graph_changes, changes)?;
        Ok(expired.len())
    }

    /// Fails with the first precondition that does not hold at `graph`.
    fn check_preconditions(
        &self,
        graph: &GraphVersion,
        plan: &SchemaPlan,
        preconditions: &[Precondition],
    ) -> Result<(), EngineError> {
        let now = now_micros();
        for p in preconditions {
            let resolved = ResolvedFilter::resolve(&p.filter, plan, &self.interner)?;
            let matched = resolved.select(graph).iter().any(|s| s.edge.live_at(now));
            if matched != p.must_match {
                return Err(EngineError::PreconditionFailed(format!(
                    "{} `{}`",
                    if p.must_match {
                        "no relationship matches"
                    } else {
                        "a relationship matches"
                    },
                    p.filter
                )));
            }
        }
        Ok(())
    }

    /// Persists and publishes one write on top of `cur`. Called with the write lock held.
    fn commit_locked(
        &self,
        cur: &GraphVersion,
        graph_changes: &[GraphChange],
        changes: Vec<Change>,
    ) -> Result<u64, EngineError> {
        self.commit_built(cur, changes, false, |next, _| next.apply(graph_changes))
    }

    /// [`Engine::commit_locked`] with the next graph made by `build` from a copy of
    /// `cur` (returning how many relationship copies it made, for the history bound).
    /// With `parallel`, the store commits on a second thread while `build` runs. Either
    /// way the revision is published only once both are done; a store error publishes
    /// nothing.
    fn commit_built(
        &self,
        cur: &GraphVersion,
        changes: Vec<Change>,
        parallel: bool,
        build: impl FnOnce(&mut GraphVersion, &[Change]) -> usize,
    ) -> Result<u64, EngineError> {
        let mut next = cur.clone();
        next.revision = cur.revision + 1;
        let revision = next.revision;
        let commit = || self.store.commit(&Commit { revision, changes: &changes, ..Commit::default() });
        let (copies, stored) = if parallel {
            std::thread::scope(|s| {
                let store = s.spawn(commit);
                let copies = build(&mut next, &changes);
                (copies, store.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            })
        } else {
            let copies = build(&mut next, &changes);
            (copies, commit())
        };
        stored.map_err(|e| EngineError::Store(e.0))?;
        let revision = self.publish(next, copies);
        let changes = self.notify(revision, changes, None, None, Vec::new());
        if parallel {
            // A large batch's strings take a while to free: not while writers wait.
            std::thread::spawn(move || drop(changes));
        }
        Ok(revision)
    }

    /// Calls `listener` after every published write, in revision order, with the write
    /// lock held (so a listener must be quick and must not write).
    pub fn subscribe(&self, listener: Listener) {
        match self.listeners.write() {
            Ok(mut l) => l.push(listener),
            Err(poisoned) => poisoned.into_inner().push(listener),
        }
    }

    /// Calls the listeners with the commit; gives `changes` back.
    fn notify(
        &self,
        revision: u64,
        changes: Vec<Change>,
        schema: Option<&str>,
        policy_model: Option<String>,
        attributes: Vec<AttributeChange>,
    ) -> Vec<Change> {
        let listeners = match self.listeners.read() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        if listeners.is_empty() {
            return changes;
        }
        let commit = LoggedCommit {
            revision,
            committed_at_micros: now_micros(),
            changes,
            schema: schema.map(str::to_string),
            policy_model,
            attributes,
        };
        for l in listeners.iter() {
            l(&commit);
        }
        commit.changes
    }

    /// Logged commits after `revision` (for Watch), from the store's changelog.
    pub fn changes_after(&self, revision: u64, limit: usize) -> Result<ChangesAfter, EngineError> {
        self.store
            .changes_after(revision, limit)
            .map_err(|e| EngineError::Store(e.0))
    }

    /// The relationships a filter selects at a revision, live ones only, in relationship
    /// order (resource type, id, relation, subject), one page after `cursor`.
    pub fn read_relationships(
        &self,
        filter: &RelationshipFilter,
        consistency: Consistency,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<ReadPage, EngineError> {
        let (relationships, next_cursor, revision) = one_page(limit, relationship_key, |want, chunk, sink| {
            let read = ReadRequest { filter, id_prefix: None, consistency, cursor, limit: want };
            self.read_relationships_each(&read, chunk, sink)
        })?;
        Ok(ReadPage { relationships, next_cursor, revision })
    }

    /// [`Engine::read_relationships`] as a stream: hands `sink` the revision and the
    /// next relationships in order, `chunk` at a time, up to the limit, until `sink`
    /// says stop. A read with a limit of at most [`READ_HEAP_LIMIT`] keeps only that
    /// many (one pass over what the filter selects, whatever it selects); a longer one
    /// keeps a stored relationship (a few words, no string) per match and orders them
    /// a chunk at a time. Returns the revision.
    pub fn read_relationships_each(
        &self,
        req: &ReadRequest<'_>,
        chunk: usize,
        sink: &mut dyn FnMut(u64, Vec<Relationship>) -> bool,
    ) -> Result<u64, EngineError> {
        let graph = self.snapshot(req.consistency)?;
        let plan = graph.plan.as_deref().ok_or(EngineError::NoSchema)?;
        let resolved = ResolvedFilter::resolve(req.filter, plan, &self.interner)?;
        let after = req.cursor.map(cursor_parts).transpose()?;
        if req.id_prefix.is_some() && req.filter.resource_type.is_none() {
            return Err(EngineError::InvalidArgument("a resource id prefix needs a resource type".into()));
        }
        let now = now_micros();
        let mut left = req.limit.unwrap_or(usize::MAX);
        let chunk = chunk.max(1);
        let (small, mut rest) = {
            let names = self.interner.view();
            let cmp = |a: &StoredRelationship, b: &StoredRelationship| {
                cmp_keys(&key_parts(&names, a), &key_parts(&names, b))
            };
            let wanted = |s: &StoredRelationship| {
                s.edge.live_at(now)
                    && req.id_prefix.is_none_or(|p| names.get(s.resource.object_id).starts_with(p))
                    && after.as_ref().is_none_or(|c| cmp_keys(&key_parts(&names, s), c) == std::cmp::Ordering::Greater)
            };
            if left <= READ_HEAP_LIMIT {
                let mut kept = Smallest::new(left);
                resolved.each(&graph, &mut |s| {
                    if wanted(&s) {
                        kept.offer(s, &cmp);
                    }
                });
                (Some(kept.into_sorted(&cmp)), None)
            } else {
                let mut all = Vec::new();
                resolved.each(&graph, &mut |s| {
                    if wanted(&s) {
                        all.push(s);
                    }
                });
                (None, Some(Ordered::new(all)))
            }
        };
        let mut small = small.map(Vec::into_iter);
        while left > 0 {
            let next: Vec<StoredRelationship> = match (&mut small, &mut rest) {
                (Some(kept), _) => kept.by_ref().take(chunk.min(left)).collect(),
                (None, Some(ordered)) => {
                    let names = self.interner.view();
                    let cmp = |a: &StoredRelationship, b: &StoredRelationship| {
                        cmp_keys(&key_parts(&names, a), &key_parts(&names, b))
                    };
                    ordered.next_chunk(chunk.min(left), cmp).to_vec()
                }
                (None, None) => Vec::new(),
            };
            if next.is_empty() {
                break;
            }
            left = left.saturating_sub(next.len());
            let page = next.iter().map(|s| self.to_relationship(s)).collect();
            if !sink(graph.revision, page) {
                break;
            }
        }
        Ok(graph.revision)
    }

    /// Many Checks at one revision. A failing item (unknown relation, bad id) fails
    /// alone; a revision that cannot be had fails the whole call.
    pub fn check_bulk(
        &self,
        items: &[CheckRequest<'_>],
        consistency: Consistency,
    ) -> Result<(Vec<Result<Decision, EngineError>>, u64), EngineError> {
        let (results, revision) = self.check_bulk_responses(items, consistency)?;
        Ok((results.into_iter().map(|r| r.map(|r| r.decision)).collect(), revision))
    }

    /// [`Engine::check_bulk`] with each item's whole response (a conditional answer's
    /// missing caveat parameters).
    pub fn check_bulk_responses(
        &self,
        items: &[CheckRequest<'_>],
        consistency: Consistency,
    ) -> Result<(Vec<Result<CheckResponse, EngineError>>, u64), EngineError> {
        let graph = self.snapshot(consistency)?;
        let time = RequestTime::wall_clock();
        let ids = self.warm(&graph, items);
        let results = items
            .iter()
            .enumerate()
            .map(|(i, req)| match ids.get(i) {
                Some(known) => self.check_in_with(&graph, req, &time, *known),
                None => self.check_in(&graph, req, &time),
            })
            .collect();
        Ok((results, graph.revision))
    }

    /// CheckBulk's first pass: touches every item's resource object and what names its
    /// subject before any is checked. On a graph larger than the cache a Check is a
    /// chain of cache misses, each waited on before the next address is known; the
    /// first links of all items' chains are independent of each other, so touched in one
    /// pass their misses overlap, and the Checks then find them in cache. Items that do
    /// not resolve are skipped here; the Check reports their error.
    ///
    /// Returns, per item, the symbols of its resource and subject ids as the interner
    /// had them (`None` for an id never written), so the Checks need not look them up
    /// again; empty for a batch too small to warm.
    fn warm(&self, graph: &GraphVersion, items: &[CheckRequest<'_>]) -> Vec<KnownIds> {
        let Some(plan) = graph.plan.as_deref() else { return Vec::new() };
        if items.len() < WARM_BATCH {
            return Vec::new();
        }
        // One view of the symbol table for the batch, and all its ids looked up side by
        // side: their cache misses overlap.
        let mut syms = Vec::with_capacity(items.len() * 2);
        self.interner
            .symbols()
            .get_many(items.iter().flat_map(|r| [r.resource_id, r.subject_id]), &mut syms);
        let ids: Vec<KnownIds> = syms
            .chunks_exact(2)
            .map(|pair| KnownIds { resource: pair.first().copied().flatten(), subject: pair.get(1).copied().flatten() })
            .collect();
        if graph.len() < self.config.warm_min_relationships {
            return ids;
        }
        let schema = &plan.schema;
        let mut keys = Vec::with_capacity(items.len());
        for (req, known) in items.iter().zip(&ids) {
            let (Some((res_ty, _)), Some((sub_ty, sub_def))) =
                (schema.definition_by_name(req.resource_type), schema.definition_by_name(req.subject_type))
            else {
                continue;
            };
            let relation = match req.subject_relation {
                None | Some("...") => ELLIPSIS,
                Some(r) => match sub_def.relation_id(r) {
                    Some(rel) => plan.rel_sym(sub_ty, rel),
                    None => continue,
                },
            };
            let (Some(resource), Some(subject)) = (known.resource, known.subject) else {
                continue;
            };
            keys.push((
                ObjectKey { object_type: plan.type_sym(res_ty), object_id: resource },
                SubjectKey { object_type: plan.type_sym(sub_ty), relation, object_id: subject },
            ));
        }
        let subjects: Vec<SubjectKey> = keys.iter().map(|(_, s)| *s).collect();
        let mut touched = graph.touch_subjects(&subjects);
        // Then the objects the items' arrows lead to (a document's folder, its parent,
        // and so on up), a hop at a time: each wave reads the hop edges of the last
        // (in cache now) and touches where they lead, all items' chains side by side.
        let mut wave: Vec<ObjectKey> = keys.iter().map(|(o, _)| *o).collect();
        let mut next = Vec::with_capacity(wave.len());
        let mut objects = Vec::with_capacity(wave.len());
        let cap = items.len() * WARM_FANOUT;
        for hop in 0..=WARM_WAVES {
            touched ^= graph.touch_objects(&wave, &mut objects);
            if hop == WARM_WAVES {
                break;
            }
            for (o, edges) in wave.iter().zip(&objects) {
                let Some(edges) = edges else { continue };
                for rel in plan.arrow_hops(o.object_type) {
                    for e in edges.relation(*rel).iter().take(WARM_FANOUT) {
                        next.push(ObjectKey { object_type: e.subject.object_type, object_id: e.subject.object_id });
                    }
                }
                if next.len() >= cap {
                    break;
                }
            }
            if next.is_empty() {
                break;
            }
            std::mem::swap(&mut wave, &mut next);
            next.clear();
        }
        // And the subjects' nested groups, as this thread keeps them.
        let nesting = plan.nesting_ids();
        if graph.expiring() == 0 && !nesting.is_empty() {
            let owner = graph.groups();
            touched ^= touch_closures(owner, &subjects, nesting);
        }
        std::hint::black_box(touched);
        ids
    }

    /// Checks in order at one revision, stopping after the first answer `stop` accepts
    /// (AuthZEN's short-circuiting batches): the answers up to and including that one.
    /// Like [`Engine::check_bulk_responses`], a failing item fails alone.
    pub fn check_until(
        &self,
        items: &[CheckRequest<'_>],
        consistency: Consistency,
        mut stop: impl FnMut(&Result<CheckResponse, EngineError>) -> bool,
    ) -> Result<(Vec<Result<CheckResponse, EngineError>>, u64), EngineError> {
        let graph = self.snapshot(consistency)?;
        let time = RequestTime::wall_clock();
        let mut results = Vec::with_capacity(items.len());
        for req in items {
            let answer = self.check_in(&graph, req, &time);
            let done = stop(&answer);
            results.push(answer);
            if done {
                break;
            }
        }
        Ok((results, graph.revision))
    }

    /// Why a Check is decided as it is (for `explain`): when the graph allows, the
    /// relationships of one path from the resource to the subject; when Cedar decided,
    /// the policies that did (satisfied permits, or satisfied or erroring forbids).
    pub fn explain(&self, req: &CheckRequest<'_>) -> Result<Explanation, EngineError> {
        let graph = self.snapshot(req.consistency)?;
        let time = RequestTime::wall_clock();
        let mut graph_only = (*graph).clone();
        let policies = graph_only.policies.take();
        let graph_decision = self.check_in(&graph_only, req, &time)?.decision;
        if graph_decision == Decision::Conditional {
            // No path to show: the answer waits on caveat parameters, unless Cedar decided.
            let full = self.check_in(&graph, req, &time)?;
            if full.decision != Decision::Allowed {
                return Ok(Explanation { decision: full.decision, path: Vec::new(), policies: Vec::new(), revision: graph.revision });
            }
        }
        let graph_allowed = graph_decision == Decision::Allowed;
        let (allowed, decided_by) = match policies {
            Some(p) => {
                let (allowed, outcome) = self.cedar_decide(&graph, &p, req, graph_allowed, &time)?;
                (allowed, outcome.map(|o| o.determining(allowed)).unwrap_or_default())
            }
            None => (graph_allowed, Vec::new()),
        };
        let allowed = allowed && !self.closed_by_tenant(&graph, req, &time);
        let explanation = |path| Explanation {
            decision: if allowed { Decision::Allowed } else { Decision::Denied },
            path,
            policies: decided_by.clone(),
            revision: graph.revision,
        };
        if !(allowed && graph_allowed) {
            return Ok(explanation(Vec::new()));
        }
        let plan = graph.plan.as_deref().ok_or(EngineError::NoSchema)?;
        let (res_ty, rel) = resolve_relation(plan, req.resource_type, req.permission)?;
        let subject =
            self.resolve_subject(plan, req.subject_type, req.subject_id, req.subject_relation)?;
        let resource = self.interner.get(req.resource_id).unwrap_or(UNSEEN);
        let explainer = Explainer {
            graph: &graph,
            plan,
            interner: &self.interner,
            caveats: &self.caveats,
            context: req.context,
            target: subject.key,
            target_type: subject.type_id,
            now: &time,
            max_depth: self.config.max_depth,
            unseen: UNSEEN,
        };
        let path = explainer.explain(res_ty, rel, resource)?;
        let path = path
            .into_iter()
            .map(|step| step.replace(UNSEEN_MARK, req.resource_id))
            .collect();
        Ok(explanation(path))
    }

    /// Answers a Check at the revision its consistency asks for, by the wall clock.
    pub fn check(&self, req: &CheckRequest<'_>) -> Result<CheckResponse, EngineError> {
        self.check_with_time(req, &RequestTime::wall_clock())
    }

    /// Answers a Check as if the time were `now` (for expiration).
    pub fn check_at(
        &self,
        req: &CheckRequest<'_>,
        now: Micros,
    ) -> Result<CheckResponse, EngineError> {
        self.check_with_time(req, &RequestTime::fixed(now))
    }

    fn check_with_time(
        &self,
        req: &CheckRequest<'_>,
        now: &RequestTime,
    ) -> Result<CheckResponse, EngineError> {
        let graph = self.pin(req.consistency)?;
        self.check_in(&graph, req, now)
    }

    /// A Check at a revision already pinned (its consistency was applied by the caller).
    fn check_in(
        &self,
        graph: &GraphVersion,
        req: &CheckRequest<'_>,
        now: &RequestTime,
    ) -> Result<CheckResponse, EngineError> {
        // One view of the symbol table for both ids (each view reads a shared pointer).
        let symbols = self.interner.symbols();
        let known = KnownIds { resource: symbols.get(req.resource_id), subject: symbols.get(req.subject_id) };
        drop(symbols);
        self.check_in_with(graph, req, now, known)
    }

    /// [`Engine::check_in`] with the ids' symbols when the caller looked them up already.
    fn check_in_with(
        &self,
        graph: &GraphVersion,
        req: &CheckRequest<'_>,
        now: &RequestTime,
        known: KnownIds,
    ) -> Result<CheckResponse, EngineError> {
        let plan = graph.plan.as_deref().ok_or(EngineError::NoSchema)?;
        let (res_ty, rel) = resolve_relation(plan, req.resource_type, req.permission)?;
        check_resource_id(req.resource_id)?;
        let subject = self.resolve_subject_with(
            plan,
            req.subject_type,
            req.subject_id,
            req.subject_relation,
            Some(known.subject),
        )?;
        let decision = |decision: Decision, missing_context: Vec<String>| CheckResponse {
            decision,
            revision: graph.revision,
            missing_context,
        };
        let resource = match known.resource {
            Some(r) => Some(r),
            // Nothing was ever written about this resource. Only a subject set of the
            // same object can be a member (of itself, through the schema); the shared
            // "unseen" symbol stands for that one id on both sides.
            None if req.resource_type == req.subject_type
                && req.resource_id == req.subject_id
                && subject.relation.is_some() =>
            {
                Some(UNSEEN)
            }
            // The graph grants nothing on it (a Cedar permit still may).
            None => None,
        };
        let verdict = match resource {
            None => Verdict::No,
            Some(resource) => {
                let mut eval = Evaluator::new(
                    graph,
                    plan,
                    &self.interner,
                    &self.caveats,
                    req.context,
                    subject.key,
                    subject.type_id,
                    now,
                    self.config.max_depth,
                );
                eval.share_closures(graph.groups());
                eval.check(res_ty, rel, resource)?
            }
        };
        let (outcome, missing) = match verdict {
            Verdict::Yes => (Decision::Allowed, Vec::new()),
            Verdict::No => (Decision::Denied, Vec::new()),
            Verdict::Conditional(missing) => (Decision::Conditional, missing),
        };
        // Cedar on a conditional graph answer: a permit grants without the caveat, a
        // forbid denies whatever it says; otherwise the answer stays conditional.
        let outcome = match (graph.policies.as_deref(), outcome) {
            (None, o) => o,
            (Some(policies), Decision::Conditional) => {
                if self.cedar_decide(graph, policies, req, false, now)?.0 {
                    Decision::Allowed
                } else if !self.cedar_decide(graph, policies, req, true, now)?.0 {
                    Decision::Denied
                } else {
                    Decision::Conditional
                }
            }
            (Some(policies), o) => {
                if self.cedar_decide(graph, policies, req, o == Decision::Allowed, now)?.0 {
                    Decision::Allowed
                } else {
                    Decision::Denied
                }
            }
        };
        // A suspended tenant's objects deny whatever the graph or Cedar says.
        let closed = outcome != Decision::Denied
            && plan.tenant_gate().is_some()
            && resource.is_some_and(|r| tenant_closed(graph, plan, res_ty, r, now));
        Ok(match outcome {
            _ if closed => decision(Decision::Denied, Vec::new()),
            Decision::Conditional => decision(Decision::Conditional, missing),
            o => decision(o, Vec::new()),
        })
    }

    /// Whether the tenant gate closes the request's resource ([`tenant_closed`]).
    fn closed_by_tenant(&self, graph: &GraphVersion, req: &CheckRequest<'_>, now: &RequestTime) -> bool {
        let Some(plan) = graph.plan.as_deref() else { return false };
        let Ok((ty, _)) = resolve_relation(plan, req.resource_type, req.permission) else { return false };
        self.interner.get(req.resource_id).is_some_and(|r| tenant_closed(graph, plan, ty, r, now))
    }

    /// Checks a request's own values (its context and request-supplied attributes)
    /// against the policy model as a Check would, without checking anything: for a
    /// caller that may never reach a Check with them (a search whose lookup finds
    /// nothing to check still refuses a malformed context).
    pub fn validate_request_values(&self, req: &CheckRequest<'_>) -> Result<(), EngineError> {
        let graph = self.snapshot(req.consistency)?;
        match graph.policies.as_deref() {
            Some(policies) => request_values(policies, req).map(|_| ()),
            None => Ok(()),
        }
    }

    /// The Cedar half of a decision (DESIGN §5): consulted only when a policy can change
    /// the graph's answer. Returns the decision and, when Cedar was asked, what it said.
    fn cedar_decide(
        &self,
        graph: &GraphVersion,
        policies: &CompiledPolicies,
        req: &CheckRequest<'_>,
        graph_allowed: bool,
        now: &RequestTime,
    ) -> Result<(bool, Option<CedarOutcome>), EngineError> {
        let applies = policies.applies(req.permission);
        if !applies.forbid && (graph_allowed || !applies.permit) {
            return Ok((graph_allowed, None));
        }
        let (request, given) = request_values(policies, req)?;
        let principal = (req.subject_type, req.subject_id);
        let resource = (req.resource_type, req.resource_id);
        let ancestors = policies.needs_ancestors(req.permission);
        let entities = self.cedar_entities(graph, policies, [principal, resource], &given, ancestors, now);
        let outcome = match entities {
            Ok(entities) => policies.evaluate(&request, entities),
            Err(failed) => CedarOutcome { failed: Some(failed), ..CedarOutcome::default() },
        };
        Ok((outcome.decide(graph_allowed, applies), Some(outcome)))
    }

    /// The entities of one Cedar request: the principal, the resource and, when a policy
    /// that may apply tests hierarchy (`in`), their ancestors through the graph, each
    /// with its attributes. (Attribute access reaches only the principal and the
    /// resource: attribute values never hold entities.) `given` holds the request's own
    /// attribute values of the principal and the resource, added to the stored ones.
    fn cedar_entities(
        &self,
        graph: &GraphVersion,
        policies: &CompiledPolicies,
        [principal, resource]: [(&str, &str); 2],
        given: &[Option<serde_json::Map<String, serde_json::Value>>; 2],
        ancestors: bool,
        now: &RequestTime,
    ) -> Result<Vec<EntityData>, String> {
        // Its stored attribute values, with the request's own added.
        // Also whether they are the stored ones alone.
        let attributes_of = |object_type: &str, object_id: &str| {
            let mut attributes = match (self.interner.get(object_type), self.interner.get(object_id)) {
                (Some(t), Some(i)) => graph.attributes_of(&ObjectKey { object_type: t, object_id: i }).cloned(),
                _ => None,
            };
            let mut stored = true;
            let is = |(t, i): (&str, &str)| t == object_type && i == object_id;
            for (object, values) in [principal, resource].into_iter().zip(given) {
                if let (true, Some(values)) = (is(object), values) {
                    let mut merged = attributes.as_deref().cloned().unwrap_or_default();
                    // Request values only add request-supplied attributes, which the
                    // store never holds; should one ever meet a stored key, the store wins.
                    for (k, v) in values {
                        merged.values.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                    attributes = Some(Arc::new(merged));
                    stored = false;
                }
            }
            (attributes, stored)
        };
        if !ancestors {
            // No policy that may apply tests hierarchy: the two objects alone.
            let mut out = Vec::with_capacity(2);
            for (t, i) in [principal, resource] {
                if !out.iter().any(|e: &EntityData| e.object_type == t && e.object_id == i) {
                    let (attributes, stored) = attributes_of(t, i);
                    out.push(EntityData {
                        object_type: t.to_string(),
                        object_id: i.to_string(),
                        attributes,
                        parents: Vec::new(),
                        stored,
                    });
                }
            }
            return Ok(out);
        }
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let mut queue: VecDeque<(String, String)> = VecDeque::new();
        for (t, i) in [principal, resource] {
            let key = (t.to_string(), i.to_string());
            if seen.insert(key.clone()) {
                queue.push_back(key);
            }
        }
        let mut out = Vec::new();
        while let Some((object_type, object_id)) = queue.pop_front() {
            if out.len() >= MAX_ENTITIES {
                return Err(format!(
                    "`{}:{}` and `{}:{}` have more than {MAX_ENTITIES} ancestors between them",
                    principal.0, principal.1, resource.0, resource.1
                ));
            }
            let parents = self.cedar_parents(graph, policies.hierarchy(), &object_type, &object_id, now);
            for p in &parents {
                if seen.insert(p.clone()) {
                    queue.push_back(p.clone());
                }
            }
            let (attributes, stored) = attributes_of(&object_type, &object_id);
            out.push(EntityData { object_type, object_id, attributes, parents, stored });
        }
        Ok(out)
    }

    /// An object's Cedar parents: the objects it is a member of (through relations the
    /// schema uses as subject sets) and the objects that contain it (through relations
    /// arrows walk). Live relationships only.
    fn cedar_parents(
        &self,
        graph: &GraphVersion,
        hierarchy: &Hierarchy,
        object_type: &str,
        object_id: &str,
        now: &RequestTime,
    ) -> Vec<(String, String)> {
        let (Some(ty), Some(id)) = (self.interner.get(object_type), self.interner.get(object_id)) else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = Vec::new();
        let mut subjects = vec![
            SubjectKey { object_type: ty, relation: ELLIPSIS, object_id: id },
            SubjectKey { object_type: ty, relation: ELLIPSIS, object_id: WILDCARD },
        ];
        for r in hierarchy.subject_sets.get(object_type).into_iter().flatten() {
            if let Some(rel) = self.interner.get(r) {
                subjects.push(SubjectKey { object_type: ty, relation: rel, object_id: id });
            }
        }
        for subject in &subjects {
            for res in graph.resources_of(subject) {
                let res_type = self.interner.resolve(res.object_type);
                let res_rel = self.interner.resolve(res.relation);
                let member = hierarchy
                    .membership
                    .get(&*res_type)
                    .is_some_and(|rels| rels.iter().any(|r| **r == *res_rel));
                if member && graph.find(&res, subject).is_some_and(|e| e.live(now)) {
                    out.push((res_type.to_string(), self.interner.resolve(res.object_id).to_string()));
                }
            }
        }
        for r in hierarchy.containment.get(object_type).into_iter().flatten() {
            let Some(rel) = self.interner.get(r) else { continue };
            let key = ResourceKey { object_type: ty, relation: rel, object_id: id };
            for e in graph.edges(&key) {
                if e.subject.relation == ELLIPSIS && e.subject.object_id != WILDCARD && e.live(now) {
                    out.push((
                        self.interner.resolve(e.subject.object_type).to_string(),
                        self.interner.resolve(e.subject.object_id).to_string(),
                    ));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The policy model in force (policies, attribute declarations and values).
    pub fn policy_model(&self) -> PolicyModel {
        self.current.load().policies.as_ref().map(|p| p.model.clone()).unwrap_or_default()
    }

    /// Replaces the policy model: every policy is parsed and validated (strict mode)
    /// against the Cedar schema derived from the relationship schema and the attribute
    /// declarations, every attribute value checked against them. On any problem the
    /// running model is untouched; else the new one is published at a new revision.
    pub fn write_policy_model(&self, model: PolicyModel) -> Result<u64, EngineError> {
        let _guard = lock(&self.write_lock);
        let cur = self.current.load_full();
        let json = serde_json::to_string(&model)
            .map_err(|e| EngineError::Store(format!("cannot encode the policy model: {e}")))?;
        let compiled = Self::compile_policy_model(&cur, model)?;
        self.recheck_attributes(&cur, compiled.as_deref()).map_err(EngineError::InvalidPolicy)?;
        let mut next = (*cur).clone();
        next.revision = cur.revision + 1;
        next.policies = compiled;
        self.store
            .commit(&Commit { revision: next.revision, policy_model: Some(&json), ..Commit::default() })
            .map_err(|e| EngineError::Store(e.0))?;
        let revision = self.publish(next, 1);
        self.notify(revision, Vec::new(), None, Some(json), Vec::new());
        Ok(revision)
    }

    /// Replaces the policies, keeping attribute declarations and values.
    pub fn write_policies(&self, policies: Vec<PolicyText>) -> Result<u64, EngineError> {
        let mut model = self.policy_model();
        model.policies = policies;
        self.write_policy_model(model)
    }

    /// Checks a policy model as [`Engine::write_policy_model`] would, without writing it.
    pub fn plan_policy_model(&self, model: PolicyModel) -> Result<(), EngineError> {
        let cur = self.current.load_full();
        let compiled = Self::compile_policy_model(&cur, model)?;
        self.recheck_attributes(&cur, compiled.as_deref()).map_err(EngineError::InvalidPolicy)
    }

    /// [`Engine::check_stored_attributes`] when a policy model replaces the one in force,
    /// skipped when the declarations and labels did not change (new policies cannot
    /// make a stored value unfit): a policy write stays cheap with millions of objects.
    fn recheck_attributes(&self, graph: &GraphVersion, new: Option<&CompiledPolicies>) -> Result<(), PolicyError> {
        let same = match (graph.policies.as_deref(), new) {
            (Some(old), Some(new)) => {
                old.model.declarations == new.model.declarations && old.model.labels == new.model.labels
            }
            _ => false,
        };
        if same {
            return Ok(());
        }
        self.check_stored_attributes(graph, new)
    }

    /// Every stored object's attributes against a (new) policy model: a model or schema
    /// change that would leave an object with an undeclared or mistyped attribute, or an
    /// undefined label, is refused with the objects in the way.
    fn check_stored_attributes(&self, graph: &GraphVersion, policies: Option<&CompiledPolicies>) -> Result<(), PolicyError> {
        let mut count = 0usize;
        let mut examples = Vec::new();
        for (key, attrs) in graph.attribute_entries() {
            if attrs.is_empty() {
                continue;
            }
            let object_type = self.interner.resolve(key.object_type);
            let object_id = self.interner.resolve(key.object_id);
            let problem = match policies {
                None => Some(format!(
                    "`{object_type}:{object_id}` has attributes or labels, and nothing would declare them"
                )),
                Some(p) => p.check_object(&object_type, &object_id, attrs).err(),
            };
            if let Some(problem) = problem {
                count += 1;
                if examples.len() < ORPHAN_EXAMPLES {
                    examples.push(problem);
                }
            }
        }
        if count == 0 {
            return Ok(());
        }
        examples.sort();
        let more = if count > examples.len() { format!(" (and {} more)", count - examples.len()) } else { String::new() };
        Err(PolicyError {
            policy: None,
            position: None,
            message: format!(
                "{count} stored objects would no longer fit their attribute declarations or labels: {}{more}; change or delete their attributes first",
                examples.join("; ")
            ),
        })
    }

    /// Writes attribute values and labels of objects (each replaces the object's
    /// attributes whole; `None` deletes them), atomically, at a new revision. Values are
    /// checked against the declared types (plain JSON strings for `ip` and `decimal`
    /// attributes are converted), labels against the defined labels; on any problem
    /// nothing is written.
    pub fn write_attributes(&self, updates: Vec<AttributeUpdate>) -> Result<u64, EngineError> {
        let _guard = lock(&self.write_lock);
        let cur = self.current.load_full();
        if updates.is_empty() {
            return Ok(cur.revision);
        }
        let planned = self.plan_attributes_at(&cur, &updates)?;
        let mut next = (*cur).clone();
        next.revision = cur.revision + 1;
        let mut changes = Vec::with_capacity(planned.len());
        for (key, change, attrs) in planned {
            next.set_attributes(key, attrs.map(Arc::new));
            changes.push(change);
        }
        self.store
            .commit(&Commit { revision: next.revision, attributes: &changes, ..Commit::default() })
            .map_err(|e| EngineError::Store(e.0))?;
        let revision = self.publish(next, changes.len());
        self.notify(revision, Vec::new(), None, None, changes);
        Ok(revision)
    }

    /// Checks attribute writes as [`Engine::write_attributes`] would, and returns the
    /// changes to store (one per object: the last update wins), without writing them.
    pub fn plan_attributes(&self, updates: &[AttributeUpdate]) -> Result<Vec<AttributeChange>, EngineError> {
        let cur = self.current.load_full();
        Ok(self.plan_attributes_at(&cur, updates)?.into_iter().map(|(_, c, _)| c).collect())
    }

    fn plan_attributes_at(
        &self,
        cur: &GraphVersion,
        updates: &[AttributeUpdate],
    ) -> Result<Vec<(ObjectKey, AttributeChange, Option<ObjectAttributes>)>, EngineError> {
        let plan = cur.plan.clone().ok_or(EngineError::NoSchema)?;
        let mut last: std::collections::HashMap<(&str, &str), usize> = std::collections::HashMap::new();
        for (i, u) in updates.iter().enumerate() {
            attribute_object(&plan, &u.object_type, &u.object_id)?;
            last.insert((&u.object_type, &u.object_id), i);
        }
        let mut out = Vec::with_capacity(last.len());
        for (i, u) in updates.iter().enumerate() {
            if last.get(&(u.object_type.as_str(), u.object_id.as_str())) != Some(&i) {
                continue;
            }
            let attrs = match &u.attributes {
                // Nothing to store and nothing to check.
                Some(a) if a.is_empty() && cur.policies.is_none() => None,
                Some(a) => {
                    let policies = cur.policies.as_deref().ok_or_else(|| {
                        EngineError::InvalidArgument(format!(
                            "`{}:{}`: no attributes are declared and no labels defined; write them first",
                            u.object_type, u.object_id
                        ))
                    })?;
                    let mut a = a.clone();
                    if let Some(fields) = policies.model.declarations.types.get(&u.object_type) {
                        a.values = a
                            .values
                            .into_iter()
                            .map(|(k, v)| {
                                let v = match fields.get(&k) {
                                    Some(d) => typed_value(&d.ty, v),
                                    None => v,
                                };
                                (k, v)
                            })
                            .collect();
                    }
                    a.labels.sort();
                    a.labels.dedup();
                    policies.check_object(&u.object_type, &u.object_id, &a).map_err(EngineError::InvalidArgument)?;
                    (!a.is_empty()).then_some(a)
                }
                None => None,
            };
            let key = ObjectKey {
                object_type: self.interner.intern(&u.object_type),
                object_id: self.interner.intern(&u.object_id),
            };
            let change = AttributeChange {
                object_type: u.object_type.clone(),
                object_id: u.object_id.clone(),
                attributes: attrs.as_ref().map(ObjectAttributes::encode),
            };
            out.push((key, change, attrs));
        }
        Ok(out)
    }

    /// The attributes of objects (`(type, id)`) at a consistency: `None` for an object
    /// without any.
    pub fn read_attributes(
        &self,
        objects: &[(String, String)],
        consistency: Consistency,
    ) -> Result<(u64, Vec<Option<ObjectAttributes>>), EngineError> {
        let graph = self.snapshot(consistency)?;
        if let Some(plan) = graph.plan.as_deref() {
            for (t, i) in objects {
                attribute_object(plan, t, i)?;
            }
        }
        let out = objects
            .iter()
            .map(|(t, i)| {
                let key = ObjectKey { object_type: self.interner.get(t)?, object_id: self.interner.get(i)? };
                graph.attributes_of(&key).map(|a| (**a).clone())
            })
            .collect();
        Ok((graph.revision, out))
    }

    /// Every object with attributes, sorted (`type`, `id`), at a consistency.
    pub fn export_attributes(&self, consistency: Consistency) -> Result<(u64, ExportedAttributes), EngineError> {
        let graph = self.snapshot(consistency)?;
        let mut out: Vec<(String, String, ObjectAttributes)> = graph
            .attribute_entries()
            .map(|(k, a)| {
                (
                    self.interner.resolve(k.object_type).to_string(),
                    self.interner.resolve(k.object_id).to_string(),
                    (**a).clone(),
                )
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok((graph.revision, out))
    }

    fn compile_policy_model(
        cur: &GraphVersion,
        model: PolicyModel,
    ) -> Result<Option<Arc<CompiledPolicies>>, EngineError> {
        if model.is_empty() {
            return Ok(None);
        }
        let plan = cur.plan.as_deref().ok_or(EngineError::NoSchema)?;
        CompiledPolicies::compile(&plan.schema, model).map(|c| Some(Arc::new(c))).map_err(EngineError::InvalidPolicy)
    }

    /// Validates and interns a subject (without growing the symbol table).
    fn resolve_subject(
        &self,
        plan: &SchemaPlan,
        subject_type: &str,
        subject_id: &str,
        subject_relation: Option<&str>,
    ) -> Result<ResolvedSubject, EngineError> {
        self.resolve_subject_with(plan, subject_type, subject_id, subject_relation, None)
    }

    /// [`Engine::resolve_subject`] with the id's symbol when the caller looked it up.
    fn resolve_subject_with(
        &self,
        plan: &SchemaPlan,
        subject_type: &str,
        subject_id: &str,
        subject_relation: Option<&str>,
        known: Option<Option<Sym>>,
    ) -> Result<ResolvedSubject, EngineError> {
        let (sub_ty, sub_def) = plan
            .schema
            .definition_by_name(subject_type)
            .ok_or_else(|| EngineError::UnknownType(subject_type.to_string()))?;
        if subject_id == WILDCARD_ID {
            return Err(EngineError::InvalidArgument(
                "cannot check a wildcard subject; check a concrete subject".into(),
            ));
        }
        if let Some(problem) = object_id_problem(subject_id) {
            return Err(EngineError::InvalidArgument(format!(
                "{problem} (the subject)"
            )));
        }
        let relation = match subject_relation {
            None | Some("...") => None,
            Some(r) => {
                Some(
                    sub_def
                        .relation_id(r)
                        .ok_or_else(|| EngineError::UnknownRelation {
                            object_type: sub_def.name.clone(),
                            relation: r.to_string(),
                        })?,
                )
            }
        };
        Ok(ResolvedSubject {
            type_id: sub_ty,
            relation,
            key: SubjectKey {
                object_type: plan.type_sym(sub_ty),
                relation: relation
                    .map(|r| plan.rel_sym(sub_ty, r))
                    .unwrap_or(ELLIPSIS),
                object_id: known.unwrap_or_else(|| self.interner.get(subject_id)).unwrap_or(UNSEEN),
            },
        })
    }

    /// Every resource of a type on which the subject has the permission, in id order,
    /// one page at a time. Agrees with Check on every resource.
    pub fn lookup_resources(
        &self,
        req: &LookupResourcesRequest<'_>,
    ) -> Result<LookupResourcesPage, EngineError> {
        let (resources, next_cursor, revision) = one_page(req.limit, |r: &FoundResource| r.id.clone(), |limit, chunk, sink| {
            self.lookup_resources_each(&LookupResourcesRequest { limit, ..*req }, chunk, sink)
        })?;
        Ok(LookupResourcesPage { resources, next_cursor, revision })
    }

    /// [`Engine::lookup_resources`] as a stream: hands `sink` the revision and the next
    /// ids in order, `chunk` at a time (the last chunk may be shorter), up to the
    /// request's limit, until `sink` says stop. The walk keeps one symbol per candidate;
    /// only the candidates a chunk needs are checked and named, so a page costs its
    /// size, not the size of the whole result. Returns the revision.
    pub fn lookup_resources_each(
        &self,
        req: &LookupResourcesRequest<'_>,
        chunk: usize,
        sink: &mut dyn FnMut(u64, Vec<FoundResource>) -> bool,
    ) -> Result<u64, EngineError> {
        let graph = self.snapshot(req.consistency)?;
        let plan = graph.plan.as_deref().ok_or(EngineError::NoSchema)?;
        let want = resolve_relation(plan, req.resource_type, req.permission)?;
        let subject =
            self.resolve_subject(plan, req.subject_type, req.subject_id, req.subject_relation)?;
        check_lookup_cursor(req.cursor, false)?;
        let now = RequestTime::wall_clock();
        let ctx = LookupContext {
            graph: &graph,
            plan,
            interner: &self.interner,
            caveats: &self.caveats,
            context: req.context,
            now: &now,
            max_depth: self.config.max_depth,
        };
        // The "unseen" symbol can only be the subject's own object (a subject set whose
        // id nobody wrote, reaching itself through the schema).
        let candidates = ctx.resource_candidates(want, subject.key, subject.type_id, subject.relation);
        let mut eval = ctx.evaluator(subject.key, subject.type_id);
        // Cedar forbids take resources out; grants only a permit gives are not listed.
        let template = CheckRequest {
            resource_type: req.resource_type,
            permission: req.permission,
            subject_type: req.subject_type,
            subject_id: req.subject_id,
            subject_relation: req.subject_relation,
            ..CheckRequest::default()
        };
        let walk = InOrder {
            interner: &self.interner,
            unseen: req.subject_id,
            cursor: req.cursor,
            limit: req.limit.unwrap_or(usize::MAX),
            chunk,
            revision: graph.revision,
        };
        walk.run(candidates, Vec::new(), sink, &mut |s, name| {
            let missing_context = match eval.check(want.0, want.1, s)? {
                Verdict::No => return Ok(None),
                Verdict::Yes => Vec::new(),
                Verdict::Conditional(missing) => missing,
            };
            if tenant_closed(&graph, plan, want.0, s, &now) {
                return Ok(None);
            }
            let id = name(s);
            Ok((!self.forbidden(&graph, &template, Side::Resource, &id, &now)).then_some(FoundResource { id, missing_context }))
        })?;
        Ok(graph.revision)
    }

    /// Every subject of a type (or subject set `type#relation`) with the permission on
    /// the resource, in id order, one page at a time. A wildcard is reported as `*` with
    /// the ids it excludes; it sorts first.
    pub fn lookup_subjects(
        &self,
        req: &LookupSubjectsRequest<'_>,
    ) -> Result<LookupSubjectsPage, EngineError> {
        let (subjects, next_cursor, revision) = one_page(req.limit, |s: &FoundSubject| s.subject_id.clone(), |limit, chunk, sink| {
            self.lookup_subjects_each(&LookupSubjectsRequest { limit, ..*req }, chunk, sink)
        })?;
        Ok(LookupSubjectsPage { subjects, next_cursor, revision })
    }

    /// [`Engine::lookup_subjects`] as a stream, as [`Engine::lookup_resources_each`]
    /// streams resources. A wildcard's exclusions need every candidate checked, so the
    /// chunk that holds the wildcard costs the whole walk's checks.
    pub fn lookup_subjects_each(
        &self,
        req: &LookupSubjectsRequest<'_>,
        chunk: usize,
        sink: &mut dyn FnMut(u64, Vec<FoundSubject>) -> bool,
    ) -> Result<u64, EngineError> {
        let graph = self.snapshot(req.consistency)?;
        let plan = graph.plan.as_deref().ok_or(EngineError::NoSchema)?;
        let (res_ty, rel) = resolve_relation(plan, req.resource_type, req.permission)?;
        check_resource_id(req.resource_id)?;
        check_lookup_cursor(req.cursor, true)?;
        let (sub_ty, sub_def) = plan
            .schema
            .definition_by_name(req.subject_type)
            .ok_or_else(|| EngineError::UnknownType(req.subject_type.to_string()))?;
        let sub_rel = match req.subject_relation {
            None | Some("...") => None,
            Some(r) => {
                Some(
                    sub_def
                        .relation_id(r)
                        .ok_or_else(|| EngineError::UnknownRelation {
                            object_type: sub_def.name.clone(),
                            relation: r.to_string(),
                        })?,
                )
            }
        };
        // A resource nobody wrote has no edges; the walk still finds its own subject sets
        // (as `UNSEEN`, which then can only be the resource's own id).
        let resource = (res_ty, rel, self.interner.get(req.resource_id).unwrap_or(UNSEEN));
        let now = RequestTime::wall_clock();
        let ctx = LookupContext {
            graph: &graph,
            plan,
            interner: &self.interner,
            caveats: &self.caveats,
            context: req.context,
            now: &now,
            max_depth: self.config.max_depth,
        };
        // A suspended tenant's object has no subjects.
        let (candidates, wildcard) = if tenant_closed(&graph, plan, res_ty, resource.2, &now) {
            (Vec::new(), false)
        } else {
            ctx.subject_candidates(resource, sub_ty, sub_rel, req.written_subject_sets_only)
        };
        let mut limit = req.limit.unwrap_or(usize::MAX);
        let mut first = Vec::new();
        // The wildcard sorts first (`*` is below every id byte). It is listed as the
        // graph has it (it stands for subjects not named here; Check still applies
        // Cedar's forbids to each of them), with every candidate it does not cover.
        if wildcard && limit > 0 && req.cursor.is_none_or(|c| WILDCARD_ID > c) {
            // The symbol no id has stands for any subject written nowhere.
            let everyone = ctx.subject_allowed(resource, sub_ty, sub_rel, UNSEEN)?;
            if everyone != Verdict::No {
                let mut excluded = Vec::new();
                for s in &candidates {
                    let one = ctx.subject_allowed(resource, sub_ty, sub_rel, *s)?;
                    // Not covered: denied outright, or on a condition the wildcard's
                    // own answer does not share.
                    let missing_context = match one {
                        Verdict::No => Vec::new(),
                        Verdict::Conditional(m) if m.is_empty() || Verdict::Conditional(m.clone()) != everyone => m,
                        _ => continue,
                    };
                    let names = self.interner.view();
                    let id = if *s == UNSEEN { req.resource_id } else { names.get(*s) };
                    excluded.push(Excluded { id: id.to_string(), missing_context });
                }
                excluded.sort_unstable_by(|a, b| a.id.cmp(&b.id));
                let missing_context = match everyone {
                    Verdict::Conditional(m) => m,
                    _ => Vec::new(),
                };
                first.push(FoundSubject { subject_id: WILDCARD_ID.to_string(), missing_context, excluded });
                limit -= 1;
            }
        }
        // Cedar forbids take concrete subjects out.
        let template = CheckRequest {
            resource_type: req.resource_type,
            resource_id: req.resource_id,
            permission: req.permission,
            subject_type: req.subject_type,
            subject_relation: req.subject_relation,
            ..CheckRequest::default()
        };
        let walk = InOrder {
            interner: &self.interner,
            unseen: req.resource_id,
            cursor: req.cursor,
            limit,
            chunk,
            revision: graph.revision,
        };
        walk.run(candidates, first, sink, &mut |s, name| {
            let missing_context = match ctx.subject_allowed(resource, sub_ty, sub_rel, s)? {
                Verdict::No => return Ok(None),
                Verdict::Yes => Vec::new(),
                Verdict::Conditional(missing) => missing,
            };
            let subject_id = name(s);
            Ok((!self.forbidden(&graph, &template, Side::Subject, &subject_id, &now))
                .then_some(FoundSubject { subject_id, missing_context, excluded: Vec::new() }))
        })?;
        Ok(graph.revision)
    }

    /// Does a Cedar forbid deny `id`, put on its `side` of `template` and checked as a
    /// request the graph allows (without a context, so a forbid that needs one holds:
    /// it fails closed)?
    fn forbidden(
        &self,
        graph: &GraphVersion,
        template: &CheckRequest<'_>,
        side: Side,
        id: &str,
        time: &RequestTime,
    ) -> bool {
        let Some(policies) = graph.policies.as_deref() else { return false };
        if !policies.applies(template.permission).forbid {
            return false;
        }
        let mut req = *template;
        match side {
            Side::Resource => req.resource_id = id,
            Side::Subject => req.subject_id = id,
        }
        !matches!(self.cedar_decide(graph, policies, &req, true, time), Ok((true, _)))
    }

    /// The userset tree of `resource#permission`.
    pub fn expand(
        &self,
        resource_type: &str,
        resource_id: &str,
        permission: &str,
        consistency: Consistency,
    ) -> Result<(ExpandTree, u64), EngineError> {
        let graph = self.snapshot(consistency)?;
        let plan = graph.plan.as_deref().ok_or(EngineError::NoSchema)?;
        let (ty, rel) = resolve_relation(plan, resource_type, permission)?;
        check_resource_id(resource_id)?;
        let id = self.interner.get(resource_id).unwrap_or(UNSEEN);
        let time = RequestTime::wall_clock();
        let mut expander =
            Expander::new(&graph, plan, &self.interner, &time, &self.caveats, self.config.max_depth);
        let mut tree = expander.expand(ty, rel, id, 0)?;
        if id == UNSEEN {
            fix_unseen_ids(&mut tree, resource_id);
        }
        Ok((tree, graph.revision))
    }

    /// The type id of a name in the current schema (for callers that pre-resolve).
    pub fn type_id(&self, name: &str) -> Option<TypeId> {
        self.current
            .load()
            .plan
            .as_ref()
            .and_then(|p| p.schema.type_id(name))
    }
}

/// A pinned revision: a cheap guard on the current one, or an owned older one.
enum Pinned {
    Current(arc_swap::Guard<Arc<GraphVersion>>),
    Owned(Arc<GraphVersion>),
}

impl std::ops::Deref for Pinned {
    type Target = GraphVersion;

    fn deref(&self) -> &GraphVersion {
        match self {
            Pinned::Current(g) => g,
            Pinned::Owned(a) => a,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct ResolvedSubject {
    type_id: TypeId,
    relation: Option<RelationId>,
    key: SubjectKey,
}

/// `type#relation` in the plan, or the error naming what is missing.
fn resolve_relation(
    plan: &SchemaPlan,
    object_type: &str,
    relation: &str,
) -> Result<(TypeId, RelationId), EngineError> {
    let (ty, def) = plan
        .schema
        .definition_by_name(object_type)
        .ok_or_else(|| EngineError::UnknownType(object_type.to_string()))?;
    let rel = def
        .relation_id(relation)
        .ok_or_else(|| EngineError::UnknownRelation {
            object_type: def.name.clone(),
            relation: relation.to_string(),
        })?;
    Ok((ty, rel))
}

/// What a lookup keeps of a candidate: given the candidate and a way to name it, the
/// item to list, or `None` to pass it over.
type Accept<'a, T> = dyn FnMut(Sym, &dyn Fn(Sym) -> String) -> Result<Option<T>, EngineError> + 'a;

/// The page walk both lookups share: candidates after the cursor, in id order, a chunk
/// at a time, each one `accept` keeps handed to the sink until `limit` are out or the
/// sink says stop. `unseen` names the one symbol no id has (the request's own object).
struct InOrder<'a> {
    interner: &'a Interner,
    unseen: &'a str,
    cursor: Option<&'a str>,
    limit: usize,
    chunk: usize,
    revision: u64,
}

impl InOrder<'_> {
    /// `first` is already accepted and counted against the limit (the wildcard). `accept`
    /// is given the candidate and a way to name it, so that a refused candidate is never
    /// named.
    fn run<T>(
        &self,
        mut candidates: Vec<Sym>,
        first: Vec<T>,
        sink: &mut dyn FnMut(u64, Vec<T>) -> bool,
        accept: &mut Accept<'_, T>,
    ) -> Result<(), EngineError> {
        let unseen = self.unseen;
        let name_of = |names: &NameView<'_>, s: Sym| unseen_or(unseen, names, s).to_string();
        if let Some(c) = self.cursor {
            let names = self.interner.view();
            candidates.retain(|s| unseen_or(unseen, &names, *s) > c);
        }
        let mut ordered = Ordered::new(candidates);
        let chunk = self.chunk.max(1);
        let mut left = self.limit;
        let mut page = first;
        // What came first may fill a chunk, or the limit, alone.
        if !page.is_empty()
            && (page.len() >= chunk || left == 0)
            && (!sink(self.revision, std::mem::take(&mut page)) || left == 0)
        {
            return Ok(());
        }
        let name = |s: Sym| name_of(&self.interner.view(), s);
        while left > 0 {
            let next: Vec<Sym> = {
                let names = self.interner.view();
                ordered
                    .next_chunk(chunk.min(left), |a, b| {
                        unseen_or(unseen, &names, *a).cmp(unseen_or(unseen, &names, *b))
                    })
                    .to_vec()
            };
            if next.is_empty() {
                break;
            }
            for s in next {
                let Some(item) = accept(s, &name)? else { continue };
                page.push(item);
                left -= 1;
                if page.len() == chunk || left == 0 {
                    if !sink(self.revision, std::mem::take(&mut page)) {
                        return Ok(());
                    }
                    if left == 0 {
                        break;
                    }
                }
            }
        }
        if !page.is_empty() {
            sink(self.revision, page);
        }
        Ok(())
    }
}

/// A symbol's name, where `UNSEEN` is the request's own object, named `unseen`.
fn unseen_or<'n>(unseen: &'n str, names: &'n NameView<'_>, s: Sym) -> &'n str {
    if s == UNSEEN { unseen } else { names.get(s) }
}

/// Is `resource` (of type `ty`) closed by the tenant gate now: does it belong (a live
/// `tenant` relationship) to a tenant that is suspended (a live `suspended` one)? Two
/// lookups for a gated type; nothing for a schema without the gate.
#[inline(never)]
fn tenant_closed(graph: &GraphVersion, plan: &SchemaPlan, ty: TypeId, resource: Sym, now: &RequestTime) -> bool {
    let Some(gate) = plan.tenant_gate() else { return false };
    if !gate.gates(ty) {
        return false;
    }
    let key = ResourceKey { object_type: plan.type_sym(ty), relation: gate.tenant_rel, object_id: resource };
    graph.edges(&key).iter().any(|e| {
        e.live(now)
            && e.subject.object_type == gate.tenant_type
            && graph
                .edges(&ResourceKey { object_type: gate.tenant_type, relation: gate.suspended, object_id: e.subject.object_id })
                .iter()
                .any(|s| s.live(now))
    })
}

/// A lookup's cursor is the last id of a page (or `*`, the wildcard, for subjects).
fn check_lookup_cursor(cursor: Option<&str>, wildcard: bool) -> Result<(), EngineError> {
    let Some(c) = cursor else { return Ok(()) };
    if wildcard && c == WILDCARD_ID {
        return Ok(());
    }
    match object_id_problem(c) {
        Some(problem) => Err(EngineError::InvalidArgument(format!(
            "invalid cursor: {problem}; pass back the cursor of the last result"
        ))),
        None => Ok(()),
    }
}

fn check_resource_id(id: &str) -> Result<(), EngineError> {
    match object_id_problem(id) {
        Some(problem) => Err(EngineError::InvalidArgument(format!(
            "{problem} (the resource)"
        ))),
        None => Ok(()),
    }
}

/// One page of `limit` (all without one) from a streaming call `each(limit, chunk,
/// sink)`, which is asked for one more than the page, so that the page knows whether
/// another follows: (items, the cursor of the next page, revision).
fn one_page<T>(
    limit: Option<usize>,
    key: impl Fn(&T) -> String,
    each: impl FnOnce(Option<usize>, usize, &mut dyn FnMut(u64, Vec<T>) -> bool) -> Result<u64, EngineError>,
) -> Result<(Vec<T>, Option<String>, u64), EngineError> {
    let want = limit.map(|l| l.saturating_add(1));
    let mut items = Vec::new();
    let revision = each(want, want.unwrap_or(LOOKUP_CHUNK), &mut |_, mut page| {
        items.append(&mut page);
        true
    })?;
    let (items, next) = paginate_sorted(items, limit, key);
    Ok((items, next, revision))
}

/// Cuts a sorted remainder to `limit`; the cursor is the key of the last item kept, or
/// `None` when nothing is left after the page.
fn paginate_sorted<T>(
    mut items: Vec<T>,
    limit: Option<usize>,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    match limit {
        Some(limit) if items.len() > limit => {
            items.truncate(limit);
            let next = items.last().map(key);
            (items, next)
        }
        _ => (items, None),
    }
}

/// The root of an expansion of a resource nobody wrote carries the id asked for.
fn fix_unseen_ids(tree: &mut ExpandTree, id: &str) {
    tree.resource.object_id = id.to_string();
    match &mut tree.node {
        ExpandNode::Union(c) | ExpandNode::Intersection(c) => {
            for child in c {
                if child.resource.object_id.is_empty() {
                    fix_unseen_ids(child, id);
                }
            }
        }
        ExpandNode::Exclusion { base, subtract } => {
            fix_unseen_ids(base, id);
            fix_unseen_ids(subtract, id);
        }
        _ => {}
    }
}

fn allowed_match(
    allowed: &[AllowedSubject],
    ty: TypeId,
    kind: AllowedKind,
    expiration: bool,
    caveat: Option<u16>,
) -> bool {
    allowed.iter().any(|a| {
        a.type_id == ty && a.kind == kind && a.caveat == caveat && a.expiration == expiration
    })
}

/// Which end of a lookup's answers an id is.
#[derive(Debug, Clone, Copy)]
enum Side {
    Resource,
    Subject,
}

/// Compiles a stored policy model (JSON) against the stored schema.
pub(crate) fn compile_model(plan: Option<&SchemaPlan>, json: &str) -> Result<Option<CompiledPolicies>, EngineError> {
    let model: PolicyModel = serde_json::from_str(json).map_err(|e| {
        EngineError::InvalidPolicy(crate::policy::PolicyError {
            policy: None,
            position: None,
            message: format!("the stored policy model is not readable: {e}"),
        })
    })?;
    if model.is_empty() {
        return Ok(None);
    }
    let plan = plan.ok_or(EngineError::NoSchema)?;
    CompiledPolicies::compile(&plan.schema, model).map(Some).map_err(EngineError::InvalidPolicy)
}

/// The Cedar request of a Check, and the request-supplied attribute values of its
/// principal and resource.
type RequestValues = (cedar_policy::Request, [Option<serde_json::Map<String, serde_json::Value>>; 2]);

/// A request's own values for Cedar, checked against the policy model: the Cedar
/// request with its context, and the request-supplied attribute values of the principal
/// and the resource. Each mistake is the caller's (INVALID_ARGUMENT), naming the side.
fn request_values(policies: &CompiledPolicies, req: &CheckRequest<'_>) -> Result<RequestValues, EngineError> {
    fn invalid(side: &'static str) -> impl Fn(String) -> EngineError {
        move |e| EngineError::InvalidArgument(format!("{side}: {e}"))
    }
    let context = policies.context(req.permission, req.context).map_err(invalid("context"))?;
    let principal = (req.subject_type, req.subject_id);
    let resource = (req.resource_type, req.resource_id);
    let request = policies.request(req.permission, principal, resource, context).map_err(invalid("context"))?;
    let given = [
        policies
            .request_attributes(principal.0, principal.1, req.principal_attributes)
            .map_err(invalid("principal attributes"))?,
        policies
            .request_attributes(resource.0, resource.1, req.resource_attributes)
            .map_err(invalid("resource attributes"))?,
    ];
    Ok((request, given))
}

/// An object whose attributes are read or written: a type the schema defines
/// (FAILED_PRECONDITION otherwise, as for relationships) and a valid id.
fn attribute_object(plan: &SchemaPlan, object_type: &str, object_id: &str) -> Result<(), EngineError> {
    if plan.schema.definition_by_name(object_type).is_none() {
        return Err(EngineError::UnknownType(object_type.to_string()));
    }
    match object_id_problem(object_id) {
        Some(problem) => Err(EngineError::InvalidArgument(format!("`{object_type}:{object_id}`: {problem}"))),
        None => Ok(()),
    }
}
