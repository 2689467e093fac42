//! Caveats as relationships carry them, and their evaluation within one request.
//!
//! A caveated relationship's edge holds a [`CaveatId`]: an index into the engine's
//! [`Caveats`], which keeps each distinct (caveat name, context) pair once, as the
//! symbol table keeps each id. An edge without a caveat holds 0, and the evaluator
//! never looks further.
//!
//! A relationship's context is converted to CEL values once per compiled caveat (a
//! schema change compiles new ones) and kept with the pair; a request's context is
//! converted once per caveat per request ([`RequestCaveats`]).

use std::sync::Arc;

use std::collections::HashMap;
use std::sync::Mutex;

use arbiter_schema::caveat::{Bindings, CaveatProgram, Outcome};
use arc_swap::{ArcSwap, ArcSwapOption};
use rustc_hash::FxBuildHasher;

/// An index into a [`CaveatTable`]; 0 is "no caveat".
pub type CaveatId = u32;

/// No caveat.
pub const NO_CAVEAT: CaveatId = 0;

/// One caveat as a relationship carries it.
#[derive(Debug)]
pub struct BoundCaveat {
    pub name: Arc<str>,
    /// The relationship's context, if it has one.
    pub context: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// The context converted for one compiled program: `(program address, values)`.
    /// The program is kept alive by the `Arc` here, so its address is not reused while
    /// the entry names it.
    converted: ArcSwapOption<(Arc<CaveatProgram>, Bindings)>,
}

impl BoundCaveat {
    /// The context's values for `program` (converted the first time it is asked).
    pub fn values(&self, program: &Arc<CaveatProgram>) -> Result<Arc<(Arc<CaveatProgram>, Bindings)>, String> {
        if let Some(hit) = self.converted.load_full() {
            if Arc::ptr_eq(&hit.0, program) {
                return Ok(hit);
            }
        }
        let bindings = match &self.context {
            Some(c) => program.bind_strict(c).map_err(|e| e.0)?,
            None => Bindings::empty(),
        };
        let entry = Arc::new((program.clone(), bindings));
        self.converted.store(Some(entry.clone()));
        Ok(entry)
    }
}

/// `{...}` with every object's keys sorted (what identifies a context).
pub fn canonical(c: &serde_json::Map<String, serde_json::Value>) -> String {
    arbiter_schema::sorted_keys(&serde_json::Value::Object(c.clone())).to_string()
}

type Key = (Arc<str>, Option<Box<str>>);

/// Every distinct (caveat, context) pair relationships have carried, for the engine's
/// lifetime, like the symbol table: an id, once given, names the same pair for good, so
/// a revision's edges can hold ids and any revision resolves them. Reads take no lock
/// (a persistent vector behind an `ArcSwap`, replaced whole by a writer); writers
/// take turns on the index.
#[derive(Debug, Default)]
pub struct Caveats {
    by_id: ArcSwap<imbl::Vector<Arc<BoundCaveat>>>,
    index: Mutex<HashMap<Key, CaveatId, FxBuildHasher>>,
}

impl Caveats {
    /// The id of `(name, context)`, added if new; a context comes with its
    /// [`canonical`] text (what identifies it).
    pub fn intern(&self, name: &str, context: Option<(serde_json::Map<String, serde_json::Value>, String)>) -> CaveatId {
        let (context, text) = match context {
            Some((c, text)) => (Some(c), Some(text.into_boxed_str())),
            None => (None, None),
        };
        let key: Key = (Arc::from(name), text);
        let mut index = self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(id) = index.get(&key) {
            return *id;
        }
        let mut table = (**self.by_id.load()).clone();
        let id = CaveatId::try_from(table.len() + 1).unwrap_or(CaveatId::MAX);
        table.push_back(Arc::new(BoundCaveat {
            name: key.0.clone(),
            context: context.map(Arc::new),
            converted: ArcSwapOption::empty(),
        }));
        self.by_id.store(Arc::new(table));
        index.insert(key, id);
        id
    }

    /// The pair an id names.
    pub fn get(&self, id: CaveatId) -> Option<Arc<BoundCaveat>> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.by_id.load().get(index).cloned()
    }

    /// How many distinct pairs there are.
    pub fn len(&self) -> usize {
        self.by_id.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The request's context converted per caveat, as a request meets them.
#[derive(Debug, Default)]
pub struct RequestCaveats<'a> {
    context: Option<&'a serde_json::Map<String, serde_json::Value>>,
    converted: smallvec::SmallVec<[(Arc<CaveatProgram>, Bindings); 2]>,
}

impl<'a> RequestCaveats<'a> {
    pub fn new(context: Option<&'a serde_json::Map<String, serde_json::Value>>) -> Self {
        RequestCaveats { context, converted: smallvec::SmallVec::new() }
    }

    /// Evaluates `program` over a relationship's values and the request's.
    pub fn evaluate(&mut self, program: &Arc<CaveatProgram>, relationship: &Bindings) -> Result<Outcome, String> {
        let at = match self.converted.iter().position(|(p, _)| Arc::ptr_eq(p, program)) {
            Some(at) => at,
            None => {
                let bindings = match self.context {
                    Some(c) => program.bind(c).map_err(|e| e.0)?,
                    None => Bindings::empty(),
                };
                self.converted.push((program.clone(), bindings));
                self.converted.len() - 1
            }
        };
        let Some((_, request)) = self.converted.get(at) else {
            return Err("internal: a converted context went missing".into());
        };
        program.evaluate(relationship, request).map_err(|e| e.0)
    }
}
