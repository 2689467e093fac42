//! The processes a crash run owns: `arbiter serve` instances (started, waited for until
//! they print their ready line, killed with SIGKILL) and, in Postgres mode, a throwaway
//! Postgres cluster made with `initdb` and driven with `pg_ctl`.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// How to start one `arbiter serve`.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// A name for messages (`arbiter`, `replica-1`).
    pub name: String,
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    /// Written at start (`--schema`).
    pub schema: Option<PathBuf>,
    /// `--postgres URL`.
    pub postgres: Option<String>,
    /// Its stderr is appended here.
    pub log: PathBuf,
}

/// An `arbiter serve` process that has been started and may not be ready yet.
#[derive(Debug)]
pub struct Starting {
    name: String,
    log: PathBuf,
    /// Taken when it becomes a [`Server`].
    child: Option<Child>,
    ready: tokio::sync::oneshot::Receiver<String>,
    started: Instant,
}

/// A serving `arbiter serve`: killed when dropped.
#[derive(Debug)]
pub struct Server {
    pub name: String,
    /// `http://HOST:PORT` of its gRPC port.
    pub endpoint: String,
    /// The revision token of its ready line.
    pub revision: String,
    /// From spawn to the ready line.
    pub start_time: Duration,
    log: PathBuf,
    child: Child,
}

impl ServerSpec {
    /// Spawns the server (ports chosen by the system) without waiting for it.
    pub fn spawn(&self) -> Result<Starting> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open the server log {}", self.log.display()))?;
        writeln!(log, "==== {} starting", self.name)
            .with_context(|| format!("write the server log {}", self.log.display()))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]);
        if let Some(schema) = &self.schema {
            cmd.arg("--schema").arg(schema);
        }
        if let Some(url) = &self.postgres {
            cmd.arg("--postgres").arg(url);
        }
        // Settings of the environment's own Arbiter (a preshared key, another address)
        // must not leak into the servers under test.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ARBITER_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {} serve", self.binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("{}: no stdout to read the ready line from", self.name))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The ready line is read on a thread of its own; the rest of stdout is drained
        // so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("arbiter ready ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line);
                    }
                }
            }
        });
        Ok(Starting {
            name: self.name.clone(),
            log: self.log.clone(),
            child: Some(child),
            ready: rx,
            started,
        })
    }

    /// Spawns the server and waits (at most `timeout`) for its ready line.
    pub async fn start(&self, timeout: Duration) -> Result<Server> {
        self.spawn()?.ready(timeout).await
    }
}

impl Starting {
    /// Waits for the ready line; kills the process if it does not come in `timeout`.
    pub async fn ready(mut self, timeout: Duration) -> Result<Server> {
        let line = match tokio::time::timeout(timeout, &mut self.ready).await {
            Ok(Ok(line)) => line,
            Ok(Err(_)) => {
                // Stdout closed without the line: the process ended.
                let status = self.child.as_mut().and_then(|c| c.wait().ok());
                bail!(
                    "{} exited before it was ready ({}); the end of its log {}:\n{}",
                    self.name,
                    status.map_or_else(|| "status unknown".to_string(), |s| s.to_string()),
                    self.log.display(),
                    log_tail(&self.log, 20)
                );
            }
            Err(_) => {
                // Dropping `self` kills the process.
                bail!(
                    "{} was not ready after {timeout:?}; the end of its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    log_tail(&self.log, 20)
                );
            }
        };
        let (grpc, revision) = parse_ready_line(&line)
            .ok_or_else(|| anyhow!("{}: cannot read the ready line `{line}`", self.name))?;
        let child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{}: the process is gone", self.name))?;
        Ok(Server {
            name: self.name.clone(),
            endpoint: format!("http://{grpc}"),
            revision,
            start_time: self.started.elapsed(),
            log: self.log.clone(),
            child,
        })
    }

    /// SIGKILL before it is ready.
    pub fn kill(mut self) -> Result<()> {
        match self.child.as_mut() {
            Some(child) => kill_child(child, &self.name),
            None => Ok(()),
        }
    }
}

