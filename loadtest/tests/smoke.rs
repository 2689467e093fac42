//! A short smoke run against a real server: `arbiter serve` on free ports, a 10k
//! dataset from `gen`, then `arbiter-loadtest run --load` for two seconds. It asserts
//! what must hold whatever the machine's speed (no timing): every request answered
//! without error, the JSON report's keys, and the server agreeing with the dataset's
//! exact expected answers on every query (through `arbiter check`'s bulk path).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOADTEST: &str = env!("CARGO_BIN_EXE_arbiter-loadtest");

/// `arbiter`, built beside `arbiter-loadtest` by every workspace build.
fn arbiter_bin() -> PathBuf {
    let dir = Path::new(LOADTEST).parent().unwrap();
    let bin = dir.join("arbiter");
    assert!(bin.exists(), "{} is missing: build the workspace (`cargo build --workspace`)", bin.display());
    bin
}

struct Server {
    child: Child,
    grpc: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `arbiter serve` on free ports and waits for its ready line.
fn serve(data: &Path) -> Server {
    let mut child = Command::new(arbiter_bin())
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        // The ready line names the gRPC address: `... grpc=127.0.0.1:PORT ...`.
        if let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix("grpc=")) {
            let grpc = format!("http://{addr}");
            // Keep draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Server { child, grpc };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server printed no ready line");
}

#[test]
fn a_short_run_against_a_real_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = tmp.path().join("dataset");
    let out = Command::new(LOADTEST)
        .args(["gen", "--relationships", "10000", "--seed", "3", "--out"])
        .arg(&dataset)
        .output()
        .unwrap();
    assert!(out.status.success(), "gen failed: {}", String::from_utf8_lossy(&out.stderr));
    let server = serve(&tmp.path().join("data"));
    let report = tmp.path().join("report.json");
    let plot = tmp.path().join("latency.svg");
    let out = Command::new(LOADTEST)
        .args(["run", "--endpoint", &server.grpc, "--dataset"])
        .arg(&dataset)
        .args(["--load", "--rate", "200", "--duration", "2s"])
        // Every request kind, the empty call (health check) too, against the real server.
        .args(["--mix", "check=60,bulk=10,lookup=10,write=10,empty=10", "--json"])
        .arg(&report)
        .arg("--plot")
        .arg(&plot)
        .output()
        .unwrap();
    assert!(out.status.success(), "run failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for key in ["rate", "achieved_rate", "duration_s", "requests", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "errors", "errors_by_status", "fell_behind"] {
        assert!(r.get(key).is_some(), "the report has no `{key}`: {r}");
    }
    assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert!(std::fs::read_to_string(&plot).unwrap().contains("<svg"), "the plot is not an SVG");

    // The server's answers equal the generator's exact ones, on every query.
    let queries = std::fs::read_to_string(dataset.join("queries.txt")).unwrap();
    let expected = std::fs::read_to_string(dataset.join("expected.txt")).unwrap();
    let queries: Vec<&str> = queries.lines().collect();
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(queries.len(), expected.len());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let wrong = runtime.block_on(async {
        use arbiter_proto::arbiter::v1 as pb;
        let mut client = pb::permission_service_client::PermissionServiceClient::connect(server.grpc.clone()).await.unwrap();
        let mut wrong = Vec::new();
        for (chunk, answers) in queries.chunks(1000).zip(expected.chunks(1000)) {
            let items = chunk
                .iter()
                .map(|q| {
                    let r = arbiter_schema::parse_relationship(q).unwrap_or_else(|e| panic!("query `{q}`: {e}"));
                    pb::CheckBulkItem {
                        resource: Some(pb::ObjectRef { r#type: r.resource.object_type, id: r.resource.object_id }),
                        permission: r.relation,
                        subject: Some(pb::SubjectRef {
                            object: Some(pb::ObjectRef { r#type: r.subject.object.object_type, id: r.subject.object.object_id }),
                            relation: r.subject.relation.unwrap_or_default(),
                        }),
                        context: None,
                    }
                })
                .collect();
            let consistency = Some(pb::Consistency { requirement: Some(pb::consistency::Requirement::FullyConsistent(true)) });
            let resp = client.check_bulk(pb::CheckBulkRequest { consistency, items }).await.unwrap().into_inner();
            assert_eq!(resp.results.len(), chunk.len());
            for ((q, want), res) in chunk.iter().zip(answers).zip(&resp.results) {
                let allowed = match &res.result {
                    Some(pb::check_bulk_result::Result::Decision(d)) => *d == pb::Decision::Allowed as i32,
                    other => panic!("{q}: {other:?}"),
                };
                if allowed.to_string() != *want {
                    wrong.push(format!("{q}: expected {want}, the server said {allowed}"));
                }
            }
        }
        wrong
    });
    assert!(wrong.is_empty(), "{} of {} answers differ, e.g. {:?}", wrong.len(), queries.len(), &wrong[..wrong.len().min(5)]);
}
