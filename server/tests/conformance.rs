//! The SpiceDB conformance corpus (`../shared/conformance/spicedb`, next to the
//! workspace), run through the built `arbiter validate`.
//!
//! Files without caveats (the `caveat` column of FEATURES.tsv is empty), plus
//! `multipleslashes.yaml` (whose caveat is declared but never used), must all pass.
//! Every other file uses caveats, which Arbiter does not evaluate yet: each must fail
//! cleanly (exit 1, `caveats are not supported yet`), never crash or be refused as
//! broken (exit 2).
//!
//! If the corpus is absent the tests are skipped loudly, or fail when
//! `ARBITER_REQUIRE_CONFORMANCE=1`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly by design"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Caveat-free files expected to pass.
const EXPECTED_PASSING: usize = 54;

/// Files that declare a caveat in FEATURES.tsv but never write a caveated relationship.
const CAVEAT_DECLARED_ONLY: &[&str] = &["multipleslashes.yaml"];

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn output(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn validate(args: &[PathBuf]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_arbiter"))
        .arg("validate")
        .args(args)
        .output()
        .expect("run the arbiter binary");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The corpus directory, or `None` (after saying so loudly) when it is absent and not
/// required.
fn corpus_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/spicedb");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("ARBITER_REQUIRE_CONFORMANCE").is_ok_and(|v| v == "1") {
        panic!(
            "ARBITER_REQUIRE_CONFORMANCE=1 but the SpiceDB conformance corpus is missing: {} is not a directory",
            dir.display()
        );
    }
    eprintln!();
    eprintln!("==================================================================");
    eprintln!("SKIPPED: ../shared/conformance not found");
    eprintln!("  (looked for {})", dir.display());
    eprintln!("  set ARBITER_REQUIRE_CONFORMANCE=1 to make this a failure");
    eprintln!("==================================================================");
    None
}

/// `(caveat-free files, caveat files)` by FEATURES.tsv, names ending in `.yaml` only,
/// each list sorted.
fn split_by_caveat(dir: &Path) -> (Vec<String>, Vec<String>) {
    let tsv_path = dir.join("FEATURES.tsv");
    let tsv = std::fs::read_to_string(&tsv_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", tsv_path.display()));
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines
        .next()
        .expect("FEATURES.tsv has a header")
        .split('\t')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("FEATURES.tsv has no `{name}` column: {header:?}"))
    };
    let (file_col, caveat_col) = (col("file"), col("caveat"));
    let (mut plain, mut caveated) = (Vec::new(), Vec::new());
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split('\t').collect();
        let file = cells.get(file_col).copied().unwrap_or("").trim();
        if !file.ends_with(".yaml") {
            continue;
        }
        let caveat = cells.get(caveat_col).copied().unwrap_or("").trim();
        if caveat.is_empty() || CAVEAT_DECLARED_ONLY.contains(&file) {
            plain.push(file.to_string());
        } else {
            caveated.push(file.to_string());
        }
    }
    plain.sort();
    caveated.sort();
    (plain, caveated)
}

#[test]
fn caveat_free_files_all_pass() {
    let Some(dir) = corpus_dir() else { return };
    let (plain, _) = split_by_caveat(&dir);
    assert_eq!(
        plain.len(),
        EXPECTED_PASSING,
        "caveat-free files by FEATURES.tsv: {plain:?}"
    );
    for name in &plain {
        assert!(
            dir.join(name).is_file(),
            "FEATURES.tsv lists {name}, which is not in {}",
            dir.display()
        );
    }

    let paths: Vec<PathBuf> = plain.iter().map(|f| dir.join(f)).collect();
    let run = validate(&paths);
    let not_ok: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.starts_with("ok "))
        .collect();
    assert_eq!(
        run.code,
        Some(0),
        "not passing:\n{}\n\n{}",
        not_ok.join("\n"),
        run.output()
    );
    assert_eq!(
        run.stdout.lines().last(),
        Some(format!("{EXPECTED_PASSING} passed, 0 failed").as_str()),
        "{}",
        run.output()
    );
    assert_eq!(
        not_ok.len(),
        1,
        "only the summary line is not `ok`:\n{}",
        run.output()
    );
}

#[test]
fn caveat_files_fail_cleanly() {
    let Some(dir) = corpus_dir() else { return };
    let (plain, caveated) = split_by_caveat(&dir);
    assert!(
        !caveated.is_empty(),
        "no caveat files listed in FEATURES.tsv"
    );

    // Every `*.yaml` file of the folder is in exactly one of the two lists.
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("read the corpus directory")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = plain.iter().chain(&caveated).cloned().collect();
    listed.sort();
    assert_eq!(on_disk, listed, "FEATURES.tsv and the folder disagree");

    let mut problems = Vec::new();
    for name in &caveated {
        let run = validate(&[dir.join(name)]);
        let first = run.stdout.lines().next().unwrap_or("");
        let good = run.code == Some(1)
            && first.starts_with("FAIL ")
            && first.contains(name.as_str())
            && first.contains("caveats are not supported yet")
            && run.stdout.lines().last() == Some("0 passed, 1 failed");
        if !good {
            problems.push(format!("{name}:\n{}", run.output()));
        }
    }
    assert!(
        problems.is_empty(),
        "caveat files must FAIL with exit 1:\n\n{}",
        problems.join("\n\n")
    );
}

#[test]
fn the_whole_folder_at_once() {
    let Some(dir) = corpus_dir() else { return };
    let (plain, caveated) = split_by_caveat(&dir);
    let run = validate(&[dir]);
    assert_eq!(
        run.code,
        Some(1),
        "caveat files fail, none is broken:\n{}",
        run.output()
    );
    assert_eq!(
        run.stdout.lines().last(),
        Some(format!("{} passed, {} failed", plain.len(), caveated.len()).as_str()),
        "{}",
        run.output()
    );
    assert!(
        !run.stdout.lines().any(|l| l.starts_with("ERROR ")),
        "{}",
        run.output()
    );
}
