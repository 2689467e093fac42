//! The systems Arbiter is compared with in `benches/baselines.rs`, on one dataset from
//! `arbiter-loadtest gen` and its queries:
//!
//! - [`postgres::Relational`]: the relational design teams build by hand (tables for
//!   memberships, folders and ACLs) with a recursive CTE per check, and one statement
//!   for a batch of checks;
//! - [`cedar::CedarAlone`]: Cedar with the schema's rules written as policies and the
//!   entities each request needs materialised per request, as a caller without a
//!   relationship store runs it;
//! - [`spicedb::SpicedbBaseline`]: SpiceDB itself, in this process from its C-shared
//!   library, on its in-memory datastore.
//!
//! [`deep::deep_queries`] picks out the questions that climb the deepest nesting. Each
//! system answers the generator's four query kinds and must agree with `expected.txt`.

pub mod cedar;
pub mod deep;
pub mod postgres;
#[cfg(feature = "stores")]
pub mod spicedb;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// The query kinds `arbiter-loadtest gen` writes (its `queries.txt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// `document:D#view@user:U`
    DocumentView,
    /// `document:D#edit@user:U`
    DocumentEdit,
    /// `folder:F#view@user:U`
    FolderView,
    /// `team:T#membership@user:U`
    TeamMembership,
}

impl QueryKind {
    pub fn resource_type(self) -> &'static str {
        match self {
            QueryKind::DocumentView | QueryKind::DocumentEdit => "document",
            QueryKind::FolderView => "folder",
            QueryKind::TeamMembership => "team",
        }
    }

    pub fn permission(self) -> &'static str {
        match self {
            QueryKind::DocumentView | QueryKind::FolderView => "view",
            QueryKind::DocumentEdit => "edit",
            QueryKind::TeamMembership => "membership",
        }
    }
}

/// One check question: may `user:{user}` do the kind's permission on the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub kind: QueryKind,
    /// The resource's object id (`d12`, `f3`, `t7`), without its type.
    pub resource: String,
    /// The user's object id, without `user:`.
    pub user: String,
}

impl Query {
    /// The query as `queries.txt` writes it.
    pub fn line(&self) -> String {
        format!(
            "{}:{}#{}@user:{}",
            self.kind.resource_type(),
            self.resource,
            self.kind.permission(),
            self.user
        )
    }
}

/// Parses one `queries.txt` line.
pub fn parse_query(line: &str) -> Result<Query> {
    let (resource, subject) = line
        .split_once('@')
        .ok_or_else(|| anyhow!("query `{line}` has no `@`"))?;
    let (object, permission) = resource
        .split_once('#')
        .ok_or_else(|| anyhow!("query `{line}` has no `#permission`"))?;
    let (rtype, rid) = object
        .split_once(':')
        .ok_or_else(|| anyhow!("query `{line}`: resource is not `type:id`"))?;
    let user = subject
        .strip_prefix("user:")
        .ok_or_else(|| anyhow!("query `{line}`: the subject is not a user"))?;
    let kind = match (rtype, permission) {
        ("document", "view") => QueryKind::DocumentView,
        ("document", "edit") => QueryKind::DocumentEdit,
        ("folder", "view") => QueryKind::FolderView,
        ("team", "membership") => QueryKind::TeamMembership,
        _ => bail!("query `{line}`: `{rtype}#{permission}` is not one of the generator's query kinds"),
    };
    Ok(Query {
        kind,
        resource: rid.to_string(),
        user: user.to_string(),
    })
}

/// A generated dataset on disk and its queries with their exact answers.
#[derive(Debug)]
pub struct Dataset {
    pub dir: PathBuf,
    pub relationships: u64,
    pub queries: Vec<Query>,
    pub expected: Vec<bool>,
}

impl Dataset {
    pub fn relationships_path(&self) -> PathBuf {
        self.dir.join("relationships.txt")
    }

    pub fn schema(&self) -> Result<String> {
        let p = self.dir.join("schema.zed");
        std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))
    }
}

/// Reads a dataset directory written by `arbiter-loadtest gen`.
pub fn read_dataset(dir: &Path) -> Result<Dataset> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))
    };
    let manifest: serde_json::Value = serde_json::from_str(&read("manifest.json")?)
        .with_context(|| format!("parse {}/manifest.json", dir.display()))?;
    let relationships = manifest["relationships"].as_u64().unwrap_or(0);
    let queries = read("queries.txt")?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_query(l.trim()))
        .collect::<Result<Vec<_>>>()?;
    let expected = read("expected.txt")?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match l.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(anyhow!("{}/expected.txt: `{other}` is not true or false", dir.display())),
        })
        .collect::<Result<Vec<_>>>()?;
    if expected.len() != queries.len() {
        bail!(
            "{}: {} queries but {} answers",
            dir.display(),
            queries.len(),
            expected.len()
        );
    }
    Ok(Dataset {
        dir: dir.to_path_buf(),
        relationships,
        queries,
        expected,
    })
}

/// The dataset of `relationships` relationships and `seed`, generated once into
/// `root/gen-{relationships}-{seed}` and reused by later runs (generation is
/// deterministic, so a complete directory is the same bytes).
pub fn dataset(root: &Path, relationships: u64, seed: u64) -> Result<Dataset> {
    let dir = root.join(format!("gen-{relationships}-{seed}"));
    if !dir.join("manifest.json").is_file() {
        let partial = root.join(format!("gen-{relationships}-{seed}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        arbiter_loadtest::dataset::generate(
            arbiter_loadtest::dataset::GenParams {
                relationships,
                seed,
            },
            &partial,
        )?;
        std::fs::rename(&partial, &dir)
            .with_context(|| format!("rename {} to {}", partial.display(), dir.display()))?;
    }
    read_dataset(&dir)
}

/// Where benches keep generated datasets: `$ARBITER_BENCH_DATA`, else
/// `$CARGO_TARGET_DIR/bench-datasets`, else the system's temp dir.
pub fn data_root() -> PathBuf {
    if let Some(d) = std::env::var_os("ARBITER_BENCH_DATA") {
        return PathBuf::from(d);
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("bench-datasets");
    }
    std::env::temp_dir().join("arbiter-bench-datasets")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_print_back() {
        for line in [
            "document:d12#view@user:u3",
            "document:d1#edit@user:u9",
            "folder:f4#view@user:u1",
            "team:t2#membership@user:u0",
        ] {
            let q = parse_query(line).unwrap();
            assert_eq!(q.line(), line);
        }
        let err = parse_query("folder:f4#edit@user:u1").unwrap_err().to_string();
        assert!(err.contains("folder#edit"), "{err}");
        assert!(parse_query("document:d1#view@team:t1#member").is_err());
    }
}
