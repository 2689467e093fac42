//! The README's platform tour runs as written: `scripts/run-platform.sh` (what `make
//! run-platform` runs) starts a Postgres-mode PDP and the admin with the family demo on
//! a database of its own; every `$ ` line of the README's `console platform` block runs,
//! in order, in one bash session with the `export` lines the script printed, and must
//! print exactly the lines that follow it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{admin_url, TestDb, BIN};

/// (command, expected stdout) for every step of the platform tour.
fn tour(readme: &str) -> Vec<(String, String)> {
    let mut steps: Vec<(String, String)> = Vec::new();
    let mut inside = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            inside = line.trim() == "```console platform";
            continue;
        }
        if !inside {
            continue;
        }
        match line.strip_prefix("$ ") {
            Some(cmd) => steps.push((cmd.to_string(), String::new())),
            None => {
                let (_, out) = steps.last_mut().expect("output before the first command");
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_tour_works_as_written() {
    let steps = tour(include_str!("../../README.md"));
    assert!(steps.len() >= 12, "the platform tour lost its steps: {steps:?}");
    let db = TestDb::new("platform_tour").await;
    let data = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut platform = Stop(Command::new("bash")
        .arg(root.join("scripts/run-platform.sh"))
        .env("DATABASE_URL", admin_url())
        .env("PLATFORM_DB", &db.name)
        .env("DATA_DIR", data.path())
        .env("ARBITER", BIN)
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap());
    // The database exists already (TestDb made it): the script uses it as it is.
    let stdout = platform.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut exports = Vec::new();
    while exports.len() < 2 {
        let line = rx.recv_timeout(Duration::from_secs(180)).expect("run-platform printed no export lines");
        if let Some(e) = line.strip_prefix("export ") {
            exports.push(e.to_string());
        }
    }
    // One bash session for the whole tour, with the printed exports and `arbiter` on PATH.
    let bin_dir = std::path::Path::new(BIN).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut bash = Command::new("bash")
        .args(["--norc", "--noprofile"])
        .current_dir(data.path())
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut input = bash.stdin.take().unwrap();
    let mut output = BufReader::new(bash.stdout.take().unwrap());
    for e in &exports {
        writeln!(input, "export {e}").unwrap();
    }
    for (n, (cmd, expected)) in steps.iter().enumerate() {
        let marker = format!("__tour_step_{n}_done__");
        writeln!(input, "{cmd}\necho; echo {marker}").unwrap();
        input.flush().unwrap();
        let mut got = String::new();
        loop {
            let mut line = String::new();
            if output.read_line(&mut line).unwrap() == 0 {
                panic!("bash ended during `{cmd}`");
            }
            if line.trim_end() == marker {
                break;
            }
            got.push_str(&line);
        }
        // The echo before the marker ends a last line that had no newline.
        let got = got.strip_suffix('\n').unwrap_or(&got).to_string();
        assert_eq!(got, *expected, "`{cmd}` printed something else");
    }
    drop(input);
    let mut rest = String::new();
    let _ = output.read_to_string(&mut rest);
    let _ = bash.wait();
}

/// The platform script, stopped when dropped (on TERM it stops what it started), so a
/// failed step does not leave the PDP and the admin running.
struct Stop(std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}
