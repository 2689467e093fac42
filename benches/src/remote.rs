//! For the binaries that measure the server from outside: a real `arbiter serve`
//! process (started on free ports, its ready line read, its resident memory sampled,
//! killed when dropped) and the lookups a dataset's queries name.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{anyhow, Context, Result};
use arbiter_proto::arbiter::v1 as pb;

/// A running `arbiter serve`; killed when dropped.
#[derive(Debug)]
pub struct ArbiterProcess {
    child: Child,
    /// `http://host:port` of the gRPC port.
    pub grpc: String,
    /// `host:port` of the HTTP port.
    pub http: String,
}

impl Drop for ArbiterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ArbiterProcess {
    /// `bin serve --data-dir DIR` on free ports, with `extra` flags; returns once the
    /// server printed its ready line.
    pub fn start(bin: &Path, data_dir: &Path, extra: &[&str]) -> Result<ArbiterProcess> {
        let mut child = Command::new(bin)
            .args(["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_string))
                .ok_or_else(|| anyhow!("no {name}= in the ready line {line:?}"))
        };
        Ok(ArbiterProcess { grpc: format!("http://{}", field("grpc")?), http: field("http")?, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in bytes.
    pub fn rss(&self) -> Result<u64> {
        rss_of(self.pid()).ok_or_else(|| anyhow!("cannot read the server's VmRSS"))
    }
}

/// A process's resident memory, in bytes (`None` once it is gone).
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse::<u64>().ok()?;
    Some(kb * 1024)
}

/// The server binary: `ARBITER_BIN`, else the `arbiter` beside the running executable.
pub fn arbiter_bin() -> Result<PathBuf> {
    match std::env::var_os("ARBITER_BIN") {
        Some(b) => Ok(PathBuf::from(b)),
        None => Ok(std::env::current_exe()?.with_file_name("arbiter")),
    }
}

/// Megabytes, for reports.
pub fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

/// One LookupResources: resource type, permission, subject.
pub type Lookup = (String, String, pb::SubjectRef);

/// The first `n` distinct lookups (type, permission, subject) of a dataset's queries.
pub fn distinct_lookups(queries: &[pb::CheckRequest], n: usize) -> Vec<Lookup> {
    let mut out: Vec<Lookup> = Vec::new();
    for q in queries {
        let (Some(resource), Some(subject)) = (&q.resource, &q.subject) else { continue };
        let l = (resource.r#type.clone(), q.permission.clone(), subject.clone());
        if !out.contains(&l) {
            out.push(l);
            if out.len() == n {
                break;
            }
        }
    }
    out
}

/// A LookupResources request for `lookup`, a page of `limit` (0: all) after `cursor`.
pub fn lookup_request(lookup: &Lookup, limit: u32, cursor: &str) -> pb::LookupResourcesRequest {
    pb::LookupResourcesRequest {
        context: None,
        resource_type: lookup.0.clone(),
        permission: lookup.1.clone(),
        subject: Some(lookup.2.clone()),
        limit,
        cursor: cursor.to_string(),
        ..Default::default()
    }
}
