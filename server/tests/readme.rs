//! The README's tour runs as written: every `$ arbiter ...` line of its `console` blocks
//! is run against a fresh demo server and must print exactly the lines that follow it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;

use common::Server;

/// Splits a shell command line with single-quoted words (all the tour uses).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            _ => {
                cur.push(c);
                any = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quote in `{line}`");
    if any {
        out.push(cur);
    }
    out
}

/// (command words after `arbiter`, expected stdout) for every step of the tour.
fn tour(readme: &str) -> Vec<(Vec<String>, String)> {
    let mut steps: Vec<(Vec<String>, String)> = Vec::new();
    let mut in_console = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_console = line.trim() == "```console";
            continue;
        }
        if !in_console {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            let w = words(cmd);
            assert_eq!(
                w.first().map(String::as_str),
                Some("arbiter"),
                "tour step `{line}` must run arbiter"
            );
            steps.push((w[1..].to_vec(), String::new()));
        } else if let Some((_, out)) = steps.last_mut() {
            out.push_str(line);
            out.push('\n');
        }
    }
    steps
}

#[test]
fn the_readme_tour_works_as_written() {
    let readme = include_str!("../../README.md");
    let steps = tour(readme);
    assert!(steps.len() >= 8, "the tour lost its steps: {steps:?}");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--demo"]);
    for (args, expected) in steps {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // From the repository's root, as a reader runs them after `make run`.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let (code, stdout, stderr) = server.cli_in(&root, &args);
        assert!(
            code == 0 || code == 1,
            "`arbiter {}` failed ({code}): {stderr}",
            args.join(" ")
        );
        assert_eq!(
            stdout,
            expected,
            "`arbiter {}` printed something else",
            args.join(" ")
        );
    }
}
