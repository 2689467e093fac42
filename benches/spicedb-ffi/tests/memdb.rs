//! The real SpiceDB through this crate, on memdb: a schema, relationships, allowed and
//! denied checks, CheckBulk, errors, and the streaming socket.
//!
//! Every test here needs `libspicedb.so` (see `arbiter_spicedb_ffi::INSTALL_COMMAND`).
//! When the library is absent, each test prints one `skip:` line naming the install
//! command and passes: these tests check the binding to SpiceDB, not Arbiter, and a
//! machine without the npm package has nothing for them to run against.
#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

use arbiter_proto::authzed::api::v1 as pb;
use arbiter_spicedb_ffi::request::{self, allowed, at_least_as_fresh, bulk_allowed};
use arbiter_spicedb_ffi::{
    default_library_path, Error, Options, Spicedb, INSTALL_COMMAND, MAX_UPDATES_PER_WRITE,
};

const SCHEMA: &str = r#"
definition user {}

definition team {
    relation member: user | team#member
}

definition document {
    relation owner: user
    relation viewer: user | user:* | team#member
    relation banned: user

    permission edit = owner - banned
    permission view = (owner + viewer) - banned
}
"#;

const RELATIONSHIPS: &[&str] = &[
    "document:plan#owner@user:ann",
    "document:plan#viewer@team:eng#member",
    "document:plan#banned@user:eve",
    "team:eng#member@team:backend#member",
    "team:backend#member@user:bob",
    "team:backend#member@user:eve",
    "document:memo#viewer@user:*",
];

/// `(check, expected)`: `document:plan#view@user:bob` style lines.
const ASSERTIONS: &[(&str, bool)] = &[
    ("document:plan#edit@user:ann", true),
    ("document:plan#view@user:ann", true),
    ("document:plan#view@user:bob", true),
    ("document:plan#edit@user:bob", false),
    ("document:plan#view@user:eve", false),
    ("document:plan#view@user:zoe", false),
    ("document:memo#view@user:zoe", true),
    ("document:memo#edit@user:zoe", false),
    ("team:eng#member@user:bob", true),
    ("team:eng#member@user:ann", false),
];

/// The library, or `None` after printing why the test is skipped.
fn library() -> Option<std::path::PathBuf> {
    let path = default_library_path();
    if path.is_file() {
        Some(path)
    } else {
        println!(
            "skip: SpiceDB's library is not at `{}`; install it with `{INSTALL_COMMAND}`",
            path.display()
        );
        None
    }
}

fn relationship(line: &str) -> pb::Relationship {
    request::relationship(line).unwrap()
}

fn check_request(line: &str, consistency: pb::Consistency) -> pb::CheckPermissionRequest {
    let (resource, permission, subject) = request::parts(line).unwrap();
    pb::CheckPermissionRequest {
        consistency: Some(consistency),
        resource: Some(resource),
        permission,
        subject: Some(subject),
        ..Default::default()
    }
}

/// A memdb server with `SCHEMA` and `RELATIONSHIPS`, and the token of the write.
fn fixture() -> Option<(Spicedb, pb::ZedToken)> {
    let db = Spicedb::open(&library()?, &Options::memory()).unwrap();
    db.write_schema(SCHEMA).unwrap();
    let rels: Vec<_> = RELATIONSHIPS.iter().map(|l| relationship(l)).collect();
    let token = db.touch_relationships(&rels).unwrap().unwrap();
    Some((db, token))
}

#[test]
fn checks_answer_allowed_and_denied() {
    let Some((db, token)) = fixture() else { return };
    for (line, expected) in ASSERTIONS {
        let response = db
            .check(&check_request(line, at_least_as_fresh(&token)))
            .unwrap();
        assert_eq!(allowed(&response), *expected, "{line}");
        assert!(response.checked_at.is_some(), "{line}: no checked_at");
    }
}

