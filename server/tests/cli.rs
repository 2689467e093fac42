//! The `arbiter` client subcommands against a real server (DESIGN §3): what each prints
//! on stdout and stderr, and its exit code. Also the demo: `serve --demo` answers the
//! questions `server/src/demo/README.md` lists.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Server, BIN, DOC_SCHEMA};
use tempfile::TempDir;

/// What one CLI run printed and returned.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A server with DOC_SCHEMA written, and a scratch dir for files.
struct Fixture {
    dir: TempDir,
    server: Server,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(&dir.path().join("data"), &[]);
        let f = Fixture { dir, server };
        let schema = f.file("schema.zed", DOC_SCHEMA);
        f.ok(&["schema", "write", schema.to_str().unwrap()]);
        f
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Out {
        let (code, stdout, stderr) = self.server.cli(args);
        Out {
            code,
            stdout,
            stderr,
        }
    }

    /// Runs and expects exit 0; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(o.code, 0, "arbiter {args:?}: {o:#?}");
        o.stdout
    }

    /// Runs and expects exit 2, nothing on stdout and a message on stderr containing
    /// every one of `needles`; returns stderr.
    fn fails(&self, args: &[&str], needles: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.code, 2,
            "arbiter {args:?} should fail with exit 2: {o:#?}"
        );
        assert_eq!(
            o.stdout, "",
            "arbiter {args:?} printed a result although it failed: {o:#?}"
        );
        for n in needles {
            assert!(
                o.stderr.contains(n),
                "arbiter {args:?}: stderr should name `{n}`: {o:#?}"
            );
        }
        o.stderr
    }

    /// Runs `write` and returns the token it printed.
    fn write(&self, args: &[&str]) -> String {
        let mut all = vec!["write"];
        all.extend_from_slice(args);
        token(&self.ok(&all))
    }

    /// `check`: the exit code and the stdout.
    fn check(&self, args: &[&str]) -> (i32, String) {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        let o = self.run(&all);
        assert!(matches!(o.code, 0 | 1), "arbiter {all:?}: {o:#?}");
        (o.code, o.stdout)
    }

    fn allowed(&self, rel: &str) {
        assert_eq!(
            self.check(&[rel]),
            (0, "allowed\n".to_string()),
            "check {rel}"
        );
    }

    fn denied(&self, rel: &str) {
        assert_eq!(
            self.check(&[rel]),
            (1, "denied\n".to_string()),
            "check {rel}"
        );
    }

    fn lines(&self, args: &[&str]) -> Vec<String> {
        self.ok(args).lines().map(str::to_string).collect()
    }
}

/// The one line a write prints: a token.
fn token(stdout: &str) -> String {
    let t = stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("no newline after the token: {stdout:?}"));
    assert!(
        !t.is_empty() && !t.contains(char::is_whitespace),
        "expected one token, got {stdout:?}"
    );
    t.to_string()
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim_end()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:?}"))
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    out.sort();
    out
}

/// An endpoint where nothing listens.
fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn schema_write_prints_a_token_and_read_prints_the_schema() {
    let f = Fixture::new();
    let path = f.file("again.zed", DOC_SCHEMA);
    let t = token(&f.ok(&["schema", "write", path.to_str().unwrap()]));
    assert!(t.len() < 100, "{t}");
    assert_eq!(
        f.ok(&["schema", "read"]),
        DOC_SCHEMA,
        "schema read prints the schema as stored"
    );

    let bad = f.file(
        "bad.zed",
        "definition user {}\ndefinition doc {\n  relation viewer: nosuchtype\n}\n",
    );
    f.fails(&["schema", "write", bad.to_str().unwrap()], &["nosuchtype"]);
    let missing = f.dir.path().join("missing.zed");
    f.fails(
        &["schema", "write", missing.to_str().unwrap()],
        &["missing.zed"],
    );
    // A refused schema changes nothing.
    assert_eq!(f.ok(&["schema", "read"]), DOC_SCHEMA);
    let j = json(&f.ok(&["schema", "read", "--json"]));
    assert_eq!(j["schema"], DOC_SCHEMA);
}

