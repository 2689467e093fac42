//! `arbiter-benches`: fixtures for the criterion benchmarks in `benches/`.
//!
//! [`Org`] builds an organisation in an in-memory engine: documents in 8-deep folder
//! chains, folder roots shared with 6-deep nested teams, owners, editors, viewers, a
//! public document (wildcard) and a banned owner (exclusion). Deterministic: the same
//! parameters give the same graph.

use arbiter_engine::{Engine, EngineConfig, EngineError, RelationshipUpdate, UpdateOp};
use arbiter_schema::parse_relationship;

pub const SCHEMA: &str = r#"
definition user {}

definition team {
    relation member: user | team#member
}

definition folder {
    relation parent: folder
    relation viewer: user | team#member
    relation editor: user | team#member
    permission edit = editor + parent->edit
    permission view = viewer + edit + parent->view
}

definition doc {
    relation parent: folder
    relation owner: user
    relation editor: user | team#member
    relation viewer: user | user:* | team#member
    relation banned: user
    permission edit = owner + editor + parent->edit
    permission view = (viewer + edit + parent->view) - banned
}
"#;

/// Depth of every folder chain (a document sits under the deepest folder).
pub const FOLDER_DEPTH: usize = 8;
/// Depth of every team chain (the innermost team holds the users).
pub const TEAM_DEPTH: usize = 6;

#[derive(Debug)]
pub struct Org {
    pub engine: Engine,
    pub documents: usize,
    pub relationships: usize,
}

/// A touch of one relationship, from its text.
pub fn touch(line: &str) -> Result<RelationshipUpdate, EngineError> {
    let relationship =
        parse_relationship(line).map_err(|e| EngineError::InvalidArgument(e.message))?;
    Ok(RelationshipUpdate {
        op: UpdateOp::Touch,
        relationship,
    })
}

/// The relationship lines of an org with `documents` documents in `chains` folder chains.
pub fn org_relationships(documents: usize, chains: usize) -> Vec<String> {
    let chains = chains.max(1);
    let mut out = Vec::new();
    let team_chains = 10;
    for k in 0..team_chains {
        for level in 0..TEAM_DEPTH - 1 {
            out.push(format!(
                "team:t{k}_{level}#member@team:t{k}_{}#member",
                level + 1
            ));
        }
        out.push(format!(
            "team:t{k}_{}#member@user:member{k}",
            TEAM_DEPTH - 1
        ));
    }
    out.push("team:everyone#member@user:reader".to_string());
    for c in 0..chains {
        for level in 1..FOLDER_DEPTH {
            out.push(format!(
                "folder:f{c}_{level}#parent@folder:f{c}_{}",
                level - 1
            ));
        }
        out.push(format!(
            "folder:f{c}_0#viewer@team:t{}_0#member",
            c % team_chains
        ));
        out.push(format!("folder:f{c}_0#viewer@team:everyone#member"));
    }
    for i in 0..documents {
        out.push(format!(
            "doc:d{i}#parent@folder:f{}_{}",
            i % chains,
            FOLDER_DEPTH - 1
        ));
        out.push(format!("doc:d{i}#owner@user:u{}", i % 1000));
        out.push(format!("doc:d{i}#viewer@user:u{}", (i * 7 + 3) % 1000));
    }
    out.push("doc:public#viewer@user:*".to_string());
    out.push("doc:d0#banned@user:u0".to_string());
    out
}

impl Org {
    pub fn build(documents: usize, chains: usize) -> Result<Org, EngineError> {
        let engine = Engine::in_memory(EngineConfig::default());
        engine.write_schema(SCHEMA)?;
        let lines = org_relationships(documents, chains);
        let updates = lines
            .iter()
            .map(|l| touch(l))
            .collect::<Result<Vec<_>, _>>()?;
        engine.write(&updates)?;
        Ok(Org {
            engine,
            documents,
            relationships: lines.len(),
        })
    }
}

/// Relationship updates `doc:w{start..start+n}#viewer@user:writer`, for write benchmarks.
pub fn viewer_updates(start: usize, n: usize) -> Result<Vec<RelationshipUpdate>, EngineError> {
    (start..start + n)
        .map(|i| touch(&format!("doc:w{i}#viewer@user:writer{}", i % 97)))
        .collect()
}

/// Relationship updates `doc:c{start..start+n}#parent@folder:{folder}`: documents filed
/// under one folder, whose reverse list grows with every one (the shape of a tenant
/// that claims every object written for it).
pub fn filed_updates(start: usize, n: usize, folder: &str) -> Result<Vec<RelationshipUpdate>, EngineError> {
    (start..start + n).map(|i| touch(&format!("doc:c{i}#parent@folder:{folder}"))).collect()
}

#[cfg(feature = "baselines")]
pub mod baseline;
#[cfg(feature = "baselines")]
pub mod generated;
pub mod cedar_fixture;
#[cfg(feature = "stores")]
pub mod remote;