#[test]
fn check_bulk_answers_every_item_in_order() {
    let Some((db, token)) = fixture() else { return };
    let items = ASSERTIONS
        .iter()
        .map(|(line, _)| {
            let (resource, permission, subject) = request::parts(line).unwrap();
            pb::CheckBulkPermissionsRequestItem {
                resource: Some(resource),
                permission,
                subject: Some(subject),
                context: None,
            }
        })
        .collect();
    let response = db
        .check_bulk(&pb::CheckBulkPermissionsRequest {
            consistency: Some(at_least_as_fresh(&token)),
            items,
            with_tracing: false,
        })
        .unwrap();
    assert_eq!(response.pairs.len(), ASSERTIONS.len());
    for ((line, expected), pair) in ASSERTIONS.iter().zip(&response.pairs) {
        assert_eq!(bulk_allowed(pair), Ok(*expected), "{line}");
        let asked = pair
            .request
            .as_ref()
            .and_then(|r| r.resource.as_ref())
            .unwrap();
        assert_eq!(asked, &request::parts(line).unwrap().0, "{line}: pairs out of order");
    }
}

#[test]
fn check_bulk_reports_a_bad_item_in_its_pair() {
    let Some((db, token)) = fixture() else { return };
    let item = |line: &str| {
        let (resource, permission, subject) = request::parts(line).unwrap();
        pb::CheckBulkPermissionsRequestItem {
            resource: Some(resource),
            permission,
            subject: Some(subject),
            context: None,
        }
    };
    let response = db
        .check_bulk(&pb::CheckBulkPermissionsRequest {
            consistency: Some(at_least_as_fresh(&token)),
            items: vec![
                item("document:plan#view@user:ann"),
                item("document:plan#nope@user:ann"),
            ],
            with_tracing: false,
        })
        .unwrap();
    assert_eq!(bulk_allowed(&response.pairs[0]), Ok(true));
    let error = bulk_allowed(&response.pairs[1]).unwrap_err();
    assert!(error.contains("nope"), "{error}");
}

#[test]
fn errors_carry_the_grpc_code() {
    let Some((db, token)) = fixture() else { return };
    let e = db
        .check(&check_request(
            "folder:x#view@user:ann",
            at_least_as_fresh(&token),
        ))
        .unwrap_err();
    assert_eq!(e.code(), Some("FailedPrecondition"), "{e}");
    assert!(e.to_string().starts_with("CheckPermission: "), "{e}");

    let e = db.write_schema("definition user { relation").unwrap_err();
    assert_eq!(e.code(), Some("InvalidArgument"), "{e}");

    let e = db
        .write_relationships(&[pb::RelationshipUpdate {
            operation: pb::relationship_update::Operation::Create as i32,
            relationship: Some(relationship("document:plan#owner@user:ann")),
        }])
        .unwrap_err();
    assert_eq!(e.code(), Some("AlreadyExists"), "{e}");

    let too_many = vec![pb::RelationshipUpdate::default(); MAX_UPDATES_PER_WRITE + 1];
    assert!(matches!(
        db.write_relationships(&too_many),
        Err(Error::TooManyUpdates { updates }) if updates == MAX_UPDATES_PER_WRITE + 1
    ));
}

#[test]
fn schema_reads_back() {
    let Some((db, _)) = fixture() else { return };
    let text = db.read_schema().unwrap();
    assert!(text.contains("definition document"), "{text}");
    assert!(text.contains("permission view"), "{text}");
}

#[test]
fn servers_are_independent_and_close_their_socket() {
    let Some((a, token)) = fixture() else { return };
    let Some(library) = library() else { return };
    let b = Spicedb::open(&library, &Options::memory()).unwrap();
    assert_ne!(a.streaming_socket(), b.streaming_socket());
    // `b` has no schema: the same check is an error there, an answer in `a`.
    let line = "document:plan#view@user:ann";
    assert!(allowed(
        &a.check(&check_request(line, at_least_as_fresh(&token)))
            .unwrap()
    ));
    let e = b
        .check(&check_request(
            line,
            arbiter_spicedb_ffi::request::fully_consistent(),
        ))
        .unwrap_err();
    assert_eq!(e.code(), Some("FailedPrecondition"), "{e}");

    let socket = b.streaming_socket().to_path_buf();
    assert!(socket.exists(), "{}", socket.display());
    b.close().unwrap();
    assert!(!socket.exists(), "{} is left behind", socket.display());
}

#[test]
fn checks_run_from_many_threads_at_once() {
    let Some((db, token)) = fixture() else { return };
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..50 {
                    for (line, expected) in ASSERTIONS {
                        let response = db
                            .check(&check_request(line, at_least_as_fresh(&token)))
                            .unwrap();
                        assert_eq!(allowed(&response), *expected, "{line}");
                    }
                }
            });
        }
    });
}