impl Server {
    /// SIGKILL (`kill -9`), then reaps the process.
    pub fn kill(mut self) -> Result<()> {
        kill_child(&mut self.child, &self.name).map_err(|e| {
            e.context(format!(
                "the end of its log {}:\n{}",
                self.log.display(),
                log_tail(&self.log, 20)
            ))
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn kill_child(child: &mut Child, name: &str) -> Result<()> {
    if let Some(status) = child
        .try_wait()
        .with_context(|| format!("look at {name}"))?
    {
        bail!("{name} had already exited ({status}) when it was to be killed");
    }
    child.kill().with_context(|| format!("kill -9 {name}"))?;
    child.wait().with_context(|| format!("reap {name}"))?;
    Ok(())
}

/// `arbiter ready grpc=ADDR http=ADDR revision=TOKEN` -> (ADDR of gRPC, TOKEN).
pub fn parse_ready_line(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("arbiter ready ")?;
    let mut grpc = None;
    let mut revision = None;
    for field in rest.split_whitespace() {
        match field.split_once('=') {
            Some(("grpc", v)) if !v.is_empty() => grpc = Some(v.to_string()),
            Some(("revision", v)) if !v.is_empty() => revision = Some(v.to_string()),
            _ => {}
        }
    }
    Some((grpc?, revision?))
}

/// The last `n` lines of a log file (for an error message).
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read it: {e})"),
    }
}

/// Runs a command to its end; its stdout, or an error with its stderr.
pub fn run_command(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A free TCP port on 127.0.0.1 (free when asked; the cluster binds it right after).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(l.local_addr().context("find a free port")?.port())
}

/// A Postgres cluster of the harness's own, in a directory of the work dir, on a free
/// port of 127.0.0.1 with trust authentication: never the machine's shared one.
#[derive(Debug)]
pub struct PgCluster {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Run the server tools as the `postgres` OS user (initdb refuses root).
    as_postgres: bool,
    running: bool,
}

impl PgCluster {
    /// Where `initdb` and `pg_ctl` are: `given`, else `pg_config --bindir`, else the
    /// directory of `initdb` on PATH, else the newest `/usr/lib/postgresql/*/bin`.
    pub fn find_bindir(given: Option<&Path>) -> Result<PathBuf> {
        let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
        if let Some(d) = given {
            if has_tools(d) {
                return Ok(d.to_path_buf());
            }
            bail!("--pg-bindir {}: no initdb and pg_ctl there", d.display());
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && has_tools(&d) {
                return Ok(d);
            }
        }
        if let Some(path) = std::env::var_os("PATH") {
            for d in std::env::split_paths(&path) {
                if d.join("initdb").is_file() {
                    let real = std::fs::canonicalize(d.join("initdb")).unwrap_or(d.join("initdb"));
                    if let Some(parent) = real.parent() {
                        if has_tools(parent) {
                            return Ok(parent.to_path_buf());
                        }
                    }
                }
            }
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                    .filter(|d| has_tools(d))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found.pop().ok_or_else(|| {
            anyhow!(
                "no Postgres server tools (initdb, pg_ctl) found: not by `pg_config --bindir`, on PATH, nor in /usr/lib/postgresql/*/bin; install them (apt-get install postgresql) or pass --pg-bindir DIR"
            )
        })
    }

    /// Makes a cluster in `dir` (created) and starts it.
    pub fn create(bindir: PathBuf, dir: &Path) -> Result<PgCluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let uid = run_command(Command::new("id").arg("-u"), "find the user id")?;
        let as_postgres = uid.trim() == "0";
        if as_postgres {
            run_command(
                Command::new("id").arg("postgres"),
                "running as root, find the `postgres` OS user to run initdb and pg_ctl as",
            )?;
            run_command(
                Command::new("chown").arg("postgres:").arg(dir),
                "give the Postgres directory to the `postgres` user",
            )?;
        }
        let mut cluster = PgCluster {
            bindir,
            dir: dir.to_path_buf(),
            port: free_port()?,
            as_postgres,
            running: false,
        };
        let data = cluster.data();
        let mut initdb = cluster.tool("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run_command(&mut initdb, "initdb the throwaway cluster")?;
        cluster.start()?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn tool(&self, name: &str) -> Command {
        let program = self.bindir.join(name);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub fn start(&mut self) -> Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
            self.port,
            self.dir.display()
        );
        let mut c = self.tool("pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "120", "start"]);
        run_command(&mut c, "start the throwaway Postgres (pg_ctl start)").map_err(|e| {
            e.context(format!(
                "the end of {}:\n{}",
                self.dir.join("postgres.log").display(),
                log_tail(&self.dir.join("postgres.log"), 10)
            ))
        })?;
        self.running = true;
        Ok(())
    }

    /// `pg_ctl stop -m immediate`: every backend killed at once, no checkpoint (a
    /// crash, as far as the data is concerned); the next start recovers from the WAL.
    pub fn crash(&mut self) -> Result<()> {
        let mut c = self.tool("pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"]);
        run_command(
            &mut c,
            "stop the throwaway Postgres (pg_ctl stop -m immediate)",
        )?;
        self.running = false;
        Ok(())
    }

    /// Creates database `name`.
    pub fn create_database(&self, name: &str) -> Result<()> {
        let mut c = Command::new(self.bindir.join("createdb"));
        c.args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", "postgres", name]);
        run_command(&mut c, &format!("create the database `{name}`"))?;
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.crash();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_is_read() {
        assert_eq!(
            parse_ready_line("arbiter ready grpc=127.0.0.1:4000 http=127.0.0.1:4001 revision=r12"),
            Some(("127.0.0.1:4000".to_string(), "r12".to_string()))
        );
        assert_eq!(
            parse_ready_line("arbiter ready http=127.0.0.1:1 revision=r1"),
            None
        );
        assert_eq!(parse_ready_line("something else"), None);
    }
}