#[test]
fn write_check_and_their_errors() {
    let f = Fixture::new();
    let t1 = f.write(&["doc:1#viewer@user:alice", "doc:1#owner@user:bob"]);
    f.allowed("doc:1#view@user:alice");
    f.allowed("doc:1#edit@user:bob");
    f.denied("doc:1#edit@user:alice");
    f.denied("doc:1#view@user:carol");
    // Relations are checked by name too.
    f.allowed("doc:1#viewer@user:alice");

    // --create of an existing relationship: refused, naming it, and the whole write
    // is refused.
    f.fails(
        &[
            "write",
            "--create",
            "doc:2#viewer@user:dan",
            "doc:1#viewer@user:alice",
        ],
        &["doc:1#viewer@user:alice"],
    );
    f.denied("doc:2#view@user:dan");
    let t2 = f.write(&["--create", "doc:2#viewer@user:dan"]);
    assert_ne!(t1, t2, "each write has its own token");
    f.allowed("doc:2#view@user:dan");

    // --delete.
    f.write(&["--delete", "doc:1#viewer@user:alice"]);
    f.denied("doc:1#view@user:alice");
    f.allowed("doc:1#view@user:bob");

    // --file, with comments and blank lines, plus arguments, in one write.
    let rels = f.file("rels.txt", "# viewers of doc 3\ndoc:3#viewer@user:erin\n\n// and a group\ngroup:eng#member@user:fred\ndoc:3#viewer@group:eng#member\n");
    f.write(&["--file", rels.to_str().unwrap(), "doc:4#viewer@user:gina"]);
    for r in [
        "doc:3#view@user:erin",
        "doc:3#view@user:fred",
        "doc:4#view@user:gina",
    ] {
        f.allowed(r);
    }
    // A bad line in the file: refused, naming the file and the line; nothing written.
    let bad = f.file("bad.txt", "doc:5#viewer@user:hal\ndoc:5#viewer\n");
    f.fails(&["write", "--file", bad.to_str().unwrap()], &["bad.txt:2"]);
    f.denied("doc:5#view@user:hal");

    // Writes the schema does not allow: refused, naming the problem.
    f.fails(&["write", "doc:1#nosuchrel@user:alice"], &["nosuchrel"]);
    f.fails(&["write", "doc:1#view@user:alice"], &["view"]);
    f.fails(&["write", "doc:1#viewer@nosuchtype:alice"], &["nosuchtype"]);
    f.fails(&["write", "not a relationship"], &["not a relationship"]);
    f.fails(&["write"], &["nothing to write"]);

    // check errors: exit 2 with a message on stderr.
    f.fails(&["check", "doc:1#nosuchperm@user:alice"], &["nosuchperm"]);
    f.fails(&["check", "nosuchtype:1#view@user:alice"], &["nosuchtype"]);
    f.fails(&["check", "doc:1#view"], &["doc:1#view"]);
    f.fails(
        &[
            "check",
            "doc:1#view@user:alice",
            "--consistency",
            "sometimes",
        ],
        &["sometimes"],
    );
    f.fails(
        &[
            "check",
            "doc:1#view@user:alice",
            "--consistency",
            "at_least_as_fresh:garbage",
        ],
        &["garbage"],
    );
    let dead = dead_endpoint();
    f.fails(
        &["check", "doc:1#view@user:alice", "--endpoint", &dead],
        &[&dead],
    );
    f.fails(
        &["write", "doc:1#viewer@user:alice", "--endpoint", &dead],
        &[&dead],
    );
}

