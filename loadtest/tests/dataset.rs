//! The dataset generator: reproducible bytes, relationships that the schema accepts,
//! the nesting depths of the model, and `expected.txt` agreeing with an independent
//! evaluation of `schema.zed` over the relationships as written.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::{HashMap, HashSet};
use std::path::Path;

use arbiter_loadtest::dataset::{generate, GenParams, MAX_FOLDER_DEPTH, MAX_TEAM_DEPTH};
use arbiter_schema::{
    compile, parse_relationship, AllowedKind, CompiledSchema, RelationKind, Rewrite,
};

const FILES: [&str; 5] = [
    "schema.zed",
    "relationships.txt",
    "queries.txt",
    "expected.txt",
    "manifest.json",
];

/// FNV-1a 64, computed here rather than taken from the crate under test.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn digests(dir: &Path) -> Vec<(String, u64)> {
    FILES
        .iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(f)).unwrap();
            (f.to_string(), fnv1a64(&bytes))
        })
        .collect()
}

fn gen(n: u64, seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    generate(
        GenParams {
            relationships: n,
            seed,
        },
        dir.path(),
    )
    .unwrap();
    dir
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let a = gen(10_000, 42);
    let b = gen(10_000, 42);
    let c = gen(10_000, 43);
    let (da, db, dc) = (digests(a.path()), digests(b.path()), digests(c.path()));
    assert_eq!(da, db);
    for (x, y) in da.iter().zip(&dc).skip(1) {
        if x.0 != "schema.zed" {
            assert_ne!(x.1, y.1, "{} did not change with the seed", x.0);
        }
    }
    // The manifest records the digests of the data files.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.path().join("manifest.json")).unwrap())
            .unwrap();
    for (name, digest) in da.iter().take(4) {
        assert_eq!(
            manifest["files"][name]["fnv1a64"],
            serde_json::json!(format!("{digest:016x}")),
            "{name}"
        );
    }
}

/// A subject: `(type, id, relation)`.
type Subject = (String, String, Option<String>);
/// Tuples by `(type, id, relation)`.
type Tuples = HashMap<(String, String, String), Vec<Subject>>;

struct Graph {
    schema: CompiledSchema,
    tuples: Tuples,
}

