//! One conformance suite for every [`RelationshipStore`]: the in-memory store, RocksDB
//! and Postgres run the same checks. Each check opens fresh stores through the factory
//! (a factory may return the same durable location twice to test reopening) and returns
//! a message naming what went wrong.

use arbiter_schema::{parse_relationship, Relationship};

use crate::store::{AttributeChange, Change, ChangeOp, ChangesAfter, Commit, RelationshipStore, StoredState};

/// Opens a store. `name` identifies a durable location: the same name twice means
/// "reopen what the first one wrote".
pub type StoreFactory<'a> = dyn Fn(&str) -> Result<Box<dyn RelationshipStore>, String> + 'a;

fn rel(s: &str) -> Result<Relationship, String> {
    parse_relationship(s).map_err(|e| e.message)
}

fn touch(s: &str) -> Result<Change, String> {
    Ok(Change {
        op: ChangeOp::Touch,
        relationship: rel(s)?,
    })
}

fn delete(s: &str) -> Result<Change, String> {
    Ok(Change {
        op: ChangeOp::Delete,
        relationship: rel(s)?,
    })
}

fn sorted(mut state: StoredState) -> StoredState {
    state.relationships.sort_by_key(|r| r.to_string());
    state
}

const SCHEMA: &str = "definition user {}\ndefinition doc { relation viewer: user | user:* }";

