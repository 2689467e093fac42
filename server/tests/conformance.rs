//! The SpiceDB conformance corpus (`../shared/conformance/spicedb`, next to the
//! workspace), run through the built `arbiter validate`: every file passes, caveated ones
//! included, with the Check/Lookup cross-check on.
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

/// The files of the corpus (FEATURES.tsv lists them).
const EXPECTED_FILES: usize = 73;

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn output(&self) -> String {
        format!("exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
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

/// `(files, caveated files)` by FEATURES.tsv, names ending in `.yaml` only, sorted.
fn listed_files(dir: &Path) -> (Vec<String>, Vec<String>) {
    let tsv = std::fs::read_to_string(dir.join("FEATURES.tsv")).expect("read FEATURES.tsv");
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines.next().expect("FEATURES.tsv has a header").split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no `{name}` column"));
    let (file_col, caveat_col) = (col("file"), col("caveat"));
    let (mut all, mut caveated) = (Vec::new(), Vec::new());
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split('\t').collect();
        let file = cells.get(file_col).copied().unwrap_or("").trim();
        if !file.ends_with(".yaml") {
            continue;
        }
        if !cells.get(caveat_col).copied().unwrap_or("").trim().is_empty() {
            caveated.push(file.to_string());
        }
        all.push(file.to_string());
    }
    all.sort();
    caveated.sort();
    (all, caveated)
}

#[test]
fn every_file_passes() {
    let Some(dir) = corpus_dir() else { return };
    let (all, caveated) = listed_files(&dir);
    assert_eq!(all.len(), EXPECTED_FILES, "files by FEATURES.tsv: {all:?}");
    assert!(caveated.len() >= 19, "the caveated files by FEATURES.tsv: {caveated:?}");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("read the corpus directory")
        .map(|e| e.expect("directory entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, all, "FEATURES.tsv and the folder disagree");

    let paths: Vec<PathBuf> = all.iter().map(|f| dir.join(f)).collect();
    let run = validate(&paths);
    let not_ok: Vec<&str> = run.stdout.lines().filter(|l| !l.starts_with("ok ")).collect();
    assert_eq!(run.code, Some(0), "not passing:\n{}\n\n{}", not_ok.join("\n"), run.output());
    assert_eq!(
        run.stdout.lines().last(),
        Some(format!("{EXPECTED_FILES} passed, 0 failed").as_str()),
        "{}",
        run.output()
    );
    assert_eq!(not_ok.len(), 1, "only the summary line is not `ok`:\n{}", run.output());
}

#[test]
fn the_whole_folder_at_once() {
    let Some(dir) = corpus_dir() else { return };
    let run = validate(&[dir]);
    assert_eq!(run.code, Some(0), "{}", run.output());
    assert_eq!(
        run.stdout.lines().last(),
        Some(format!("{EXPECTED_FILES} passed, 0 failed").as_str()),
        "{}",
        run.output()
    );
}