impl Graph {
    fn load(dir: &Path) -> Self {
        let schema = compile(&std::fs::read_to_string(dir.join("schema.zed")).unwrap())
            .unwrap_or_else(|e| panic!("schema.zed does not compile: {e:?}"));
        let mut tuples: Tuples = HashMap::new();
        let text = std::fs::read_to_string(dir.join("relationships.txt")).unwrap();
        let mut seen = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            assert!(seen.insert(line), "line {} repeats `{line}`", i + 1);
            let r = parse_relationship(line).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
            assert!(r.caveat.is_none() && r.expiration.is_none());
            // Validate against the schema: the relation exists, is not a permission and
            // allows this kind of subject.
            let (_, def) = schema
                .definition_by_name(&r.resource.object_type)
                .unwrap_or_else(|| panic!("line {}: unknown type in `{line}`", i + 1));
            let rel = def
                .relation_id(&r.relation)
                .and_then(|id| def.relation(id))
                .unwrap_or_else(|| panic!("line {}: unknown relation in `{line}`", i + 1));
            let RelationKind::Direct(allowed) = &rel.kind else {
                panic!("line {}: `{line}` writes to a permission", i + 1);
            };
            let (sub_ty, sub_def) = schema
                .definition_by_name(&r.subject.object.object_type)
                .unwrap_or_else(|| panic!("line {}: unknown subject type in `{line}`", i + 1));
            let kind = match (&r.subject.relation, r.subject.object.object_id.as_str()) {
                (None, "*") => AllowedKind::Wildcard,
                (None, _) => AllowedKind::Object,
                (Some(sr), _) => {
                    AllowedKind::SubjectSet(sub_def.relation_id(sr).unwrap_or_else(|| {
                        panic!("line {}: unknown subject relation in `{line}`", i + 1)
                    }))
                }
            };
            assert!(
                allowed
                    .iter()
                    .any(|a| a.type_id == sub_ty && a.kind == kind),
                "line {}: the schema does not allow `{line}`",
                i + 1
            );
            tuples
                .entry((r.resource.object_type, r.resource.object_id, r.relation))
                .or_default()
                .push((
                    r.subject.object.object_type,
                    r.subject.object.object_id,
                    r.subject.relation,
                ));
        }
        Self { schema, tuples }
    }

    fn subjects(&self, ty: &str, id: &str, rel: &str) -> &[Subject] {
        self.tuples
            .get(&(ty.to_string(), id.to_string(), rel.to_string()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// A straightforward evaluation of the compiled schema: does `user:u` have `rel`
    /// on `ty:id`?
    fn check(&self, ty: &str, id: &str, rel: &str, u: &str, depth: u32) -> bool {
        assert!(depth < 50, "recursion too deep at {ty}:{id}#{rel}");
        let (_, def) = self.schema.definition_by_name(ty).unwrap();
        let relation = def.relation(def.relation_id(rel).unwrap()).unwrap();
        match &relation.kind {
            RelationKind::Direct(_) => {
                self.subjects(ty, id, rel)
                    .iter()
                    .any(|(st, sid, sr)| match sr {
                        None => st == "user" && (sid == u || sid == "*"),
                        Some(sr) => self.check(st, sid, sr, u, depth + 1),
                    })
            }
            RelationKind::Permission(rw) => self.eval(ty, id, rw, u, depth + 1),
        }
    }

    fn eval(&self, ty: &str, id: &str, rw: &Rewrite, u: &str, depth: u32) -> bool {
        let (_, def) = self.schema.definition_by_name(ty).unwrap();
        match rw {
            Rewrite::Nil => false,
            Rewrite::Computed(r) => self.check(ty, id, &def.relation(*r).unwrap().name, u, depth),
            Rewrite::Arrow(a) => {
                let tupleset = &def.relation(a.tupleset).unwrap().name;
                self.subjects(ty, id, tupleset)
                    .iter()
                    .any(|(st, sid, _)| self.check(st, sid, &a.computed, u, depth + 1))
            }
            Rewrite::Union(parts) => parts.iter().any(|p| self.eval(ty, id, p, u, depth)),
            Rewrite::Intersection(parts) => parts.iter().all(|p| self.eval(ty, id, p, u, depth)),
            Rewrite::Exclusion(base, minus) => {
                self.eval(ty, id, base, u, depth) && !self.eval(ty, id, minus, u, depth)
            }
        }
    }

    /// The level of every node of a `child -> parent` forest (a root is level 1).
    fn levels(parents: &HashMap<String, String>) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for start in parents.keys() {
            let mut depth = 1;
            let mut cur = start;
            while let Some(p) = parents.get(cur) {
                depth += 1;
                cur = p;
                assert!(depth < 100, "a cycle through {start}");
            }
            out.insert(start.clone(), depth);
        }
        out
    }

    /// Levels of teams (`team:ID`).
    fn team_levels(&self) -> HashMap<String, usize> {
        let mut parents = HashMap::new();
        for ((ty, id, rel), subjects) in &self.tuples {
            if ty == "team" && rel == "member" {
                for (st, sid, sr) in subjects {
                    if st == "team" && sr.as_deref() == Some("member") {
                        let old = parents.insert(format!("team:{sid}"), format!("team:{id}"));
                        assert!(old.is_none(), "team {sid} has two parents");
                    }
                }
            }
        }
        Self::levels(&parents)
    }

    /// Levels of folders (`folder:ID`).
    fn folder_levels(&self) -> HashMap<String, usize> {
        let mut parents = HashMap::new();
        for ((ty, id, rel), subjects) in &self.tuples {
            if ty == "folder" && rel == "parent" {
                assert_eq!(subjects.len(), 1, "folder {id} has several parents");
                parents.insert(format!("folder:{id}"), format!("folder:{}", subjects[0].1));
            }
        }
        Self::levels(&parents)
    }
}

fn queries(dir: &Path) -> Vec<(arbiter_schema::Relationship, bool)> {
    let q = std::fs::read_to_string(dir.join("queries.txt")).unwrap();
    let e = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
    let q: Vec<&str> = q.lines().collect();
    let e: Vec<&str> = e.lines().collect();
    assert_eq!(q.len(), e.len());
    q.iter()
        .zip(e)
        .map(|(line, answer)| {
            let r = parse_relationship(line).unwrap_or_else(|err| panic!("query `{line}`: {err}"));
            let answer = match answer {
                "true" => true,
                "false" => false,
                other => panic!("expected.txt has `{other}`"),
            };
            (r, answer)
        })
        .collect()
}

#[test]
fn relationships_validate_and_expected_answers_are_exact() {
    let dir = gen(10_000, 7);
    let g = Graph::load(dir.path());
    let lines = g.tuples.values().map(Vec::len).sum::<usize>();
    assert!(
        (9_500..=10_500).contains(&lines),
        "{lines} relationships for 10k"
    );
    let qs = queries(dir.path());
    assert_eq!(qs.len(), 1_000);
    let mut allowed = 0;
    let mut kinds = HashSet::new();
    for (r, want) in &qs {
        assert_eq!(r.subject.object.object_type, "user");
        let got = g.check(
            &r.resource.object_type,
            &r.resource.object_id,
            &r.relation,
            &r.subject.object.object_id,
            0,
        );
        assert_eq!(got, *want, "expected.txt is wrong for {r:?}");
        allowed += usize::from(got);
        kinds.insert(format!("{}#{}", r.resource.object_type, r.relation));
    }
    assert!((400..=600).contains(&allowed), "{allowed} of 1000 allowed");
    for k in [
        "document#view",
        "document#edit",
        "folder#view",
        "team#membership",
    ] {
        assert!(kinds.contains(k), "no {k} query");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["relationships"], serde_json::json!(lines));
    assert_eq!(manifest["allowed"], serde_json::json!(allowed));
}

#[test]
fn depths_stay_within_the_model_and_are_reached() {
    let dir = gen(100_000, 3);
    let g = Graph::load(dir.path());
    let teams = g.team_levels();
    let folders = g.folder_levels();
    assert_eq!(teams.values().max(), Some(&usize::from(MAX_TEAM_DEPTH)));
    assert_eq!(folders.values().max(), Some(&usize::from(MAX_FOLDER_DEPTH)));
    // The model has every feature at this size.
    let count = |ty: &str, rel: &str, pred: &dyn Fn(&Subject) -> bool| {
        g.tuples
            .iter()
            .filter(|((t, _, r), _)| t == ty && r == rel)
            .flat_map(|(_, s)| s)
            .filter(|s| pred(s))
            .count()
    };
    assert!(
        count("document", "viewer", &|s| s.1 == "*") > 10,
        "public documents"
    );
    assert!(count("document", "banned", &|_| true) > 10, "banned users");
    assert!(
        count("folder", "viewer", &|s| s.0 == "tenant") > 0,
        "tenant-wide folders"
    );
    assert!(count("tenant", "admin", &|_| true) >= 2, "admins");
    // Skew: the largest team has many times the median team's direct members.
    let mut sizes: Vec<usize> = g
        .tuples
        .iter()
        .filter(|((t, _, r), _)| t == "team" && r == "member")
        .map(|(_, s)| s.iter().filter(|x| x.0 == "user").count())
        .collect();
    sizes.sort_unstable();
    let median = sizes[sizes.len() / 2].max(1);
    let largest = *sizes.last().unwrap();
    assert!(
        largest >= 10 * median,
        "largest team {largest}, median {median}"
    );
    // About half the queries are allowed, and the answers hold (a sample, for time).
    let qs = queries(dir.path());
    assert_eq!(qs.len(), 10_000);
    let allowed = qs.iter().filter(|q| q.1).count();
    assert!(
        (4_000..=6_000).contains(&allowed),
        "{allowed} of 10000 allowed"
    );
    // Deep questions: allowed checks of a document in a folder 8 levels down by a user
    // whose only teams are 6 levels down and who has no grant on the document itself.
    let mut user_teams: HashMap<&str, Vec<usize>> = HashMap::new();
    for ((t, id, rel), subs) in &g.tuples {
        if t == "team" && rel == "member" {
            let level = teams.get(&format!("team:{id}")).copied().unwrap_or(1);
            for s in subs.iter().filter(|s| s.0 == "user") {
                user_teams.entry(s.1.as_str()).or_default().push(level);
            }
        }
    }
    let deepest = qs
        .iter()
        .filter(|(r, allowed)| {
            let doc = &r.resource.object_id;
            let user = &r.subject.object.object_id;
            let folder = g.subjects("document", doc, "folder").first();
            let direct = ["owner", "editor", "viewer"].iter().any(|rel| {
                g.subjects("document", doc, rel)
                    .iter()
                    .any(|s| &s.1 == user)
            });
            let levels = user_teams
                .get(user.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            *allowed
                && r.resource.object_type == "document"
                && !direct
                && folder.is_some_and(|f| folders.get(&format!("folder:{}", f.1)) == Some(&8))
                && !levels.is_empty()
                && levels.iter().all(|&l| l == 6)
        })
        .count();
    assert!(deepest >= 20, "only {deepest} deepest allowed questions");
    for (r, want) in qs.iter().step_by(10) {
        let got = g.check(
            &r.resource.object_type,
            &r.resource.object_id,
            &r.relation,
            &r.subject.object.object_id,
            0,
        );
        assert_eq!(got, *want, "expected.txt is wrong for {r:?}");
    }
}

#[test]
fn too_small_a_dataset_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = generate(
        GenParams {
            relationships: 10,
            seed: 1,
        },
        dir.path(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("at least 1000"), "{e}");
}