type Check = fn(&StoreFactory<'_>) -> Result<(), String>;

/// Runs every check; returns the failures.
pub fn run(factory: &StoreFactory<'_>) -> Vec<String> {
    let checks: [(&str, Check); 5] = [
        ("empty store loads empty", empty_store),
        ("commits survive reopening", commits_survive_reopening),
        ("touch replaces attributes", touch_replaces),
        ("every relationship form round-trips", forms_round_trip),
        ("the changelog replays commits in order", changelog_replays),
    ];
    checks
        .iter()
        .filter_map(|(name, check)| check(factory).err().map(|e| format!("{name}: {e}")))
        .collect()
}

/// The checks for stores that keep the policy model (policies, attribute declarations
/// and values): the in-memory store and RocksDB.
pub fn run_policy_model(factory: &StoreFactory<'_>) -> Vec<String> {
    let checks: [(&str, Check); 2] = [
        ("the policy model round-trips", policy_model_round_trips),
        ("attributes round-trip", attributes_round_trip),
    ];
    checks
        .iter()
        .filter_map(|(name, check)| check(factory).err().map(|e| format!("{name}: {e}")))
        .collect()
}

/// The checks for stores that keep caveats (the relationship's caveat name and
/// context): the in-memory store, RocksDB and Postgres.
pub fn run_caveats(factory: &StoreFactory<'_>) -> Vec<String> {
    let checks: [(&str, Check); 2] = [
        ("caveated relationships round-trip", caveats_round_trip),
        ("a touch replaces the caveat", touch_replaces_the_caveat),
    ];
    checks
        .iter()
        .filter_map(|(name, check)| check(factory).err().map(|e| format!("{name}: {e}")))
        .collect()
}

fn caveats_round_trip(factory: &StoreFactory<'_>) -> Result<(), String> {
    let lines = [
        r#"doc:1#viewer@user:a[c:{"limit":2,"nested":{"ip":"10.0.0.1","list":[1,2.5,"x"]}}]"#,
        "doc:1#viewer@user:b[c]",
        r#"doc:1#viewer@user:*[c:{"limit":7}][expiration:2030-01-01T00:00:00Z]"#,
        "doc:2#viewer@user:a",
    ];
    let changes: Vec<Change> = lines.iter().map(|l| touch(l)).collect::<Result<_, _>>()?;
    {
        let store = factory("caveats")?;
        store.commit(&Commit { revision: 1, schema: Some(SCHEMA), changes: &changes, ..Commit::default() }).map_err(|e| e.0)?;
        match store.changes_after(0, 10).map_err(|e| e.0)? {
            ChangesAfter::Commits(c) if c.len() == 1 && sorted_changes(&c[0].changes) == sorted_changes(&changes) => {}
            other => return Err(format!("expected the caveated changes in the changelog, got {other:?}")),
        }
    }
    let state = sorted(factory("caveats")?.load().map_err(|e| e.0)?);
    let mut want: Vec<Relationship> = changes.iter().map(|c| c.relationship.clone()).collect();
    want.sort_by_key(|r| r.to_string());
    if state.relationships != want {
        return Err(format!("expected {want:?} after reopening, loaded {:?}", state.relationships));
    }
    Ok(())
}

/// A touch replaces the whole relationship: with no caveat it drops the stored one, with
/// another caveat or context it replaces them.
fn touch_replaces_the_caveat(factory: &StoreFactory<'_>) -> Result<(), String> {
    {
        let store = factory("caveat-replaced")?;
        let first = [touch(r#"doc:1#viewer@user:a[c:{"limit":2}]"#)?, touch("doc:2#viewer@user:a")?];
        store.commit(&Commit { revision: 1, schema: Some(SCHEMA), changes: &first, ..Commit::default() }).map_err(|e| e.0)?;
        let second = [touch("doc:1#viewer@user:a")?, touch(r#"doc:2#viewer@user:a[c:{"limit":3}]"#)?];
        store.commit(&Commit { revision: 2, changes: &second, ..Commit::default() }).map_err(|e| e.0)?;
        let third = [touch("doc:2#viewer@user:a[c]")?];
        store.commit(&Commit { revision: 3, changes: &third, ..Commit::default() }).map_err(|e| e.0)?;
    }
    let state = sorted(factory("caveat-replaced")?.load().map_err(|e| e.0)?);
    let want = vec![rel("doc:1#viewer@user:a")?, rel("doc:2#viewer@user:a[c]")?];
    if state.relationships != want {
        return Err(format!("expected {want:?} after reopening, loaded {:?}", state.relationships));
    }
    Ok(())
}

fn sorted_changes(changes: &[Change]) -> Vec<String> {
    let mut v: Vec<String> = changes.iter().map(|c| c.relationship.to_string()).collect();
    v.sort();
    v
}

fn attributes_round_trip(factory: &StoreFactory<'_>) -> Result<(), String> {
    let change = |t: &str, i: &str, json: Option<&str>| AttributeChange {
        object_type: t.into(),
        object_id: i.into(),
        attributes: json.map(str::to_string),
    };
    {
        let store = factory("attributes")?;
        store.commit(&Commit { revision: 1, schema: Some(SCHEMA), ..Commit::default() }).map_err(|e| e.0)?;
        let first = [change("user", "alice", Some(r#"{"values":{"a":1}}"#)), change("user", "bob", Some("{}"))];
        store.commit(&Commit { revision: 2, attributes: &first, ..Commit::default() }).map_err(|e| e.0)?;
        let second = [change("user", "bob", None), change("user", "alice", Some(r#"{"values":{"a":2}}"#))];
        store.commit(&Commit { revision: 3, attributes: &second, ..Commit::default() }).map_err(|e| e.0)?;
        match store.changes_after(2, 10).map_err(|e| e.0)? {
            ChangesAfter::Commits(c) if c.len() == 1 && c[0].attributes == second => {}
            other => return Err(format!("expected revision 3's attribute changes in the changelog, got {other:?}")),
        }
    }
    let state = factory("attributes")?.load().map_err(|e| e.0)?;
    let expected = vec![("user".to_string(), "alice".to_string(), r#"{"values":{"a":2}}"#.to_string())];
    if state.attributes != expected || state.revision != 3 {
        return Err(format!("expected {expected:?} at 3 after reopening, loaded {:?} at {}", state.attributes, state.revision));
    }
    Ok(())
}

fn policy_model_round_trips(factory: &StoreFactory<'_>) -> Result<(), String> {
    let first = r#"{"policies":[{"id":"a","text":"permit(principal, action, resource);"}]}"#;
    let second = r#"{"policies":[]}"#;
    {
        let store = factory("policy-model")?;
        let commit = |revision, schema, policy_model| {
            store.commit(&Commit { revision, schema, policy_model, ..Commit::default() }).map_err(|e| e.0)
        };
        commit(1, Some(SCHEMA), None)?;
        commit(2, None, Some(first))?;
        commit(3, None, None)?;
    }
    let store = factory("policy-model")?;
    let state = store.load().map_err(|e| e.0)?;
    if state.policy_model.as_deref() != Some(first) || state.revision != 3 {
        return Err(format!("expected the model of revision 2 at 3, loaded {:?} at {}", state.policy_model, state.revision));
    }
    store
        .commit(&Commit { revision: 4, policy_model: Some(second), ..Commit::default() })
        .map_err(|e| e.0)?;
    match store.changes_after(1, 100).map_err(|e| e.0)? {
        // (A revision that changed nothing may or may not have an entry.)
        ChangesAfter::Commits(c)
            if c.iter()
                .filter(|c| c.policy_model.is_some())
                .map(|c| (c.revision, c.policy_model.as_deref()))
                .collect::<Vec<_>>()
                == [(2, Some(first)), (4, Some(second))] => {}
        other => return Err(format!("expected the model in the changelog at 2 and 4, got {other:?}")),
    }
    drop(store);
    let state = factory("policy-model")?.load().map_err(|e| e.0)?;
    if state.policy_model.as_deref() != Some(second) {
        return Err(format!("expected the newer model after reopening, loaded {:?}", state.policy_model));
    }
    Ok(())
}

fn empty_store(factory: &StoreFactory<'_>) -> Result<(), String> {
    let store = factory("empty")?;
    let state = store.load().map_err(|e| e.0)?;
    if state != StoredState::default() {
        return Err(format!("expected nothing, loaded {state:?}"));
    }
    Ok(())
}

fn commits_survive_reopening(factory: &StoreFactory<'_>) -> Result<(), String> {
    {
        let store = factory("reopen")?;
        store
            .commit(&Commit {
                revision: 1,
                schema: Some(SCHEMA),
                policy_model: None,
                changes: &[],
                attributes: &[],
            })
            .map_err(|e| e.0)?;
        let changes = [
            touch("doc:1#viewer@user:a")?,
            touch("doc:2#viewer@user:b")?,
            touch("doc:3#viewer@user:*")?,
        ];
        store
            .commit(&Commit {
                revision: 2,
                schema: None,
                policy_model: None,
                changes: &changes,
                attributes: &[],
            })
            .map_err(|e| e.0)?;
        store
            .commit(&Commit {
                revision: 3,
                schema: None,
                policy_model: None,
                changes: &[delete("doc:2#viewer@user:b")?],
                attributes: &[],
            })
            .map_err(|e| e.0)?;
    }
    let store = factory("reopen")?;
    let state = sorted(store.load().map_err(|e| e.0)?);
    let want = StoredState {
        revision: 3,
        schema: Some(SCHEMA.to_string()),
        policy_model: None,
        relationships: vec![rel("doc:1#viewer@user:a")?, rel("doc:3#viewer@user:*")?],
        attributes: Vec::new(),
    };
    if state != want {
        return Err(format!("expected {want:?}, loaded {state:?}"));
    }
    Ok(())
}

fn touch_replaces(factory: &StoreFactory<'_>) -> Result<(), String> {
    let store = factory("touch")?;
    let first = [touch(
        "doc:1#viewer@user:a[expiration:2030-01-01T00:00:00Z]",
    )?];
    store
        .commit(&Commit {
            revision: 1,
            schema: Some(SCHEMA),
            policy_model: None,
            changes: &first,
            attributes: &[],
        })
        .map_err(|e| e.0)?;
    let second = [touch(
        "doc:1#viewer@user:a[expiration:2040-01-01T00:00:00Z]",
    )?];
    store
        .commit(&Commit {
            revision: 2,
            schema: None,
            policy_model: None,
            changes: &second,
            attributes: &[],
        })
        .map_err(|e| e.0)?;
    let state = store.load().map_err(|e| e.0)?;
    let want = vec![rel("doc:1#viewer@user:a[expiration:2040-01-01T00:00:00Z]")?];
    if state.relationships != want {
        return Err(format!(
            "expected {want:?}, loaded {:?}",
            state.relationships
        ));
    }
    Ok(())
}

fn forms_round_trip(factory: &StoreFactory<'_>) -> Result<(), String> {
    let store = factory("forms")?;
    let lines = [
        "doc:1#viewer@user:a",
        "doc:1#viewer@group:eng#member",
        "acme/doc:x#viewer@acme/user:*",
        "doc:--=base64+/|_#viewer@user:a-b",
        "doc:2#viewer@user:a[expiration:2031-05-06T07:08:09.123456Z]",
    ];
    let changes = lines
        .iter()
        .map(|l| touch(l))
        .collect::<Result<Vec<_>, _>>()?;
    store
        .commit(&Commit {
            revision: 7,
            schema: Some(SCHEMA),
            policy_model: None,
            changes: &changes,
            attributes: &[],
        })
        .map_err(|e| e.0)?;
    let state = sorted(store.load().map_err(|e| e.0)?);
    let mut want = lines
        .iter()
        .map(|l| rel(l))
        .collect::<Result<Vec<_>, _>>()?;
    want.sort_by_key(|r| r.to_string());
    if state.relationships != want || state.revision != 7 {
        return Err(format!(
            "expected {want:?} at 7, loaded {:?} at {}",
            state.relationships, state.revision
        ));
    }
    Ok(())
}

fn changelog_replays(factory: &StoreFactory<'_>) -> Result<(), String> {
    let first = [touch("doc:a#viewer@user:x")?, touch("doc:b#viewer@user:*")?];
    let second = [delete("doc:a#viewer@user:x")?];
    {
        let store = factory("changelog")?;
        let commit = |revision, schema, changes| {
            store
                .commit(&Commit {
                    revision,
                    schema,
                    policy_model: None,
                    changes,
                    attributes: &[],
                })
                .map_err(|e| e.0)
        };
        commit(1, Some(SCHEMA), &[])?;
        commit(2, None, &first)?;
        commit(3, None, &second)?;
    }
    let store = factory("changelog")?;
    let commits = match store.changes_after(1, 100).map_err(|e| e.0)? {
        ChangesAfter::Commits(c) => c,
        other => return Err(format!("expected commits after 1, got {other:?}")),
    };
    let got: Vec<(u64, Vec<Change>)> = commits
        .iter()
        .map(|c| (c.revision, c.changes.clone()))
        .collect();
    let want = vec![(2, first.to_vec()), (3, second.to_vec())];
    if got != want {
        return Err(format!("changes after 1: expected {want:?}, got {got:?}"));
    }
    match store.changes_after(0, 1).map_err(|e| e.0)? {
        ChangesAfter::Commits(c)
            if c.len() == 1
                && c.first()
                    .is_some_and(|c| c.revision == 1 && c.schema.as_deref() == Some(SCHEMA)) => {}
        other => return Err(format!("expected the schema commit 1 alone, got {other:?}")),
    }
    match store.changes_after(3, 100).map_err(|e| e.0)? {
        ChangesAfter::Commits(c) if c.is_empty() => Ok(()),
        other => Err(format!(
            "expected nothing after the newest revision, got {other:?}"
        )),
    }
}
