//! `arbiter backup`: a consistent copy of the embedded store.

use std::path::Path;
use std::process::ExitCode;

use arbiter_rocksdb_store::{BackupKind, RocksStore};

pub fn run(data_dir: &Path, out: &Path) -> ExitCode {
    let started = std::time::Instant::now();
    match RocksStore::backup(data_dir, out) {
        Ok(kind) => {
            let how = match kind {
                BackupKind::Checkpoint => "checkpoint of a closed store",
                BackupKind::OnlineCopy => "online copy of a running server's store",
            };
            println!(
                "backed up {} to {} ({how}, {:.1}s)",
                data_dir.display(),
                out.display(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: backup failed: {e}");
            ExitCode::from(2)
        }
    }
}