#[test]
fn check_explain_prints_the_path_after_allowed() {
    let f = Fixture::new();
    f.write(&[
        "group:eng#member@user:alice",
        "folder:root#viewer@group:eng#member",
        "doc:1#parent@folder:root",
    ]);
    let o = f.run(&["check", "--explain", "doc:1#view@user:alice"]);
    assert_eq!(o.code, 0, "{o:#?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"allowed"), "{o:#?}");
    let steps = &lines[1..];
    assert!(!steps.is_empty(), "--explain printed no path: {o:#?}");
    for s in steps {
        assert!(s.starts_with("  "), "the path lines are indented: {o:#?}");
    }
    let path = steps.join("\n");
    for rel in [
        "doc:1#parent@folder:root",
        "folder:root#viewer@group:eng#member",
        "group:eng#member@user:alice",
    ] {
        assert!(
            path.contains(rel),
            "the path should go through `{rel}`: {o:#?}"
        );
    }

    let o = f.run(&["check", "--explain", "doc:1#view@user:bob"]);
    assert_eq!((o.code, o.stdout.as_str()), (1, "denied\n"), "{o:#?}");

    let j = json(&f.ok(&["check", "--explain", "--json", "doc:1#view@user:alice"]));
    assert_eq!(j["decision"], "allowed");
    assert!(
        j["explanation"].as_array().is_some_and(|a| !a.is_empty()),
        "{j}"
    );
}

#[test]
fn read_prints_sorted_lines_with_and_without_a_filter() {
    let f = Fixture::new();
    assert_eq!(f.ok(&["read"]), "", "an empty store reads nothing");
    let all = [
        "group:eng#member@user:zed",
        "doc:2#viewer@user:bob",
        "folder:f#viewer@group:eng#member",
        "doc:1#viewer@user:carol",
        "doc:10#viewer@user:alice",
        "doc:1#owner@user:alice",
        "doc:1#viewer@user:alice",
        "doc:1#viewer@group:eng#member",
    ];
    // Two writes, so order of writing differs from the order of reading.
    f.write(&all[..4]);
    f.write(&all[4..]);
    assert_eq!(f.lines(&["read"]), sorted(&all));
    assert_eq!(
        f.lines(&["read", "doc:1"]),
        sorted(&[
            "doc:1#owner@user:alice",
            "doc:1#viewer@user:alice",
            "doc:1#viewer@user:carol",
            "doc:1#viewer@group:eng#member"
        ])
    );
    assert_eq!(
        f.lines(&["read", "doc#viewer"]),
        sorted(&[
            "doc:1#viewer@user:alice",
            "doc:1#viewer@user:carol",
            "doc:1#viewer@group:eng#member",
            "doc:10#viewer@user:alice",
            "doc:2#viewer@user:bob"
        ])
    );
    assert_eq!(
        f.lines(&["read", "doc@user:alice"]),
        sorted(&[
            "doc:1#owner@user:alice",
            "doc:1#viewer@user:alice",
            "doc:10#viewer@user:alice"
        ])
    );
    assert_eq!(
        f.lines(&["read", "doc#viewer@group:eng#member"]),
        vec!["doc:1#viewer@group:eng#member".to_string()]
    );
    assert_eq!(
        f.lines(&["read", "folder"]),
        vec!["folder:f#viewer@group:eng#member".to_string()]
    );
    assert_eq!(f.ok(&["read", "doc:nobody"]), "");
    f.fails(&["read", "doc:"], &["doc:"]);

    let j = json(&f.ok(&["read", "--json", "doc:1#owner"]));
    assert_eq!(
        j["relationships"],
        serde_json::json!(["doc:1#owner@user:alice"])
    );
}

#[test]
fn delete_by_filter_prints_the_count_and_a_token() {
    let f = Fixture::new();
    f.write(&[
        "doc:d#viewer@user:x1",
        "doc:d#viewer@user:x2",
        "doc:d#viewer@user:x3",
        "doc:d#owner@user:x1",
        "doc:e#viewer@user:x1",
    ]);
    let out = f.ok(&["delete", "--filter", "doc:d#viewer"]);
    let t = out
        .strip_prefix("deleted 3 relationship(s); revision ")
        .unwrap_or_else(|| panic!("delete printed {out:?}"));
    token(t);
    assert_eq!(
        f.lines(&["read"]),
        sorted(&["doc:d#owner@user:x1", "doc:e#viewer@user:x1"])
    );
    let out = f.ok(&["delete", "--filter", "doc:d#viewer"]);
    assert!(
        out.starts_with("deleted 0 relationship(s); revision "),
        "{out:?}"
    );

    // --limit: more matches than the limit deletes nothing.
    let o = f.run(&["delete", "--filter", "doc@user:x1", "--limit", "1"]);
    assert_eq!(o.code, 2, "{o:#?}");
    assert_eq!(f.lines(&["read"]).len(), 2);
    // A filter without a resource type is refused.
    f.fails(&["delete", "--filter", ""], &[]);

    let j = json(&f.ok(&["delete", "--json", "--filter", "doc@user:x1"]));
    assert_eq!(j["deleted"], 2);
    assert!(j["revision"].as_str().is_some_and(|s| !s.is_empty()), "{j}");
    assert_eq!(f.ok(&["read"]), "");
}

#[test]
fn expand_prints_the_indented_tree() {
    let f = Fixture::new();
    f.write(&[
        "doc:1#viewer@user:alice",
        "doc:1#viewer@group:eng#member",
        "doc:1#owner@user:bob",
        "doc:1#banned@user:mallory",
    ]);
    let out = f.ok(&["expand", "doc:1#view"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("doc:1#view")),
        "the root first: {out}"
    );
    assert!(
        lines.iter().skip(1).all(|l| l.starts_with("  ")),
        "children indented: {out}"
    );
    for who in ["user:alice", "group:eng#member", "user:bob", "user:mallory"] {
        assert!(out.contains(who), "the tree should show `{who}`: {out}");
    }
    let leaf = f.ok(&["expand", "doc:1#viewer"]);
    assert!(leaf.starts_with("doc:1#viewer"), "{leaf}");
    assert!(
        leaf.contains("user:alice") && leaf.contains("group:eng#member"),
        "{leaf}"
    );
    f.fails(&["expand", "doc:1"], &["doc:1"]);
    f.fails(&["expand", "doc:1#nosuchperm"], &["nosuchperm"]);
}

#[test]
fn lookups_print_one_id_per_line_and_wildcards_with_exclusions() {
    let f = Fixture::new();
    f.write(&[
        "doc:1#viewer@user:alice",
        "doc:2#owner@user:alice",
        "doc:3#viewer@user:bob",
        "doc:4#viewer@group:eng#member",
        "group:eng#member@user:alice",
        "doc:pub#viewer@user:*",
        "doc:pub#banned@user:mallory",
        "doc:pub#banned@user:eve",
        "doc:open#viewer@user:*",
        "doc:open#viewer@user:carol",
    ]);
    assert_eq!(
        f.lines(&["lookup-resources", "doc#view@user:alice"]),
        ["1", "2", "4", "open", "pub"]
    );
    assert_eq!(f.lines(&["lookup-resources", "doc#edit@user:alice"]), ["2"]);
    assert_eq!(
        f.lines(&["lookup-resources", "doc#view@user:mallory"]),
        ["open"]
    );
    assert_eq!(f.ok(&["lookup-resources", "doc#edit@user:nobody"]), "");

    assert_eq!(f.lines(&["lookup-subjects", "doc:1#view@user"]), ["alice"]);
    assert_eq!(f.lines(&["lookup-subjects", "doc:4#view@user"]), ["alice"]);
    let mut open = f.lines(&["lookup-subjects", "doc:open#view@user"]);
    open.sort();
    assert_eq!(open, ["carol", "user:*"]);
    let public = f.lines(&["lookup-subjects", "doc:pub#view@user"]);
    assert_eq!(public.len(), 1, "{public:?}");
    let excluded = public[0]
        .strip_prefix("user:* - ")
        .unwrap_or_else(|| panic!("a wildcard with exclusions: {public:?}"));
    let mut excluded: Vec<&str> = excluded.split(", ").collect();
    excluded.sort();
    assert_eq!(excluded, ["eve", "mallory"]);
    assert_eq!(
        f.lines(&["lookup-subjects", "doc:4#view@group#member"]),
        ["eng"]
    );

    f.fails(
        &["lookup-resources", "doc#nosuchperm@user:alice"],
        &["nosuchperm"],
    );
    f.fails(&["lookup-resources", "doc@user:alice"], &["doc@user:alice"]);
    f.fails(&["lookup-subjects", "doc:1#view"], &["doc:1#view"]);
}

/// `imported N relationships in Xs (R/s); revision TOKEN`: (N, TOKEN).
fn parse_import(out: &str) -> (u64, String) {
    fn bad<T>(out: &str) -> T {
        panic!("unexpected import output {out:?}")
    }
    let rest = out.strip_prefix("imported ").unwrap_or_else(|| bad(out));
    let (n, rest) = rest
        .split_once(" relationships in ")
        .unwrap_or_else(|| bad(out));
    let (secs, rest) = rest.split_once("s (").unwrap_or_else(|| bad(out));
    let (rate, rest) = rest
        .split_once("/s); revision ")
        .unwrap_or_else(|| bad(out));
    assert!(
        secs.parse::<f64>().is_ok_and(|s| s >= 0.0),
        "seconds: {out:?}"
    );
    assert!(rate.parse::<f64>().is_ok_and(|r| r >= 0.0), "rate: {out:?}");
    (n.parse().unwrap_or_else(|_| bad(out)), token(rest))
}

#[test]
fn import_txt_and_yaml_then_export() {
    let f = Fixture::new();
    let lines: Vec<String> = (0..1200)
        .map(|i| format!("doc:i{i}#viewer@user:u{}", i % 37))
        .collect();
    let mut text = String::from("# generated\n");
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    let txt = f.file("rels.txt", &text);
    let (n, t) = parse_import(&f.ok(&["import", txt.to_str().unwrap(), "--batch", "500"]));
    assert_eq!(n, 1200);
    assert_eq!(
        f.check(&[
            "doc:i1199#view@user:u15",
            "--consistency",
            &format!("at_least_as_fresh:{t}")
        ])
        .0,
        0
    );
    let mut exported = f.lines(&["export"]);
    exported.sort();
    let mut expected = lines.clone();
    expected.sort();
    assert_eq!(exported, expected);

    let bad = f.file("bad.txt", "doc:z#viewer@user:a\nthis is not one\n");
    f.fails(&["import", bad.to_str().unwrap()], &["bad.txt:2"]);

    // A validation file on a fresh server: its schema, then its relationships.
    let g = Fixture::new();
    let yaml = g.file(
        "family.yaml",
        "schema: |-\n  definition user {}\n  definition note {\n    relation author: user\n    relation reader: user\n    permission read = author + reader\n  }\nrelationships: |-\n  note:n1#author@user:ann\n  note:n1#reader@user:ben\n  note:n2#author@user:ben\nassertions:\n  assertTrue:\n    - note:n1#read@user:ben\n",
    );
    // The store holds DOC_SCHEMA without relationships, so the new schema replaces it.
    let (n, _) = parse_import(&g.ok(&["import", yaml.to_str().unwrap()]));
    assert_eq!(n, 3);
    assert!(g.ok(&["schema", "read"]).contains("definition note"));
    let mut exported = g.lines(&["export"]);
    exported.sort();
    assert_eq!(
        exported,
        sorted(&[
            "note:n1#author@user:ann",
            "note:n1#reader@user:ben",
            "note:n2#author@user:ben"
        ])
    );
    g.allowed("note:n1#read@user:ben");
    g.denied("note:n2#read@user:ann");

    let more = g.file(
        "more.txt",
        "note:n3#author@user:cal\nnote:n3#reader@user:ann\n",
    );
    let j = json(&g.ok(&["import", "--json", more.to_str().unwrap()]));
    assert_eq!(j["imported"], 2);
    assert!(j["revision"].is_string(), "{j}");
    g.allowed("note:n3#read@user:ann");
}

#[test]
fn watch_prints_token_operation_relationship_lines() {
    let f = Fixture::new();
    let t0 = f.write(&["doc:w0#viewer@user:a"]);
    let mut child = Command::new(BIN)
        .args(["watch", "--from", &t0])
        .env("ARBITER_ENDPOINT", f.server.endpoint())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let t1 = f.write(&["doc:w1#viewer@user:a", "doc:w1#owner@user:b"]);
    let t2 = f.write(&["--delete", "doc:w0#viewer@user:a"]);
    let mut got = Vec::new();
    for _ in 0..3 {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => got.push(l),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("watch printed only {got:?} ({e})");
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let (first_two, last) = got.split_at(2);
    let mut first_two = first_two.to_vec();
    first_two.sort();
    assert_eq!(
        first_two,
        [
            format!("{t1} TOUCH doc:w1#owner@user:b"),
            format!("{t1} TOUCH doc:w1#viewer@user:a")
        ]
    );
    assert_eq!(last, [format!("{t2} DELETE doc:w0#viewer@user:a")]);
    // The change at t0 itself is not repeated.
    assert!(
        !got.iter().any(|l| l.starts_with(&format!("{t0} "))),
        "{got:?}"
    );

    f.fails(&["watch", "--from", "garbage"], &["garbage"]);
}

#[test]
fn consistency_at_exact_snapshot_reads_an_old_revision() {
    let f = Fixture::new();
    let t1 = f.write(&["doc:1#viewer@user:alice"]);
    let t2 = f.write(&["--delete", "doc:1#viewer@user:alice"]);
    let t3 = f.write(&["doc:1#viewer@user:bob"]);
    let at = |t: &str| format!("at_exact_snapshot:{t}");
    assert_eq!(
        f.check(&["doc:1#view@user:alice", "--consistency", &at(&t1)]),
        (0, "allowed\n".to_string())
    );
    assert_eq!(
        f.check(&["doc:1#view@user:alice", "--consistency", &at(&t2)])
            .0,
        1
    );
    assert_eq!(
        f.check(&["doc:1#view@user:bob", "--consistency", &at(&t2)])
            .0,
        1
    );
    assert_eq!(
        f.check(&["doc:1#view@user:bob", "--consistency", &at(&t3)])
            .0,
        0
    );
    f.denied("doc:1#view@user:alice");
    assert_eq!(
        f.check(&[
            "doc:1#view@user:bob",
            "--consistency",
            &format!("at_least_as_fresh:{t3}")
        ])
        .0,
        0
    );
    assert_eq!(
        f.check(&["doc:1#view@user:bob", "--consistency", "fully_consistent"])
            .0,
        0
    );

    assert_eq!(
        f.lines(&["read", "--consistency", &at(&t1)]),
        ["doc:1#viewer@user:alice"]
    );
    assert_eq!(f.ok(&["read", "--consistency", &at(&t2)]), "");
    assert_eq!(f.lines(&["read"]), ["doc:1#viewer@user:bob"]);
    assert_eq!(
        f.lines(&["export", "--consistency", &at(&t1)]),
        ["doc:1#viewer@user:alice"]
    );
    assert_eq!(
        f.lines(&[
            "lookup-resources",
            "doc#view@user:alice",
            "--consistency",
            &at(&t1)
        ]),
        ["1"]
    );
    assert_eq!(
        f.lines(&[
            "lookup-subjects",
            "doc:1#view@user",
            "--consistency",
            &at(&t1)
        ]),
        ["alice"]
    );
}

#[test]
fn json_output_parses_for_check_read_and_write() {
    let f = Fixture::new();
    let j = json(&f.ok(&[
        "write",
        "--json",
        "doc:1#viewer@user:alice",
        "doc:1#owner@user:bob",
    ]));
    assert_eq!(j["written"], 2);
    let t = j["revision"]
        .as_str()
        .unwrap_or_else(|| panic!("no revision: {j}"))
        .to_string();

    let o = f.run(&[
        "check",
        "--json",
        "doc:1#view@user:alice",
        "--consistency",
        &format!("at_least_as_fresh:{t}"),
    ]);
    assert_eq!(o.code, 0, "{o:#?}");
    let j = json(&o.stdout);
    assert_eq!(j["decision"], "allowed");
    assert!(j["revision"].is_string(), "{j}");

    let o = f.run(&["check", "--json", "doc:1#view@user:carol"]);
    assert_eq!(o.code, 1, "{o:#?}");
    assert_eq!(json(&o.stdout)["decision"], "denied");

    let j = json(&f.ok(&["read", "--json"]));
    assert_eq!(
        j["relationships"],
        serde_json::json!(["doc:1#owner@user:bob", "doc:1#viewer@user:alice"])
    );

    let j = json(&f.ok(&["lookup-resources", "--json", "doc#view@user:alice"]));
    assert_eq!(j["resource_ids"], serde_json::json!(["1"]));
    let j = json(&f.ok(&["expand", "--json", "doc:1#viewer"]));
    assert_eq!(j["tree"]["resource"], "doc:1");
    assert!(j["revision"].is_string(), "{j}");

    // An error under --json still goes to stderr with exit 2.
    f.fails(
        &["check", "--json", "doc:1#nosuchperm@user:alice"],
        &["nosuchperm"],
    );
}

/// The questions of the demo README's table: (relationship, expected answer).
fn demo_questions() -> Vec<(String, String)> {
    let readme = include_str!("../src/demo/README.md");
    let mut out = Vec::new();
    for line in readme.lines().filter(|l| l.starts_with('|')) {
        let Some((_, rest)) = line.split_once("`arbiter check '") else {
            continue;
        };
        let (rel, _) = rest
            .split_once("'`")
            .unwrap_or_else(|| panic!("unparsed README row: {line}"));
        let answer = line
            .trim_end()
            .trim_end_matches('|')
            .rsplit('|')
            .next()
            .map(|c| c.trim().trim_matches('`').to_string())
            .unwrap_or_else(|| panic!("no answer in README row: {line}"));
        out.push((rel.to_string(), answer));
    }
    out
}

#[test]
fn demo_answers_the_readme_questions() {
    let questions = demo_questions();
    assert!(
        questions.len() >= 8,
        "the README's table should list at least 8 checks, parsed {questions:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--demo"]);
    for (rel, answer) in &questions {
        let (code, stdout, stderr) = server.cli(&["check", rel]);
        let expected_code = match answer.as_str() {
            "allowed" => 0,
            "denied" => 1,
            other => panic!("unexpected answer `{other}` in the README for {rel}"),
        };
        assert_eq!(
            (code, stdout.trim_end()),
            (expected_code, answer.as_str()),
            "arbiter check '{rel}' (stderr: {stderr})"
        );
    }
    // --demo on a store that is no longer empty changes nothing.
    let revision = server.revision.clone();
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
    let again = Server::start(dir.path(), &["--demo"]);
    assert_eq!(
        again.revision, revision,
        "--demo reloaded the demo into a non-empty store"
    );
}

#[test]
fn a_conditional_check_exits_3_naming_what_is_missing_and_expand_shows_the_caveat() {
    let f = Fixture::new();
    let schema = f.file(
        "caveats.zed",
        "caveat below(n int, limit int) {\n  n < limit\n}\n\ndefinition user {}\n\ndefinition doc {\n  relation viewer: user | user with below\n  permission view = viewer\n}\n",
    );
    f.ok(&["schema", "write", schema.to_str().unwrap()]);
    f.write(&[r#"doc:1#viewer@user:ann[below:{"limit":5}]"#]);
    let o = f.run(&["check", "doc:1#view@user:ann"]);
    assert_eq!((o.code, o.stdout.as_str()), (3, "conditional (missing context: n)\n"), "{o:#?}");
    let o = f.run(&["check", "doc:1#view@user:ann", "--context", r#"{"n": 2}"#]);
    assert_eq!((o.code, o.stdout.as_str()), (0, "allowed\n"), "{o:#?}");
    let o = f.run(&["check", "doc:1#view@user:ann", "--context", r#"{"n": 9}"#]);
    assert_eq!((o.code, o.stdout.as_str()), (1, "denied\n"), "{o:#?}");
    f.fails(&["check", "doc:1#view@user:ann", "--context", r#"{"n": "many"}"#], &["`n`"]);
    let tree = f.ok(&["expand", "doc:1#viewer"]);
    assert!(tree.contains(r#"user:ann[below:{"limit":5}]"#), "{tree}");
    let tree = json(&f.ok(&["expand", "--json", "doc:1#view"]));
    assert!(tree.to_string().contains(r#"user:ann[below:{\"limit\":5}]"#), "{tree}");
}
