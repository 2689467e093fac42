//! Arbiter's own validation corpus, run through the built `arbiter validate`:
//! every file of `tests/corpus/` passes, and every file of `tests/corpus/failing/`
//! fails with the exit code and message its first line announces
//! (`# expect: EXIT_CODE SUBSTRING`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly by design"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// What one run of the binary printed and returned.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Everything printed, for failure messages.
    fn output(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn validate(args: &[&Path]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_arbiter"))
        .arg("validate")
        .args(args)
        .output()
        .expect("run the arbiter binary");
    Run {
        code: out.status.code().expect("arbiter exited through a signal"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus")
}

fn failing_dir() -> PathBuf {
    corpus_dir().join("failing")
}

/// The `*.yaml` files directly in `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// The `# expect: CODE SUBSTRING` line that starts a file of `failing/`.
fn expectation(path: &Path) -> (i32, String) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let first = text.lines().next().unwrap_or("");
    let rest = first
        .strip_prefix("# expect:")
        .unwrap_or_else(|| {
            panic!(
                "{}: first line must be `# expect: CODE SUBSTRING`, got `{first}`",
                path.display()
            )
        })
        .trim();
    let (code, substring) = rest.split_once(' ').unwrap_or_else(|| {
        panic!(
            "{}: `# expect:` needs a code and a substring, got `{first}`",
            path.display()
        )
    });
    let code: i32 = code.parse().unwrap_or_else(|e| {
        panic!(
            "{}: bad exit code `{code}` in `{first}`: {e}",
            path.display()
        )
    });
    let substring = substring.trim().to_string();
    assert!(
        !substring.is_empty(),
        "{}: empty substring in `{first}`",
        path.display()
    );
    (code, substring)
}

#[test]
fn every_corpus_file_passes() {
    let dir = corpus_dir();
    let files = yaml_files(&dir);
    assert!(
        files.len() >= 20,
        "expected the corpus in {}, found {} files",
        dir.display(),
        files.len()
    );

    let run = validate(&[&dir]);
    assert_eq!(run.code, 0, "the corpus must pass:\n{}", run.output());
    let lines: Vec<&str> = run.stdout.lines().collect();
    let (summary, results) = lines.split_last().expect("some output");
    assert_eq!(
        *summary,
        format!("{} passed, 0 failed", files.len()),
        "{}",
        run.output()
    );
    assert_eq!(
        results.len(),
        files.len(),
        "one line per file:\n{}",
        run.output()
    );
    for line in results {
        assert!(line.starts_with("ok "), "not ok: {line}\n{}", run.output());
    }
    // Each file is reported, in name order; `failing/` is not part of the directory run.
    for (line, file) in results.iter().zip(&files) {
        let name = file.file_name().expect("file name").to_string_lossy();
        assert!(line.ends_with(&*name), "expected `{name}` on `{line}`");
    }
    assert!(!run.stdout.contains("failing"), "{}", run.output());
}

#[test]
fn every_failing_file_fails_as_announced() {
    let files = yaml_files(&failing_dir());
    assert!(
        files.len() >= 10,
        "expected the failing corpus, found {} files",
        files.len()
    );
    let mut problems = Vec::new();
    for file in &files {
        let (code, substring) = expectation(file);
        let run = validate(&[file]);
        let name = file.display().to_string();
        let line = run.stdout.lines().find(|l| l.contains(&name)).unwrap_or("");
        let word = if code == 1 { "FAIL " } else { "ERROR " };
        if run.code != code {
            problems.push(format!(
                "{name}: expected exit {code}, got {}:\n{}",
                run.code,
                run.output()
            ));
        } else if !line.starts_with(word) {
            problems.push(format!(
                "{name}: expected a `{word}` line:\n{}",
                run.output()
            ));
        } else if !line.contains(&substring) {
            problems.push(format!("{name}: `{substring}` not in `{line}`"));
        } else if run.stdout.lines().last() != Some("0 passed, 1 failed") {
            problems.push(format!("{name}: bad summary:\n{}", run.output()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn failing_files_are_reported_together_with_the_worst_exit_code() {
    // A passing file, a failing one (exit 1) and a broken one (exit 2): 2 wins.
    let ok = corpus_dir().join("direct_relation.yaml");
    let wrong = failing_dir().join("wrong_assertion.yaml");
    let broken = failing_dir().join("broken_yaml.yaml");
    let run = validate(&[&ok, &wrong]);
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(
        run.stdout.ends_with("1 passed, 1 failed\n"),
        "{}",
        run.output()
    );

    let run = validate(&[&ok, &wrong, &broken]);
    assert_eq!(run.code, 2, "{}", run.output());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.output());
    assert!(lines[0].starts_with("ok "), "{}", run.output());
    assert!(lines[1].starts_with("FAIL "), "{}", run.output());
    assert!(lines[2].starts_with("ERROR "), "{}", run.output());
    assert_eq!(lines[3], "1 passed, 2 failed", "{}", run.output());
}

#[test]
fn directories_expand_to_their_yaml_files_in_name_order() {
    // The failing directory as a whole: every file reported, in order, none passing.
    let dir = failing_dir();
    let files = yaml_files(&dir);
    let run = validate(&[&dir]);
    assert_eq!(run.code, 2, "{}", run.output());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), files.len() + 1, "{}", run.output());
    for (line, file) in lines.iter().zip(&files) {
        let path = file.display().to_string();
        assert!(
            line.starts_with(&format!("FAIL {path}")) || line.starts_with(&format!("ERROR {path}")),
            "expected `{path}` on `{line}`"
        );
    }
    assert_eq!(
        lines.last().copied(),
        Some(format!("0 passed, {} failed", files.len()).as_str())
    );

    // A directory and a file together.
    let extra = corpus_dir().join("nil.yaml");
    let run = validate(&[&corpus_dir(), &extra]);
    let total = yaml_files(&corpus_dir()).len() + 1;
    assert_eq!(run.code, 0, "{}", run.output());
    assert!(
        run.stdout.ends_with(&format!("{total} passed, 0 failed\n")),
        "{}",
        run.output()
    );
}

#[test]
fn a_nonexistent_path_is_an_error() {
    let missing = corpus_dir().join("no_such_file.yaml");
    let run = validate(&[&missing]);
    assert_eq!(run.code, 2, "{}", run.output());
    let line = run.stdout.lines().next().unwrap_or("");
    assert!(
        line.starts_with(&format!("ERROR {}", missing.display())),
        "{}",
        run.output()
    );
    assert!(line.contains("cannot read"), "{}", run.output());

    // Still exit 2 beside a passing file.
    let ok = corpus_dir().join("union.yaml");
    let run = validate(&[&ok, &missing]);
    assert_eq!(run.code, 2, "{}", run.output());
    assert!(
        run.stdout.ends_with("1 passed, 1 failed\n"),
        "{}",
        run.output()
    );
}

#[test]
fn a_directory_without_yaml_files_is_an_error() {
    let empty =
        std::env::temp_dir().join(format!("arbiter-corpus-test-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("create an empty directory");
    let run = validate(&[&empty]);
    std::fs::remove_dir(&empty).ok();
    assert_eq!(run.code, 2, "{}", run.output());
    assert!(run.stderr.contains("no *.yaml files"), "{}", run.output());
}
