//! Shared by the integration tests: the SpiceDB conformance corpus, read at test time.

use std::path::PathBuf;

/// `../shared/conformance/spicedb` next to the workspace, if it is there. Its absence is
/// a loud skip, or a failure under `ARBITER_REQUIRE_CONFORMANCE=1` (as CI runs).
pub fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/spicedb");
    if dir.is_dir() {
        Some(dir)
    } else if std::env::var("ARBITER_REQUIRE_CONFORMANCE").is_ok_and(|v| v == "1") {
        panic!(
            "ARBITER_REQUIRE_CONFORMANCE=1 but the SpiceDB conformance corpus is missing: {} is not a directory",
            dir.display()
        );
    } else {
        eprintln!("SKIPPED: conformance corpus not found at {}", dir.display());
        None
    }
}

/// Every `*.yaml` file of the corpus as `(file name, text)`, sorted by name; empty (with
/// a loud message) if the corpus is absent.
pub fn corpus_files() -> Vec<(String, String)> {
    let Some(dir) = corpus_dir() else {
        return Vec::new();
    };
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("read corpus dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&p).expect("read corpus file");
            (name, text)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.yaml files in {}", dir.display());
    files
}
