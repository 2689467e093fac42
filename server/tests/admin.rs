//! The admin server against the real binary, a real Postgres (a database of its own per
//! test) and a real PDP replica on the same database: bootstrap, the feed (every
//! mapping asked of the PDP at the returned token, revocation included), the admin's
//! own authorization through the PDP, row-level security under the admin's role,
//! cross-tenant ids, audit records, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A running `arbiter admin`; killed when dropped.
struct Admin {
    child: Child,
    addr: String,
}

impl Admin {
    fn start(db: &TestDb, pdp: &Server, extra: &[&str]) -> Admin {
        let pdp_endpoint = pdp.endpoint();
        let mut cmd = Command::new(BIN);
        cmd.args(["admin", "--postgres", &db.url, "--addr", "127.0.0.1:0", "--pdp-endpoint", &pdp_endpoint])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("the admin printed no ready line");
        let addr = line.strip_prefix("arbiter admin ready addr=").unwrap_or_else(|| panic!("unexpected `{line}`")).to_string();
        Admin { child, addr }
    }

    fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>, extra: &[(&str, &str)]) -> Reply {
        let mut headers: Vec<(String, String)> = extra.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        if let Some(k) = key {
            headers.push(("authorization".into(), format!("Bearer {k}")));
        }
        let bytes = body.map(|b| {
            headers.push(("content-type".into(), "application/json".into()));
            serde_json::to_vec(&b).unwrap()
        });
        http_request(&self.addr, method, path, &headers, bytes.as_deref()).unwrap()
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_of(r: &Reply) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body))
}

/// A PDP replica (migrating the database), the bootstrap, and an admin.
struct Platform {
    db: TestDb,
    pdp: Server,
    admin: Admin,
    operator: String,
    tenant: String,
    _dir: tempfile::TempDir,
}

async fn platform(tag: &str) -> Platform {
    platform_with(tag, &[]).await
}

/// [`platform`] with extra flags for the admin.
async fn platform_with(tag: &str, admin_flags: &[&str]) -> Platform {
    platform_full(tag, &[], admin_flags).await
}

/// [`platform`] with extra flags for the PDP and for the admin.
async fn platform_full(tag: &str, pdp_flags: &[&str], admin_flags: &[&str]) -> Platform {
    let db = TestDb::new(tag).await;
    let dir = tempfile::tempdir().unwrap();
    let mut flags = vec!["--postgres", &db.url, "--migrate"];
    flags.extend_from_slice(pdp_flags);
    let pdp = Server::start(dir.path(), &flags);
    let out = Command::new(BIN)
        .args(["admin", "bootstrap", "--postgres", &db.url, "--tenant", "acme", "--email", "Owner@Acme.test"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let last = stdout.lines().last().unwrap();
    let operator = last.strip_prefix("api_key=").unwrap_or_else(|| panic!("last line `{last}`")).to_string();
    let tenant = stdout.lines().find_map(|l| l.strip_prefix("tenant_id=")).unwrap().to_string();
    // The development secrets are announced loudly.
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEVELOPMENT secrets"));
    let admin = Admin::start(&db, &pdp, admin_flags);
    Platform { db, pdp, admin, operator, tenant, _dir: dir }
}

impl Platform {
    /// A mutating call that must succeed with `status`, carry a revision, and leave an
    /// audit record with its request id.
    async fn write(&self, method: &str, path: &str, key: &str, body: Option<Value>, status: u16) -> (Value, String) {
        let r = self.admin.call(method, path, Some(key), body, &[]);
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        let token = r.header("arbiter-revision").unwrap_or_else(|| panic!("{method} {path}: no revision")).to_string();
        let request_id = r.header("x-request-id").unwrap().to_string();
        let pool = self.db.pool().await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM arbiter_admin.audit_records WHERE request_id = $1")
            .bind(&request_id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 1, "{method} {path} left no audit record");
        let v = if r.body.is_empty() { Value::Null } else { json_of(&r) };
        (v, token)
    }

    async fn allowed(&self, rel: &str, token: &str) -> bool {
        let mut c = self.pdp.clients().await;
        let r = c.permissions.check(check_req(rel, at_least(token))).await.unwrap().into_inner();
        r.decision == arbiter_proto::arbiter::v1::Decision::Allowed as i32
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_feeds_the_graph_and_asks_the_pdp() {
    let p = platform("admin_feed").await;
    let (a, op, t) = (&p.admin, p.operator.as_str(), p.tenant.as_str());

    // Operations: health, readiness, metrics, the document, all public.
    assert_eq!(a.call("GET", "/healthz", None, None, &[]).status, 200);
    assert_eq!(a.call("GET", "/readyz", None, None, &[]).status, 200);
    let served = a.call("GET", "/openapi.json", None, None, &[]);
    assert_eq!(served.body, include_str!("../admin/openapi.json"), "the served document is not the committed snapshot");
    let doc = json_of(&served);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([{}]));
    // Everything else needs a key.
    let r = a.call("GET", &format!("/v1/tenants/{t}"), None, None, &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(a.call("GET", &format!("/v1/tenants/{t}"), Some("nope.nope"), None, &[]).status, 401);

    // The bootstrap's owner is the tenant's owner and member.
    let users = json_of(&a.call("GET", &format!("/v1/tenants/{t}/users"), Some(op), None, &[]));
    let owner = users["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(users["items"][0]["email"], "owner@acme.test");
    let head = p.pdp.revision.clone();
    let (_, t0) = p.write("PATCH", &format!("/v1/tenants/{t}"), op, Some(json!({"name": "Acme Inc."})), 200).await;
    assert!(p.allowed(&format!("platform/tenant:{t}#manage@platform/user:{owner}"), &t0).await, "{head}");

    // A user: a member of the tenant at the returned token.
    let (alice, t1) = p.write("POST", &format!("/v1/tenants/{t}/users"), op, Some(json!({"email": "alice@acme.test", "display_name": "Alice"})), 201).await;
    let alice = alice["id"].as_str().unwrap().to_string();
    assert!(p.allowed(&format!("platform/tenant:{t}#member@platform/user:{alice}"), &t1).await);
    assert!(!p.allowed(&format!("platform/tenant:{t}#manage@platform/user:{alice}"), &t1).await);

    // Groups, a user member, and nesting.
    let (eng, _) = p.write("POST", &format!("/v1/tenants/{t}/groups"), op, Some(json!({"name": "eng"})), 201).await;
    let eng = eng["id"].as_str().unwrap().to_string();
    let (all, _) = p.write("POST", &format!("/v1/tenants/{t}/groups"), op, Some(json!({"name": "everyone"})), 201).await;
    let all = all["id"].as_str().unwrap().to_string();
    let (m, t2) = p.write("POST", &format!("/v1/tenants/{t}/groups/{eng}/members"), op, Some(json!({"user_id": alice, "role": "manager"})), 201).await;
    let membership = m["id"].as_str().unwrap().to_string();
    assert!(p.allowed(&format!("platform/group:{eng}#member@platform/user:{alice}"), &t2).await);
    assert!(p.allowed(&format!("platform/group:{eng}#manage@platform/user:{alice}"), &t2).await);
    let (_, t3) = p.write("POST", &format!("/v1/tenants/{t}/groups/{all}/members"), op, Some(json!({"group_id": eng})), 201).await;
    assert!(p.allowed(&format!("platform/group:{all}#member@platform/user:{alice}"), &t3).await);
    // A cycle is refused by name, and changes nothing.
    let r = a.call("POST", &format!("/v1/tenants/{t}/groups/{eng}/members"), Some(op), Some(json!({"group_id": all})), &[]);
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some("/group_id")), "{}", r.body);
    // Removing the membership revokes at once, through the nesting too.
    let (_, t4) = p.write("DELETE", &format!("/v1/tenants/{t}/groups/{eng}/members/{membership}"), op, None, 204).await;
    assert!(!p.allowed(&format!("platform/group:{eng}#member@platform/user:{alice}"), &t4).await);
    assert!(!p.allowed(&format!("platform/group:{all}#member@platform/user:{alice}"), &t4).await);

    // A root admin manages the tenant; suspending the person takes it away everywhere.
    let (_, t5) = p.write("PATCH", &format!("/v1/tenants/{t}/users/{alice}"), op, Some(json!({"is_root_admin": true})), 200).await;
    assert!(p.allowed(&format!("platform/tenant:{t}#manage@platform/user:{alice}"), &t5).await);
    let (_, t6) = p.write("POST", &format!("/v1/users/{alice}/suspend"), op, Some(json!({"reason": "left the company"})), 200).await;
    assert!(!p.allowed(&format!("platform/tenant:{t}#manage@platform/user:{alice}"), &t6).await);
    let (_, t7) = p.write("POST", &format!("/v1/users/{alice}/reactivate"), op, None, 200).await;
    assert!(p.allowed(&format!("platform/tenant:{t}#manage@platform/user:{alice}"), &t7).await);
    // Removing her from the tenant removes every grant she had in it.
    let (_, t8) = p.write("DELETE", &format!("/v1/tenants/{t}/users/{alice}"), op, None, 204).await;
    assert!(!p.allowed(&format!("platform/tenant:{t}#member@platform/user:{alice}"), &t8).await);
    assert!(!p.allowed(&format!("platform/tenant:{t}#manage@platform/user:{alice}"), &t8).await);
    assert_eq!(a.call("GET", &format!("/v1/tenants/{t}/users/{alice}"), Some(op), None, &[]).status, 404);

    // An auditor key reads and changes nothing; revoked, it is refused at once.
    let (key, _) = p.write("POST", &format!("/v1/tenants/{t}/api-keys"), op, Some(json!({"name": "audit bot", "role": "auditor"})), 201).await;
    let auditor = key["api_key"].as_str().unwrap().to_string();
    let key_id = key["id"].as_str().unwrap().to_string();
    assert_eq!(a.call("GET", &format!("/v1/tenants/{t}/users"), Some(&auditor), None, &[]).status, 200);
    let r = a.call("POST", &format!("/v1/tenants/{t}/groups"), Some(&auditor), Some(json!({"name": "x"})), &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(a.call("GET", "/v1/tenants", Some(&auditor), None, &[]).status, 403);
    let listed = json_of(&a.call("GET", &format!("/v1/tenants/{t}/api-keys"), Some(op), None, &[]));
    assert!(!listed.to_string().contains(auditor.split('.').nth(1).unwrap()), "a secret was listed");
    p.write("DELETE", &format!("/v1/tenants/{t}/api-keys/{key_id}"), op, None, 204).await;
    assert_eq!(a.call("GET", &format!("/v1/tenants/{t}/users"), Some(&auditor), None, &[]).status, 401);

    // The PDP down: 503, never an allow.
    let metrics = a.call("GET", "/metrics", None, None, &[]).body;
    assert!(metrics.contains("arbiter_admin_pdp_calls_total{outcome=\"ok\"}"), "{metrics}");
    assert!(metrics.contains("arbiter_admin_requests_total{route=\"/v1/tenants/{tenant_id}/users\",status=\"201\"}"), "{metrics}");
    p.pdp.kill9();
    let r = a.call("GET", &format!("/v1/tenants/{t}"), Some(op), None, &[]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_by_rls_and_by_the_api() {
    let p = platform("admin_rls").await;
    let (a, op) = (&p.admin, p.operator.as_str());
    let (ta, tb) = (p.tenant.clone(), {
        let (b, _) = p.write("POST", "/v1/tenants", op, Some(json!({"slug": "globex", "name": "Globex", "owner_email": "boss@globex.test"})), 201).await;
        b["id"].as_str().unwrap().to_string()
    });
    let (gb, _) = p.write("POST", &format!("/v1/tenants/{tb}/groups"), op, Some(json!({"name": "secret"})), 201).await;
    let gb = gb["id"].as_str().unwrap().to_string();
    let (ub, _) = p.write("POST", &format!("/v1/tenants/{tb}/users"), op, Some(json!({"email": "b@globex.test"})), 201).await;
    let ub = ub["id"].as_str().unwrap().to_string();

    // Raw SQL as the admin's role with tenant A set: B's rows do not exist.
    let pool = p.db.pool().await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE arbiter_admin_app").execute(&mut *tx).await.unwrap();
    sqlx::query("SELECT set_config('arbiter.tenant_id', $1, true)").bind(&ta).execute(&mut *tx).await.unwrap();
    let groups: i64 = sqlx::query_scalar("SELECT count(*) FROM arbiter_admin.groups").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(groups, 0);
    let users: Vec<String> = sqlx::query_scalar("SELECT email FROM arbiter_admin.users").fetch_all(&mut *tx).await.unwrap();
    assert_eq!(users, ["owner@acme.test"]);
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM arbiter_admin.tenants").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(tenants, 1);
    let updated = sqlx::query("UPDATE arbiter_admin.groups SET name = 'pwned' WHERE id = $1::uuid").bind(&gb).execute(&mut *tx).await.unwrap();
    assert_eq!(updated.rows_affected(), 0);
    let err = sqlx::query("INSERT INTO arbiter_admin.groups (id, tenant_id, name) VALUES (gen_random_uuid(), $1::uuid, 'x')")
        .bind(&tb)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    drop(tx);
    // The role may not rewrite the audit trail.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE arbiter_admin_app").execute(&mut *tx).await.unwrap();
    sqlx::query("SELECT set_config('arbiter.scope', 'platform', true)").execute(&mut *tx).await.unwrap();
    assert!(sqlx::query("DELETE FROM arbiter_admin.audit_records").execute(&mut *tx).await.is_err());
    drop(tx);

    // Tenant B's other rows, one of each kind.
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let (m, _) = p.write("POST", &format!("/v1/tenants/{tb}/groups/{gb}/members"), op, Some(json!({"user_id": ub})), 201).await;
    let (d, _) = p.write("POST", &format!("/v1/tenants/{tb}/departments"), op, Some(json!({"name": "ops"})), 201).await;
    let (r, _) = p.write("POST", &format!("/v1/tenants/{tb}/roles"), op, Some(json!({"name": "clerk"})), 201).await;
    let (pm, _) = p.write("POST", &format!("/v1/tenants/{tb}/permissions"), op, Some(json!({"name": "b:x", "resource": "b", "action": "x"})), 201).await;
    let (asg, _) = p.write("POST", &format!("/v1/tenants/{tb}/assignments"), op, Some(json!({"role_id": id(&r), "user_id": ub})), 201).await;
    let (c, _) = p.write("POST", &format!("/v1/tenants/{tb}/users/{ub}/contacts"), op, Some(json!({"type": "phone", "value": "1"})), 201).await;
    let (dom, _) = p.write("POST", &format!("/v1/tenants/{tb}/domains"), op, Some(json!({"domain": "globex.example.com"})), 201).await;
    let (k, _) = p.write("POST", &format!("/v1/tenants/{tb}/api-keys"), op, Some(json!({"name": "b bot", "role": "auditor"})), 201).await;
    p.write("PUT", &format!("/v1/tenants/{tb}/users/{ub}/preferences/theme"), op, Some(json!({"value": "dark"})), 200).await;
    p.write_app_schema().await;
    let (acl, _) = p.write("POST", &format!("/v1/tenants/{tb}/acl-entries"), op,
        Some(json!({"resource_type": "doc", "resource_id": "b1", "subject_type": "user", "subject_id": ub, "relations": ["viewer"]})), 201).await;
    let (nb, _) = p.write("POST", &format!("/v1/tenants/{tb}/graph/nodes"), op, Some(json!({"type": "doc", "object_id": "b3"})), 201).await;
    let (eb, _) = p.write("POST", &format!("/v1/tenants/{tb}/graph/edges"), op, Some(json!({"from_node_id": id(&nb), "to_node_id": id(&nb), "relation_type": "related"})), 201).await;
    let (lab, _) = p.write("POST", "/v1/security-labels", op, Some(json!({"name": "iso", "level": 1})), 201).await;
    let (ol, _) = p.write("POST", &format!("/v1/tenants/{tb}/object-labels"), op, Some(json!({"object_type": "doc", "object_id": "b1", "label_id": id(&lab)})), 201).await;
    let (ua, _) = p.write("POST", "/v1/attributes", op, Some(json!({"object_type": "platform/user", "name": "dept", "data_type": "string"})), 201).await;
    let (uv, _) = p.write("POST", &format!("/v1/attributes/{}/values", id(&ua)), op, Some(json!({"value": "ops"})), 201).await;
    let (sa, _) = p.write("POST", &format!("/v1/tenants/{tb}/subject-attributes"), op, Some(json!({"subject_type": "user", "subject_id": ub, "value_id": id(&uv)})), 201).await;
    let (da, _) = p.write("POST", "/v1/attributes", op, Some(json!({"object_type": "doc", "name": "kind", "data_type": "string"})), 201).await;
    let (dv, _) = p.write("POST", &format!("/v1/attributes/{}/values", id(&da)), op, Some(json!({"value": "memo"})), 201).await;
    let (ra, _) = p.write("POST", &format!("/v1/tenants/{tb}/resource-attributes"), op, Some(json!({"resource_type": "doc", "resource_id": "b1", "value_id": id(&dv)})), 201).await;
    let (ub2, _) = p.write("POST", &format!("/v1/tenants/{tb}/users"), op, Some(json!({"email": "b2@globex.test"})), 201).await;
    let (dlg, _) = p.write("POST", &format!("/v1/tenants/{tb}/delegations"), op,
        Some(json!({"grantor_user_id": ub, "delegate_user_id": id(&ub2), "role_id": id(&r)})), 201).await;
    let (ses, _) = p.write("POST", &format!("/v1/tenants/{tb}/impersonation-sessions"), op, Some(json!({"target_user_id": ub, "reason": "isolation"})), 201).await;
    let (invb, _) = p.write("POST", &format!("/v1/tenants/{tb}/invitations"), op, Some(json!({})), 201).await;
    let (jrb, _) = p.write("POST", "/v1/join-requests", op, Some(json!({"tenant": "globex", "email": "k@globex.test"})), 201).await;
    let (rule, _) = p.write("POST", &format!("/v1/tenants/{tb}/alert-rules"), op, Some(json!({"name": "pings", "event_pattern": "test.ping"})), 201).await;
    p.write("POST", &format!("/v1/tenants/{tb}/audit-events"), op, Some(json!({"events": [{"service_name": "probe", "event_type": "test.ping", "actor": "probe"}]})), 200).await;
    let alerts_b = format!("/v1/tenants/{tb}/alerts");
    p.eventually("the alert", || async { json_of(&a.call("GET", &alerts_b, Some(op), None, &[]))["items"].as_array().is_some_and(|i| !i.is_empty()) }).await;
    let alert_b = json_of(&a.call("GET", &alerts_b, Some(op), None, &[]))["items"][0]["id"].as_str().unwrap().to_string();
    let ids: Vec<(&str, String)> = vec![
        ("{rule_id}", id(&rule)), ("{alert_id}", alert_b),
        ("{invitation_id}", id(&invb)), ("{request_id}", id(&jrb)),
        ("{delegation_id}", id(&dlg)), ("{session_id}", id(&ses)),
        ("{object_label_id}", id(&ol)), ("{subject_attribute_id}", id(&sa)), ("{resource_attribute_id}", id(&ra)),
        ("{user_id}", ub.clone()), ("{group_id}", gb.clone()), ("{member_id}", id(&m)), ("{department_id}", id(&d)),
        ("{role_id}", id(&r)), ("{permission_id}", id(&pm)), ("{assignment_id}", id(&asg)), ("{contact_id}", id(&c)),
        ("{domain_id}", id(&dom)), ("{key_id}", id(&k)), ("{key}", "theme".to_string()), ("{entry_id}", id(&acl)),
        ("{node_id}", id(&nb)), ("{edge_id}", id(&eb)),
    ];
    // A valid body for every operation that takes one.
    let body_for = |method: &str, template: &str| -> Option<Value> {
        let last = template.rsplit('/').next().unwrap_or("");
        match (method, last) {
            ("PATCH", "{tenant_id}") => Some(json!({"name": "x"})),
            ("POST", "status") => Some(json!({"status": "suspended"})),
            ("POST", "domains") => Some(json!({"domain": "x.example.com"})),
            ("POST", "departments" | "groups" | "roles") | ("PATCH", "{department_id}" | "{group_id}" | "{role_id}") => Some(json!({"name": "x"})),
            ("POST", "users") => Some(json!({"email": "x@x.test"})),
            ("PATCH", "{user_id}") => Some(json!({"title": "x"})),
            ("PUT", "{key}") => Some(json!({"value": 1})),
            ("POST", "contacts") => Some(json!({"type": "phone", "value": "2"})),
            ("POST", "members") => Some(json!({"user_id": ub})),
            ("POST", "permissions") => Some(json!({"name": "y", "resource": "y", "action": "y"})),
            ("PATCH", "{permission_id}") => Some(json!({"description": "x"})),
            ("POST", "assignments") => Some(json!({"role_id": id(&r), "user_id": ub})),
            ("POST", "api-keys") => Some(json!({"name": "x", "role": "admin"})),
            ("POST", "acl-entries") => Some(json!({"resource_type": "doc", "resource_id": "b2", "subject_type": "user", "subject_id": ub, "relations": ["viewer"]})),
            ("PATCH", "{entry_id}") => Some(json!({"relations": ["owner"]})),
            ("POST", "nodes") => Some(json!({"type": "doc", "object_id": "b4"})),
            ("PATCH", "{node_id}" | "{edge_id}") => Some(json!({"properties": {}})),
            ("POST", "invitations") => Some(json!({"email": "x@globex.test"})),
            ("POST", "approve" | "reject") => Some(json!({})),
            ("POST", "delegations") => Some(json!({"grantor_user_id": ub, "delegate_user_id": id(&ub2), "role_id": id(&r)})),
            ("POST", "impersonation-sessions") => Some(json!({"target_user_id": ub, "reason": "x"})),
            ("POST", "object-labels") => Some(json!({"object_type": "doc", "object_id": "b5", "label_id": id(&lab)})),
            ("POST", "subject-attributes") => Some(json!({"subject_type": "user", "subject_id": ub, "value_id": id(&uv)})),
            ("POST", "resource-attributes") => Some(json!({"resource_type": "doc", "resource_id": "b5", "value_id": id(&dv)})),
            ("POST", "edges") => Some(json!({"from_node_id": id(&nb), "to_node_id": id(&nb), "relation_type": "related"})),
            ("POST", "audit-events") => Some(json!({"events": [{"service_name": "probe", "event_type": "x", "actor": "a"}]})),
            ("POST", "alert-rules") => Some(json!({"name": "x", "event_pattern": "*"})),
            ("PATCH", "{rule_id}") => Some(json!({"threshold": 2})),
            ("POST", "resolve") => Some(json!({})),
            ("POST", "pep-logs") => Some(json!({"reports": [{"decision_id": "d", "pep": "p", "outcome": "allowed"}]})),
            _ => None,
        }
    };
    // Every operation on a tenant's path, as tenant A's admin, with B's ids: B's own
    // paths, and A's paths naming B's rows.
    let (key, _) = p.write("POST", &format!("/v1/tenants/{ta}/api-keys"), op, Some(json!({"name": "a admin", "role": "admin"})), 201).await;
    let ka = key["api_key"].as_str().unwrap().to_string();
    let audit_before = p.audit_count().await;
    let head_before = p.db_head().await;
    let doc = json_of(&a.call("GET", "/openapi.json", None, None, &[]));
    let mut tried = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        if !template.starts_with("/v1/tenants/{tenant_id}") {
            continue;
        }
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let method = method.to_uppercase();
            for tenant in [&tb, &ta] {
                if tenant == &ta && !ids.iter().any(|(name, _)| template.contains(name)) {
                    continue;
                }
                let mut path = template.replace("{tenant_id}", tenant);
                for (name, value) in &ids {
                    path = path.replace(name, value);
                }
                if template.ends_with("/access") {
                    path.push_str("?resource_type=doc&resource_id=b1&permission=view");
                }
                let r = a.call(&method, &path, Some(&ka), body_for(&method, template), &[]);
                // Operators' calls under a tenant's path refuse every other caller alike.
                let expected = if template.ends_with("/status") { 403 } else { 404 };
                assert_eq!(r.status, expected, "{method} {template} as tenant A's admin on {path}: {}", r.body);
                tried += 1;
            }
        }
    }
    assert!(tried >= 60, "only {tried} calls");
    // Adding tenant B's user to a tenant A group: the user is not A's.
    let (ga, _) = p.write("POST", &format!("/v1/tenants/{ta}/groups"), op, Some(json!({"name": "a"})), 201).await;
    let ga = ga["id"].as_str().unwrap().to_string();
    let audit_before = audit_before + 1;
    let head_before = head_before + 1;
    let r = a.call("POST", &format!("/v1/tenants/{ta}/groups/{ga}/members"), Some(&ka), Some(json!({"user_id": ub})), &[]);
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some("/user_id")), "{}", r.body);
    let r = a.call("POST", &format!("/v1/tenants/{ta}/groups/{ga}/members"), Some(&ka), Some(json!({"group_id": gb})), &[]);
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some("/group_id")), "{}", r.body);
    assert_eq!(p.audit_count().await, audit_before, "a refused call left an audit record");
    // Each refusal went to the security stream, under tenant A's key.
    let refused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM arbiter_admin.audit_records WHERE stream = 'security' AND action = 'access.denied' AND actor = $1",
    )
    .bind(format!("api_key:{}", key["id"].as_str().unwrap()))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(refused >= 60, "only {refused} refusals in the security stream");
    assert_eq!(p.db_head().await, head_before, "a refused call wrote a revision");
    let name: String = sqlx::query_scalar("SELECT name FROM arbiter_admin.tenants WHERE id = $1::uuid").bind(&tb).fetch_one(&pool).await.unwrap();
    assert_eq!(name, "Globex");
}

impl Platform {
    async fn db_head(&self) -> i64 {
        let pool = self.db.pool().await;
        sqlx::query_scalar("SELECT revision FROM arbiter_revision").fetch_one(&pool).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_problem_naming_the_field_and_changes_nothing() {
    let p = platform("admin_bad").await;
    let (a, op, t) = (&p.admin, p.operator.as_str(), p.tenant.as_str());
    let users = format!("/v1/tenants/{t}/users");
    let (g, _) = p.write("POST", &format!("/v1/tenants/{t}/groups"), op, Some(json!({"name": "eng"})), 201).await;
    let g = g["id"].as_str().unwrap().to_string();
    let pool = p.db.pool().await;
    let audit_before = p.audit_count().await;
    let head_before = p.db_head().await;

    let long = "x".repeat(201);
    // (method, path, body, extra headers, status, field named)
    type Case<'a> = (&'a str, String, Option<String>, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("POST", users.clone(), Some("{\"email\":".to_string()), vec![], 400, "body"),
        ("POST", users.clone(), Some("{\"email\":\"a@b.test\",\"colour\":\"red\"}".to_string()), vec![], 400, "/colour"),
        ("POST", users.clone(), Some("{\"email\":42}".to_string()), vec![], 400, "/email"),
        ("POST", users.clone(), Some("{\"email\":\"not-an-email\"}".to_string()), vec![], 422, "/email"),
        ("POST", users.clone(), Some(format!("{{\"email\":\"a@b.test\",\"display_name\":\"{long}\"}}")), vec![], 422, "/display_name"),
        ("POST", users.clone(), Some("{\"email\":\"owner@acme.test\"}".to_string()), vec![], 409, "/email"),
        ("POST", users.clone(), Some("{\"email\":\"a@b.test\",\"department_id\":\"7b0c7f5e-3c39-4b0e-9d2e-000000000000\"}".to_string()), vec![], 422, "/department_id"),
        ("POST", format!("/v1/tenants/{t}/groups"), Some("{\"name\":\"eng\"}".to_string()), vec![], 409, "/name"),
        ("POST", format!("/v1/tenants/{t}/groups/{g}/members"), Some("{\"user_id\":\"7b0c7f5e-3c39-4b0e-9d2e-000000000000\"}".to_string()), vec![], 422, "/user_id"),
        ("PATCH", format!("/v1/tenants/{t}/groups/{g}"), Some("{\"name\":\"x\"}".to_string()), vec![("if-match", "\"v7\"")], 412, "If-Match"),
        ("GET", format!("{users}?limit=100000"), None, vec![], 400, "limit"),
        ("GET", format!("{users}?colour=red"), None, vec![], 400, "colour"),
        ("GET", format!("/v1/tenants/{t}/users/not-a-uuid"), None, vec![], 400, "path"),
        ("POST", users.clone(), Some("{\"email\":\"a@b.test\"}".to_string()), vec![("content-type", "text/plain")], 415, "Content-Type"),
    ];
    for (method, path, raw, extra, status, field) in cases {
        let mut headers: Vec<(String, String)> = vec![("authorization".into(), format!("Bearer {op}"))];
        if raw.is_some() && !extra.iter().any(|(n, _)| *n == "content-type") {
            headers.push(("content-type".into(), "application/json".into()));
        }
        headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        let r = http_request(&a.addr, method, &path, &headers, raw.as_deref().map(str::as_bytes)).unwrap();
        assert_eq!(r.status, status, "{method} {path} {raw:?}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/problem+json"), "{method} {path}");
        let doc = json_of(&r);
        assert_eq!(doc["field"].as_str(), Some(field), "{method} {path} {raw:?}: {}", r.body);
        assert!(!doc["detail"].as_str().unwrap_or("").is_empty());
    }
    assert_eq!(p.audit_count().await, audit_before, "a refused call left an audit record");
    assert_eq!(p.db_head().await, head_before, "a refused call wrote a revision");

    // Idempotency-Key: a replay returns the stored response; another body is 422.
    let key = [("idempotency-key", "create-bob-1")];
    let first = a.call("POST", &users, Some(op), Some(json!({"email": "bob@acme.test"})), &key);
    assert_eq!(first.status, 201, "{}", first.body);
    let again = a.call("POST", &users, Some(op), Some(json!({"email": "bob@acme.test"})), &key);
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(json_of(&again)["id"], json_of(&first)["id"]);
    assert_eq!(again.header("arbiter-revision"), first.header("arbiter-revision"));
    let other = a.call("POST", &users, Some(op), Some(json!({"email": "carol@acme.test"})), &key);
    assert_eq!((other.status, json_of(&other)["field"].as_str()), (422, Some("Idempotency-Key")), "{}", other.body);
    let bobs: i64 = sqlx::query_scalar("SELECT count(*) FROM arbiter_admin.users WHERE email = 'bob@acme.test'").fetch_one(&pool).await.unwrap();
    assert_eq!(bobs, 1);

    // ETags: the current one matches.
    let r = a.call("GET", &format!("/v1/tenants/{t}/groups/{g}"), Some(op), None, &[]);
    let etag = r.header("etag").unwrap().to_string();
    let r = a.call("PATCH", &format!("/v1/tenants/{t}/groups/{g}"), Some(op), Some(json!({"description": "d"})), &[("if-match", &etag)]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_ne!(r.header("etag"), Some(etag.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_permissions_and_assignments_feed_the_graph() {
    let p = platform("admin_roles").await;
    let (op, t) = (p.operator.as_str(), p.tenant.as_str());
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let (u, _) = p.write("POST", &format!("/v1/tenants/{t}/users"), op, Some(json!({"email": "dana@acme.test"})), 201).await;
    let u = id(&u);
    let (g, _) = p.write("POST", &format!("/v1/tenants/{t}/groups"), op, Some(json!({"name": "finance"})), 201).await;
    let g = id(&g);
    p.write("POST", &format!("/v1/tenants/{t}/groups/{g}/members"), op, Some(json!({"user_id": u})), 201).await;

    // A tenant permission, a role that grants it, and a child role that inherits it.
    let (perm, _) = p.write("POST", &format!("/v1/tenants/{t}/permissions"), op,
        Some(json!({"name": "invoice:approve", "resource": "invoice", "action": "approve", "tags": ["finance"]})), 201).await;
    let perm = id(&perm);
    let (approver, _) = p.write("POST", &format!("/v1/tenants/{t}/roles"), op, Some(json!({"name": "approver"})), 201).await;
    let approver = id(&approver);
    let (senior, _) = p.write("POST", &format!("/v1/tenants/{t}/roles"), op, Some(json!({"name": "senior", "parent_role_id": approver})), 201).await;
    let senior = id(&senior);
    p.write("PUT", &format!("/v1/tenants/{t}/roles/{approver}/permissions/{perm}"), op, None, 201).await;
    let allowed = format!("platform/permission:{t}_{perm}#allowed@platform/user:{u}");

    // Assigned to the group: the member holds the child role, hence the permission.
    let (a, t1) = p.write("POST", &format!("/v1/tenants/{t}/assignments"), op, Some(json!({"role_id": senior, "group_id": g})), 201).await;
    assert!(p.allowed(&allowed, &t1).await);
    assert!(p.allowed(&format!("platform/role:{t}_{approver}#holder@platform/user:{u}"), &t1).await);
    // Ending the assignment revokes at once.
    let (_, t2) = p.write("DELETE", &format!("/v1/tenants/{t}/assignments/{}", id(&a)), op, None, 204).await;
    assert!(!p.allowed(&allowed, &t2).await);
    // Assigned directly; revoking the grant, then deleting the role, revoke at once.
    let (_, t3) = p.write("POST", &format!("/v1/tenants/{t}/assignments"), op, Some(json!({"role_id": approver, "user_id": u})), 201).await;
    assert!(p.allowed(&allowed, &t3).await);
    let (_, t4) = p.write("DELETE", &format!("/v1/tenants/{t}/roles/{approver}/permissions/{perm}"), op, None, 204).await;
    assert!(!p.allowed(&allowed, &t4).await);
    p.write("PUT", &format!("/v1/tenants/{t}/roles/{approver}/permissions/{perm}"), op, None, 201).await;
    // A parent with children is not deleted; the child goes first.
    let r = p.admin.call("DELETE", &format!("/v1/tenants/{t}/roles/{approver}"), Some(op), None, &[]);
    assert_eq!(r.status, 409, "{}", r.body);
    p.write("DELETE", &format!("/v1/tenants/{t}/roles/{senior}"), op, None, 204).await;
    let (_, t5) = p.write("DELETE", &format!("/v1/tenants/{t}/roles/{approver}"), op, None, 204).await;
    assert!(!p.allowed(&allowed, &t5).await);

    // An expiring assignment of a built-in role: the admin power ends at its time, with
    // no write at that moment.
    let roles = json_of(&p.admin.call("GET", &format!("/v1/tenants/{t}/roles?scope=global&name=auditor"), Some(op), None, &[]));
    let auditor = id(&roles["items"][0]);
    let until = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
    let (_, t6) = p.write("POST", &format!("/v1/tenants/{t}/assignments"), op, Some(json!({"role_id": auditor, "user_id": u, "expires_at": until})), 201).await;
    let audit = format!("platform/tenant:{t}#audit@platform/user:{u}");
    assert!(p.allowed(&audit, &t6).await);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(!p.allowed(&audit, &t6).await, "the expired assignment still granted");

    // A global role and permission reach every tenant, those created later too.
    let (gp, _) = p.write("POST", "/v1/permissions", op, Some(json!({"name": "reports:read", "resource": "reports", "action": "read"})), 201).await;
    let gp = id(&gp);
    let (gr, _) = p.write("POST", "/v1/roles", op, Some(json!({"name": "reader"})), 201).await;
    let gr = id(&gr);
    p.write("PUT", &format!("/v1/roles/{gr}/permissions/{gp}"), op, None, 201).await;
    let (t2_, _) = p.write("POST", "/v1/tenants", op, Some(json!({"slug": "initech", "name": "Initech", "owner_email": "bill@initech.test"})), 201).await;
    let other = id(&t2_);
    for (tenant, email) in [(t, "owner@acme.test"), (other.as_str(), "bill@initech.test")] {
        let users = json_of(&p.admin.call("GET", &format!("/v1/tenants/{tenant}/users?email={email}"), Some(op), None, &[]));
        let someone = users["items"][0]["id"].as_str().unwrap().to_string();
        let (_, tok) = p.write("POST", &format!("/v1/tenants/{tenant}/assignments"), op, Some(json!({"role_id": gr, "user_id": someone})), 201).await;
        assert!(p.allowed(&format!("platform/permission:{tenant}_{gp}#allowed@platform/user:{someone}"), &tok).await, "{tenant}");
        // ... and only in the tenant it was assigned in.
        let elsewhere = if tenant == t { other.as_str() } else { t };
        assert!(!p.allowed(&format!("platform/permission:{elsewhere}_{gp}#allowed@platform/user:{someone}"), &tok).await);
    }
    // A tenant cannot change a global role.
    let r = p.admin.call("PATCH", &format!("/v1/tenants/{t}/roles/{gr}"), Some(op), Some(json!({"name": "x"})), &[]);
    assert_eq!(r.status, 403, "{}", r.body);

    // Deleting a group revokes what its members held through it (erin holds nothing else).
    let (erin, _) = p.write("POST", &format!("/v1/tenants/{t}/users"), op, Some(json!({"email": "erin@acme.test"})), 201).await;
    let erin = id(&erin);
    let (g2, _) = p.write("POST", &format!("/v1/tenants/{t}/groups"), op, Some(json!({"name": "readers"})), 201).await;
    let g2 = id(&g2);
    p.write("POST", &format!("/v1/tenants/{t}/groups/{g2}/members"), op, Some(json!({"user_id": erin})), 201).await;
    let (_, tg) = p.write("POST", &format!("/v1/tenants/{t}/assignments"), op, Some(json!({"role_id": gr, "group_id": g2})), 201).await;
    let erin_reports = format!("platform/permission:{t}_{gp}#allowed@platform/user:{erin}");
    assert!(p.allowed(&erin_reports, &tg).await);
    let (_, tg2) = p.write("DELETE", &format!("/v1/tenants/{t}/groups/{g2}"), op, None, 204).await;
    assert!(!p.allowed(&erin_reports, &tg2).await);
    let reports = format!("platform/permission:{t}_{gp}#allowed@platform/user:{u}");

    // A tenant made from a role template starts with its roles and their grants.
    p.write("POST", "/v1/role-templates", op, Some(json!({"name": "starter", "document": {"roles": [
        {"name": "viewer", "permissions": ["reports:read"]}, {"name": "lead", "parent": "viewer"}]}})), 201).await;
    let (t3, _) = p.write("POST", "/v1/tenants", op, Some(json!({"slug": "hooli", "name": "Hooli", "template": "starter", "owner_email": "gavin@hooli.test"})), 201).await;
    let t3 = id(&t3);
    let lead = id(&json_of(&p.admin.call("GET", &format!("/v1/tenants/{t3}/roles?name=lead"), Some(op), None, &[]))["items"][0]);
    let gavin = id(&json_of(&p.admin.call("GET", &format!("/v1/tenants/{t3}/users"), Some(op), None, &[]))["items"][0]);
    let (_, tt) = p.write("POST", &format!("/v1/tenants/{t3}/assignments"), op, Some(json!({"role_id": lead, "user_id": gavin})), 201).await;
    assert!(p.allowed(&format!("platform/permission:{t3}_{gp}#allowed@platform/user:{gavin}"), &tt).await);

    // Deleting a person removes every grant naming them, the application's too.
    p.write("POST", &format!("/v1/tenants/{t}/assignments"), op, Some(json!({"role_id": gr, "user_id": u})), 201).await;
    let mut w = p.pdp.clients().await;
    w.relationships
        .write_relationships(arbiter_proto::arbiter::v1::WriteRelationshipsRequest {
            updates: vec![touch(&format!("platform/group:{g}#member@platform/user:{u}"))],
            preconditions: vec![],
        })
        .await
        .unwrap();
    let (_, td) = p.write("DELETE", &format!("/v1/users/{u}"), op, None, 204).await;
    for rel in [reports.clone(), format!("platform/tenant:{t}#member@platform/user:{u}"), format!("platform/group:{g}#member@platform/user:{u}")] {
        assert!(!p.allowed(&rel, &td).await, "{rel}");
    }
    assert_eq!(p.admin.call("GET", &format!("/v1/tenants/{t}/users/{u}"), Some(op), None, &[]).status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_and_policy_writes_replace_only_the_applications_part() {
    use arbiter_proto::arbiter::v1 as pb;
    let p = platform("admin_parts").await;
    let mut c = p.pdp.clients().await;
    let app = "definition doc {\n    relation tenant: platform/tenant\n    relation viewer: platform/user | platform/group#member\n    permission view = viewer + tenant->member\n}\n";
    let token = c.schema.write_schema(pb::WriteSchemaRequest { schema: app.into() }).await.unwrap().into_inner().revision;
    // Reads return both parts; the application's text is kept byte for byte.
    let read = c.schema.read_schema(pb::ReadSchemaRequest {}).await.unwrap().into_inner().schema;
    assert!(read.contains("definition platform/tenant") && read.ends_with(app), "{read}");
    // Writing back what was read is accepted and changes nothing.
    c.schema.write_schema(pb::WriteSchemaRequest { schema: read.clone() }).await.unwrap();
    assert_eq!(c.schema.read_schema(pb::ReadSchemaRequest {}).await.unwrap().into_inner().schema, read);
    // The application's types reach the platform's: a tenant member views the tenant's docs.
    let t = &p.tenant;
    let owner = json_of(&p.admin.call("GET", &format!("/v1/tenants/{t}/users"), Some(&p.operator), None, &[]))["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut w = c.relationships.clone();
    let wrote = w
        .write_relationships(pb::WriteRelationshipsRequest { updates: vec![touch(&format!("doc:1#tenant@platform/tenant:{t}"))], preconditions: vec![] })
        .await
        .unwrap()
        .into_inner()
        .revision;
    assert!(p.allowed(&format!("doc:1#view@platform/user:{owner}"), &wrote).await, "{token}");
    // A platform definition in an application write is refused by name; nothing changes.
    let err = c
        .schema
        .write_schema(pb::WriteSchemaRequest { schema: format!("{app}\ndefinition platform/extra {{}}\n") })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("`platform/extra`"), "{}", err.message());
    assert_eq!(c.schema.read_schema(pb::ReadSchemaRequest {}).await.unwrap().into_inner().schema, read);
    // Likewise a policy with a platform id.
    let err = c
        .schema
        .write_policies(pb::WritePoliciesRequest {
            policies: vec![pb::Policy { id: "platform.mine".into(), text: "permit (principal, action, resource);".into() }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("`platform.mine`"), "{}", err.message());
}

/// The application schema the ACL tests write: `doc` objects belong to a tenant.
const APP_SCHEMA: &str = "definition doc {\n    relation tenant: platform/tenant\n    relation viewer: platform/user | platform/group#member | platform/user with expiration\n    relation owner: platform/user\n    relation related: doc\n    permission view = viewer + owner\n}\n\ndefinition note {\n    relation viewer: platform/user\n}\n";

impl Platform {
    async fn write_app_schema(&self) {
        use arbiter_proto::arbiter::v1 as pb;
        let mut c = self.pdp.clients().await;
        c.schema.write_schema(pb::WriteSchemaRequest { schema: APP_SCHEMA.into() }).await.unwrap();
    }

    /// Records of changes (refused calls are kept too, in the `security` stream).
    async fn audit_count(&self) -> i64 {
        let pool = self.db.pool().await;
        sqlx::query_scalar("SELECT count(*) FROM arbiter_admin.audit_records WHERE stream = 'changes'").fetch_one(&pool).await.unwrap()
    }
}

/// ACL entries: each relation fed as a relationship and decided by the PDP; a change of
/// relations, an end in the past of the relationship's time, and a delete revoke at
/// once; entries the live schema does not allow are 422s naming the relation, and
/// change nothing; the change log keeps every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_entries_grant_through_the_pdp_and_are_checked_against_the_schema() {
    let p = platform("admin_acl").await;
    let (op, t) = (p.operator.as_str(), p.tenant.as_str());
    p.write_app_schema().await;
    let (u, _) = p.write("POST", &format!("/v1/tenants/{t}/users"), op, Some(json!({"email": "ann@acme.test"})), 201).await;
    let u = u["id"].as_str().unwrap().to_string();
    let (g, _) = p.write("POST", &format!("/v1/tenants/{t}/groups"), op, Some(json!({"name": "readers"})), 201).await;
    let g = g["id"].as_str().unwrap().to_string();
    let (v, _) = p.write("POST", &format!("/v1/tenants/{t}/users"), op, Some(json!({"email": "vic@acme.test"})), 201).await;
    let v = v["id"].as_str().unwrap().to_string();
    p.write("POST", &format!("/v1/tenants/{t}/groups/{g}/members"), op, Some(json!({"user_id": v})), 201).await;

    let entries = format!("/v1/tenants/{t}/acl-entries");
    // A user entry with two relations: both reach the PDP; the object is the tenant's.
    let (e, t1) = p.write("POST", &entries, op, Some(json!({"resource_type": "doc", "resource_id": "plan", "subject_type": "user", "subject_id": u, "relations": ["viewer", "owner"]})), 201).await;
    let e = e["id"].as_str().unwrap().to_string();
    assert!(p.allowed(&format!("doc:plan#view@platform/user:{u}"), &t1).await);
    assert!(p.allowed(&format!("doc:plan#owner@platform/user:{u}"), &t1).await);
    assert!(p.allowed(&format!("doc:plan#tenant@platform/tenant:{t}"), &t1).await);
    // A group entry: its members view.
    let (ge, t2) = p.write("POST", &entries, op, Some(json!({"resource_type": "doc", "resource_id": "plan", "subject_type": "group", "subject_id": g, "relations": ["viewer"]})), 201).await;
    let ge = ge["id"].as_str().unwrap().to_string();
    assert!(p.allowed(&format!("doc:plan#view@platform/user:{v}"), &t2).await);
    // Narrowed to `viewer`: `owner` is revoked at once, `view` stays.
    let (after, t3) = p.write("PATCH", &format!("{entries}/{e}"), op, Some(json!({"relations": ["viewer"]})), 200).await;
    assert_eq!(after["relations"], json!(["viewer"]));
    assert!(!p.allowed(&format!("doc:plan#owner@platform/user:{u}"), &t3).await);
    assert!(p.allowed(&format!("doc:plan#view@platform/user:{u}"), &t3).await);
    // An end two seconds out: granted now, denied after, with no write at that moment.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let (_, t4) = p.write("PATCH", &format!("{entries}/{e}"), op, Some(json!({"expires_at": soon})), 200).await;
    assert!(p.allowed(&format!("doc:plan#view@platform/user:{u}"), &t4).await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!p.allowed(&format!("doc:plan#view@platform/user:{u}"), &t4).await);
    // Deleting the group's entry revokes its members.
    let (_, t5) = p.write("DELETE", &format!("{entries}/{ge}"), op, None, 204).await;
    assert!(!p.allowed(&format!("doc:plan#view@platform/user:{v}"), &t5).await);
    // The log keeps every change, oldest first, with its revision.
    let log = json_of(&p.admin.call("GET", &format!("{entries}/{e}/log"), Some(op), None, &[]));
    let kinds: Vec<&str> = log["items"].as_array().unwrap().iter().map(|l| l["change_type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["create", "update", "update"]);
    let glog = json_of(&p.admin.call("GET", &format!("{entries}/{ge}/log"), Some(op), None, &[]));
    assert_eq!(glog["items"][1]["change_type"], "delete");
    assert_eq!(glog["items"][1]["revision"].as_i64().map(|r| format!("r{r}")), Some(t5.clone()));
    // Lists filter by object and by subject.
    let by_subject = json_of(&p.admin.call("GET", &format!("{entries}?subject_type=user&subject_id={u}"), Some(op), None, &[]));
    assert_eq!(by_subject["items"].as_array().unwrap().len(), 1);

    // What the schema does not allow: 422 naming the field, no audit, no revision.
    let audit_before = p.audit_count().await;
    let head_before = p.db_head().await;
    let refused = [
        (json!({"resource_type": "doc", "resource_id": "x", "subject_type": "group", "subject_id": g, "relations": ["viewer", "owner"]}), "/relations/1", "owner"),
        (json!({"resource_type": "doc", "resource_id": "x", "subject_type": "user", "subject_id": u, "relations": ["view"]}), "/relations/0", "permission"),
        (json!({"resource_type": "doc", "resource_id": "x", "subject_type": "user", "subject_id": u, "relations": ["owner", "owner"]}), "/relations/1", "twice"),
        (json!({"resource_type": "doc", "resource_id": "x", "subject_type": "user", "subject_id": u, "relations": ["nosuch"]}), "/relations/0", "nosuch"),
        (json!({"resource_type": "doc", "resource_id": "x", "subject_type": "user", "subject_id": u, "relations": ["owner"], "expires_at": "2999-01-01T00:00:00Z"}), "/relations/0", "expiration"),
        (json!({"resource_type": "note", "resource_id": "x", "subject_type": "user", "subject_id": u, "relations": ["viewer"]}), "/resource_type", "platform/tenant"),
        (json!({"resource_type": "nosuch", "resource_id": "x", "subject_type": "user", "subject_id": u, "relations": ["viewer"]}), "/resource_type", "nosuch"),
        (json!({"resource_type": "platform/group", "resource_id": "x", "subject_type": "user", "subject_id": u, "relations": ["member"]}), "/resource_type", "platform"),
        (json!({"resource_type": "doc", "resource_id": "bad id!", "subject_type": "user", "subject_id": u, "relations": ["viewer"]}), "/resource_id", "bad id"),
        (json!({"resource_type": "doc", "resource_id": "x", "subject_type": "user", "subject_id": g, "relations": ["viewer"]}), "/subject_id", "no user"),
        (json!({"resource_type": "doc", "resource_id": "x", "subject_type": "user", "subject_id": u, "relations": ["viewer"], "expires_at": "2001-01-01T00:00:00Z"}), "/expires_at", "past"),
    ];
    for (body, field, word) in refused {
        let r = p.admin.call("POST", &entries, Some(op), Some(body.clone()), &[]);
        let problem = json_of(&r);
        assert_eq!((r.status, problem["field"].as_str()), (422, Some(field)), "{body}: {}", r.body);
        assert!(problem["detail"].as_str().unwrap().contains(word), "{body}: {}", r.body);
    }
    let r = p.admin.call("PATCH", &format!("{entries}/{e}"), Some(op), Some(json!({"relations": ["view"]})), &[]);
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some("/relations/0")), "{}", r.body);
    // The same object and subject twice: one entry per pair.
    let r = p.admin.call("POST", &entries, Some(op), Some(json!({"resource_type": "doc", "resource_id": "plan", "subject_type": "user", "subject_id": u, "relations": ["owner"]})), &[]);
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (409, Some("/subject_id")), "{}", r.body);
    assert_eq!(p.audit_count().await, audit_before, "a refused call left an audit record");
    assert_eq!(p.db_head().await, head_before, "a refused call wrote a revision");

    // An object another tenant holds is refused.
    let (tb, _) = p.write("POST", "/v1/tenants", op, Some(json!({"slug": "globex", "name": "Globex", "owner_email": "boss@globex.test"})), 201).await;
    let tb = tb["id"].as_str().unwrap().to_string();
    let (ub, _) = p.write("POST", &format!("/v1/tenants/{tb}/users"), op, Some(json!({"email": "b@globex.test"})), 201).await;
    let ub = ub["id"].as_str().unwrap().to_string();
    let r = p.admin.call("POST", &format!("/v1/tenants/{tb}/acl-entries"), Some(op), Some(json!({"resource_type": "doc", "resource_id": "plan", "subject_type": "user", "subject_id": ub, "relations": ["viewer"]})), &[]);
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (409, Some("/resource_id")), "{}", r.body);
}

/// Graph nodes and edges: a node claims an object for the tenant, an edge is one
/// relationship the PDP decides on, and deleting the edge or either node revokes it at
/// once; an edge the schema does not allow is a 422 naming the relation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_nodes_and_edges_are_relationships() {
    let p = platform("admin_graph").await;
    let (op, t) = (p.operator.as_str(), p.tenant.as_str());
    let mut c = p.pdp.clients().await;
    let schema = "definition folder {\n    relation tenant: platform/tenant\n    relation parent: folder\n    relation viewer: platform/user\n    permission view = viewer + parent->view\n}\n\ndefinition file {\n    relation tenant: platform/tenant\n    relation parent: folder\n    permission view = parent->view\n}\n";
    c.schema.write_schema(arbiter_proto::arbiter::v1::WriteSchemaRequest { schema: schema.into() }).await.unwrap();
    let nodes = format!("/v1/tenants/{t}/graph/nodes");
    let edges = format!("/v1/tenants/{t}/graph/edges");
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let (root, _) = p.write("POST", &nodes, op, Some(json!({"type": "folder", "object_id": "root", "properties": {"name": "Root"}})), 201).await;
    let (sub, _) = p.write("POST", &nodes, op, Some(json!({"type": "folder", "object_id": "sub"})), 201).await;
    let (file, t1) = p.write("POST", &nodes, op, Some(json!({"type": "file"})), 201).await;
    let file_obj = format!("file:{}", file["object_id"].as_str().unwrap());
    assert_eq!(file["object_id"], file["id"], "a node without an object id is named by its id");
    assert!(p.allowed(&format!("folder:root#tenant@platform/tenant:{t}"), &t1).await);
    // Edges: file -> sub -> root; a viewer of root views the file through both.
    let (e1, _) = p.write("POST", &edges, op, Some(json!({"from_node_id": id(&file), "to_node_id": id(&sub), "relation_type": "parent"})), 201).await;
    let (e2, _) = p.write("POST", &edges, op, Some(json!({"from_node_id": id(&sub), "to_node_id": id(&root), "relation_type": "parent"})), 201).await;
    let mut w = c.relationships.clone();
    let viewer = w
        .write_relationships(arbiter_proto::arbiter::v1::WriteRelationshipsRequest { updates: vec![touch("folder:root#viewer@platform/user:ann")], preconditions: vec![] })
        .await
        .unwrap()
        .into_inner()
        .revision;
    assert!(p.allowed(&format!("{file_obj}#view@platform/user:ann"), &viewer).await);
    // Properties change nothing in the graph.
    let (n, _) = p.write("PATCH", &format!("{nodes}/{}", id(&root)), op, Some(json!({"properties": {"name": "Top"}})), 200).await;
    assert_eq!(n["properties"]["name"], "Top");
    p.write("PATCH", &format!("{edges}/{}", id(&e2)), op, Some(json!({"properties": {"since": 2026}})), 200).await;
    // Deleting the edge sub -> root revokes the file's view at once.
    let (_, t2) = p.write("DELETE", &format!("{edges}/{}", id(&e2)), op, None, 204).await;
    assert!(!p.allowed(&format!("{file_obj}#view@platform/user:ann"), &t2).await);
    // Deleting a node deletes its edges and their relationships.
    let (_, t3) = p.write("DELETE", &format!("{nodes}/{}", id(&sub)), op, None, 204).await;
    assert!(!p.allowed(&format!("{file_obj}#parent@folder:sub"), &t3).await);
    assert_eq!(p.admin.call("GET", &format!("{edges}/{}", id(&e1)), Some(op), None, &[]).status, 404);
    // What the schema does not allow: 422 naming the field; nothing changes.
    let audit_before = p.audit_count().await;
    let head_before = p.db_head().await;
    let refused = [
        (json!({"from_node_id": id(&file), "to_node_id": id(&root), "relation_type": "viewer"}), "/relation_type"),
        (json!({"from_node_id": id(&file), "to_node_id": id(&file), "relation_type": "parent"}), "/relation_type"),
        (json!({"from_node_id": id(&file), "to_node_id": id(&root), "relation_type": "view"}), "/relation_type"),
        (json!({"from_node_id": id(&file), "to_node_id": id(&root), "relation_type": "tenant"}), "/relation_type"),
        (json!({"from_node_id": id(&file), "to_node_id": id(&sub), "relation_type": "parent"}), "/to_node_id"),
    ];
    for (body, field) in refused {
        let r = p.admin.call("POST", &edges, Some(op), Some(body.clone()), &[]);
        assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some(field)), "{body}: {}", r.body);
    }
    for (body, field) in [
        (json!({"type": "nosuch"}), "/type"),
        (json!({"type": "folder", "object_id": "not an id"}), "/object_id"),
        (json!({"type": "folder", "properties": [1]}), "/properties"),
    ] {
        let r = p.admin.call("POST", &nodes, Some(op), Some(body.clone()), &[]);
        assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some(field)), "{body}: {}", r.body);
    }
    let r = p.admin.call("POST", &nodes, Some(op), Some(json!({"type": "folder", "object_id": "root"})), &[]);
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (409, Some("/object_id")), "{}", r.body);
    assert_eq!(p.audit_count().await, audit_before, "a refused call left an audit record");
    assert_eq!(p.db_head().await, head_before, "a refused call wrote a revision");
    // Lists filter.
    let listed = json_of(&p.admin.call("GET", &format!("{nodes}?type=folder"), Some(op), None, &[]));
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}

/// Cedar policies, security labels and attributes through a running PDP replica: a
/// policy decides from its activation's revision and stops at its retirement's; a label
/// on an object and a clearance on a user decide through a policy, and taking either
/// away (or deleting the label) changes the decision at once; what does not compile or
/// fit is a 422 naming the field, with no audit record and no revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_labels_and_attributes_decide_through_the_pdp() {
    let p = platform("admin_abac").await;
    let (op, t) = (p.operator.as_str(), p.tenant.as_str());
    p.write_app_schema().await;
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let (u, _) = p.write("POST", &format!("/v1/tenants/{t}/users"), op, Some(json!({"email": "lia@acme.test"})), 201).await;
    let u = id(&u);
    let (_, t0) = p.write("POST", &format!("/v1/tenants/{t}/acl-entries"), op,
        Some(json!({"resource_type": "doc", "resource_id": "plan", "subject_type": "user", "subject_id": u, "relations": ["viewer"]})), 201).await;
    let view = format!("doc:plan#view@platform/user:{u}");
    assert!(p.allowed(&view, &t0).await);

    // A policy: a draft changes nothing; activated, it forbids; retired, it stops.
    let (pol, _) = p.write("POST", "/v1/policies", op, Some(json!({"name": "no-plan", "tags": ["test"]})), 201).await;
    let pol = id(&pol);
    let versions = format!("/v1/policies/{pol}/versions");
    let (v1, t1) = p.write("POST", &versions, op, Some(json!({"definition": "forbid (principal, action == Action::\"view\", resource == doc::\"plan\");"})), 201).await;
    assert_eq!((v1["number"].as_i64(), v1["status"].as_str()), (Some(1), Some("draft")));
    assert!(p.allowed(&view, &t1).await);
    let (act, t2) = p.write("POST", &format!("{versions}/1/activate"), op, None, 200).await;
    assert_eq!(act["status"], "active");
    assert!(!p.allowed(&view, &t2).await, "an active forbid decides at its revision");
    let mut c = p.pdp.clients().await;
    let read = c.schema.read_policies(arbiter_proto::arbiter::v1::ReadPoliciesRequest {}).await.unwrap().into_inner();
    assert!(read.policies.iter().any(|q| q.id == "admin.no-plan"), "{:?}", read.policies);
    // A version that parses but does not validate: 422 with Cedar's words; nothing changes.
    p.write("POST", &versions, op, Some(json!({"definition": "forbid (principal, action, resource) when { resource.nosuch == 1 };"})), 201).await;
    let audit_before = p.audit_count().await;
    let head_before = p.db_head().await;
    let r = p.admin.call("POST", &format!("{versions}/2/activate"), Some(op), None, &[]);
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some("/definition")), "{}", r.body);
    assert!(json_of(&r)["detail"].as_str().unwrap().contains("nosuch"), "{}", r.body);
    let r = p.admin.call("POST", &versions, Some(op), Some(json!({"definition": "forbid (principal, action, resource"})), &[]);
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some("/definition")), "{}", r.body);
    let r = p.admin.call("DELETE", &format!("/v1/policies/{pol}"), Some(op), None, &[]);
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(p.audit_count().await, audit_before, "a refused call left an audit record");
    assert_eq!(p.db_head().await, head_before, "a refused call wrote a revision");
    assert_eq!(json_of(&p.admin.call("GET", &format!("/v1/policies/{pol}"), Some(op), None, &[]))["active_version"], 1);
    let (_, t3) = p.write("POST", &format!("{versions}/1/retire"), op, None, 200).await;
    assert!(p.allowed(&view, &t3).await, "a retired policy stops at its revision");
    let listed = json_of(&p.admin.call("GET", &versions, Some(op), None, &[]));
    let statuses: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|v| v["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["retired", "draft"], "every version is kept");

    // Labels and a clearance, decided by one policy.
    let (secret, _) = p.write("POST", "/v1/security-labels", op, Some(json!({"name": "secret", "level": 3})), 201).await;
    let (top, _) = p.write("POST", "/v1/security-labels", op, Some(json!({"name": "top-secret", "level": 5})), 201).await;
    p.write("PUT", &format!("/v1/security-labels/{}/parents/{}", id(&secret), id(&top)), op, None, 201).await;
    let (clearance, _) = p.write("POST", "/v1/attributes", op, Some(json!({"object_type": "platform/user", "name": "clearance", "data_type": "long"})), 201).await;
    let (five, _) = p.write("POST", &format!("/v1/attributes/{}/values", id(&clearance)), op, Some(json!({"value": 5})), 201).await;
    let (gate, _) = p.write("POST", "/v1/policies", op, Some(json!({"name": "clearance"})), 201).await;
    let gate_versions = format!("/v1/policies/{}/versions", id(&gate));
    p.write("POST", &gate_versions, op, Some(json!({"definition":
        "forbid (principal is platform::user, action == Action::\"view\", resource is doc) when { resource.label_level > (if principal has clearance then principal.clearance else 0) };"})), 201).await;
    let (_, t4) = p.write("POST", &format!("{gate_versions}/1/activate"), op, None, 200).await;
    assert!(p.allowed(&view, &t4).await, "an unlabelled doc is level 0");
    let labels = format!("/v1/tenants/{t}/object-labels");
    let (ol, t5) = p.write("POST", &labels, op, Some(json!({"object_type": "doc", "object_id": "plan", "label_id": id(&secret)})), 201).await;
    assert!(!p.allowed(&view, &t5).await, "a secret doc is above no clearance");
    let subjects = format!("/v1/tenants/{t}/subject-attributes");
    let (sa, t6) = p.write("POST", &subjects, op, Some(json!({"subject_type": "user", "subject_id": u, "value_id": id(&five)})), 201).await;
    assert!(p.allowed(&view, &t6).await, "clearance 5 reads level 3");
    let (_, t7) = p.write("DELETE", &format!("{subjects}/{}", id(&sa)), op, None, 204).await;
    assert!(!p.allowed(&view, &t7).await, "a clearance taken away denies at once");
    let (_, t8) = p.write("DELETE", &format!("{labels}/{}", id(&ol)), op, None, 204).await;
    assert!(p.allowed(&view, &t8).await, "a label taken off decides at once");
    // Deleting a label takes it off every object in the same revision (and the PDP
    // accepts the model without it).
    let (_, t9) = p.write("POST", &labels, op, Some(json!({"object_type": "doc", "object_id": "plan", "label_id": id(&top)})), 201).await;
    assert!(!p.allowed(&view, &t9).await);
    let (_, t10) = p.write("DELETE", &format!("/v1/security-labels/{}", id(&top)), op, None, 204).await;
    assert!(p.allowed(&view, &t10).await, "a deleted label leaves its objects at once");
    let model = c.schema.read_attribute_schema(arbiter_proto::arbiter::v1::ReadAttributeSchemaRequest {}).await.unwrap().into_inner();
    let names: Vec<&str> = model.labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["secret"], "the replica took the model without the deleted label");
    let listed = json_of(&p.admin.call("GET", &format!("{labels}?object_type=doc&object_id=plan"), Some(op), None, &[]));
    assert_eq!(listed["items"].as_array().unwrap().len(), 0);

    // Resource attributes reach the PDP's attribute store.
    let (region, _) = p.write("POST", "/v1/attributes", op, Some(json!({"object_type": "doc", "name": "regions", "data_type": "set<string>"})), 201).await;
    let (eu, _) = p.write("POST", &format!("/v1/attributes/{}/values", id(&region)), op, Some(json!({"value": "eu"})), 201).await;
    let (us, _) = p.write("POST", &format!("/v1/attributes/{}/values", id(&region)), op, Some(json!({"value": "us"})), 201).await;
    let resources = format!("/v1/tenants/{t}/resource-attributes");
    p.write("POST", &resources, op, Some(json!({"resource_type": "doc", "resource_id": "plan", "value_id": id(&eu)})), 201).await;
    p.write("POST", &resources, op, Some(json!({"resource_type": "doc", "resource_id": "plan", "value_id": id(&us)})), 201).await;
    let stored: String = sqlx::query_scalar("SELECT attributes FROM arbiter_attributes WHERE object_type = 'doc' AND object_id = 'plan'")
        .fetch_one(&p.db.pool().await)
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    let mut regions: Vec<&str> = stored["values"]["regions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    regions.sort();
    assert_eq!(regions, ["eu", "us"]);

    // What does not fit: 422 (or 409) naming the field; nothing changes.
    let audit_before = p.audit_count().await;
    let head_before = p.db_head().await;
    let refused: Vec<(&str, String, Value, u16, &str)> = vec![
        ("POST", format!("/v1/attributes/{}/values", id(&clearance)), json!({"value": "high"}), 422, "/value"),
        ("POST", "/v1/attributes".into(), json!({"object_type": "nosuch", "name": "x", "data_type": "long"}), 422, "/object_type"),
        ("POST", "/v1/attributes".into(), json!({"object_type": "doc", "name": "x", "data_type": "set<set<long>>"}), 422, "/data_type"),
        ("POST", "/v1/attributes".into(), json!({"object_type": "platform/user", "name": "clearance", "data_type": "long"}), 409, "/name"),
        ("PUT", format!("/v1/security-labels/{}/parents/{}", id(&secret), id(&secret)), Value::Null, 422, "/parent_label_id"),
        ("POST", "/v1/security-labels".into(), json!({"name": "secret", "level": 1}), 409, "/name"),
        ("POST", labels.clone(), json!({"object_type": "note", "object_id": "n", "label_id": id(&secret)}), 422, "/object_type"),
        ("POST", resources.clone(), json!({"resource_type": "doc", "resource_id": "plan", "value_id": id(&five)}), 422, "/value_id"),
        ("POST", subjects.clone(), json!({"subject_type": "group", "subject_id": u, "value_id": id(&five)}), 422, "/subject_id"),
        ("DELETE", format!("/v1/attributes/{}", id(&region)), Value::Null, 409, "/attr_id"),
    ];
    for (method, path, body, status, field) in refused {
        let body = (!body.is_null()).then_some(body);
        let r = p.admin.call(method, &path, Some(op), body.clone(), &[]);
        assert_eq!((r.status, json_of(&r)["field"].as_str()), (status, Some(field)), "{method} {path} {body:?}: {}", r.body);
    }
    assert_eq!(p.audit_count().await, audit_before, "a refused call left an audit record");
    assert_eq!(p.db_head().await, head_before, "a refused call wrote a revision");
}

impl Platform {
    /// Waits (up to 20 s) until `done` holds; the background jobs run every second.
    async fn eventually<F, Fut>(&self, what: &str, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..200 {
            if done().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what} did not happen within 20 s");
    }

    async fn head_token(&self) -> String {
        format!("r{}", self.db_head().await)
    }
}

/// Delegations: the delegate holds the grantor's role while the window lasts, from a
/// start in the future (fed by the background job) to its end (the relationship's
/// expiration, with no write); revoking, or the grantor losing the role, ends it at once.
/// Grantors who do not hold the role, or hold it as a delegate, are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegations_hold_the_role_for_their_window() {
    let p = platform("admin_delegate").await;
    let (op, t) = (p.operator.as_str(), p.tenant.as_str());
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let mut users = Vec::new();
    for email in ["ann@acme.test", "bob@acme.test", "cat@acme.test"] {
        users.push(id(&p.write("POST", &format!("/v1/tenants/{t}/users"), op, Some(json!({"email": email})), 201).await.0));
    }
    let (ann, bob, cat) = (users[0].clone(), users[1].clone(), users[2].clone());
    let r = id(&p.write("POST", &format!("/v1/tenants/{t}/roles"), op, Some(json!({"name": "approver"})), 201).await.0);
    let asg = id(&p.write("POST", &format!("/v1/tenants/{t}/assignments"), op, Some(json!({"role_id": r, "user_id": ann})), 201).await.0);
    let holds = |u: &str| format!("platform/role:{t}_{r}#holder@platform/user:{u}");
    let delegations = format!("/v1/tenants/{t}/delegations");

    // Now, until revoked.
    let (d1, t1) = p.write("POST", &delegations, op, Some(json!({"grantor_user_id": ann, "delegate_user_id": bob, "role_id": r, "reason": "cover"})), 201).await;
    assert_eq!(d1["status"], "active");
    assert!(p.allowed(&holds(&bob), &t1).await);
    // Not passed on; not from someone without the role; nothing changes.
    let audit_before = p.audit_count().await;
    let head_before = p.db_head().await;
    for (body, field) in [
        (json!({"grantor_user_id": bob, "delegate_user_id": cat, "role_id": r}), "/grantor_user_id"),
        (json!({"grantor_user_id": cat, "delegate_user_id": bob, "role_id": r}), "/role_id"),
        (json!({"grantor_user_id": ann, "delegate_user_id": ann, "role_id": r}), "/delegate_user_id"),
        (json!({"grantor_user_id": ann, "delegate_user_id": bob, "role_id": r, "valid_until": "2001-01-01T00:00:00Z"}), "/valid_until"),
    ] {
        let r = p.admin.call("POST", &delegations, Some(op), Some(body.clone()), &[]);
        assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some(field)), "{body}: {}", r.body);
    }
    assert_eq!(p.audit_count().await, audit_before, "a refused call left an audit record");
    assert_eq!(p.db_head().await, head_before, "a refused call wrote a revision");
    let (_, t2) = p.write("POST", &format!("{delegations}/{}/revoke", id(&d1)), op, None, 200).await;
    assert!(!p.allowed(&holds(&bob), &t2).await, "a revoked delegation ends at once");

    // A window that starts in two seconds and ends two seconds later.
    let from = chrono::Utc::now() + chrono::Duration::seconds(2);
    let until = from + chrono::Duration::seconds(2);
    let (d2, t3) = p.write("POST", &delegations, op,
        Some(json!({"grantor_user_id": ann, "delegate_user_id": bob, "role_id": r, "valid_from": from.to_rfc3339(), "valid_until": until.to_rfc3339()})), 201).await;
    assert_eq!((d2["status"].as_str(), d2["fed"].as_bool()), (Some("scheduled"), Some(false)));
    assert!(!p.allowed(&holds(&bob), &t3).await, "not before its start");
    p.eventually("the delegation starting", || async { p.allowed(&holds(&bob), &p.head_token().await).await }).await;
    assert!(chrono::Utc::now() >= from, "granted before its start");
    let started = p.head_token().await;
    let got = json_of(&p.admin.call("GET", &format!("{delegations}/{}", id(&d2)), Some(op), None, &[]));
    assert_eq!((got["status"].as_str(), got["fed"].as_bool()), (Some("active"), Some(true)));
    let pool = p.db.pool().await;
    let by_job: i64 = sqlx::query_scalar("SELECT count(*) FROM arbiter_admin.audit_records WHERE action = 'delegation.start' AND actor = 'job:delegations' AND target_id = $1")
        .bind(id(&d2))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(by_job, 1);
    // Its end needs no write: the same revision denies once the window is over.
    tokio::time::sleep((until - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(300)).await;
    assert!(!p.allowed(&holds(&bob), &started).await, "the window ended");

    // The grantor loses the role: the job revokes what they delegated.
    let (d3, t4) = p.write("POST", &delegations, op, Some(json!({"grantor_user_id": ann, "delegate_user_id": cat, "role_id": r})), 201).await;
    assert!(p.allowed(&holds(&cat), &t4).await);
    p.write("DELETE", &format!("/v1/tenants/{t}/assignments/{asg}"), op, None, 204).await;
    p.eventually("the job revoking a delegation whose grantor lost the role", || async {
        json_of(&p.admin.call("GET", &format!("{delegations}/{}", id(&d3)), Some(op), None, &[]))["status"] == "revoked"
    })
    .await;
    assert!(!p.allowed(&holds(&cat), &p.head_token().await).await);
}

/// Impersonation: a call in a session is decided as the user, within the session's
/// scope, and audited with the caller as the actor and the user as the effective actor;
/// who may impersonate whom is decided by the PDP; an ended session is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonated_calls_act_as_the_user_and_are_audited() {
    let p = platform("admin_imp").await;
    let (op, t) = (p.operator.as_str(), p.tenant.as_str());
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let mia = id(&p.write("POST", &format!("/v1/tenants/{t}/users"), op, Some(json!({"email": "mia@acme.test"})), 201).await.0);
    let roles = json_of(&p.admin.call("GET", "/v1/roles?limit=100", Some(op), None, &[]));
    let user_manager = roles["items"].as_array().unwrap().iter().find(|r| r["builtin"] == "user_manager").map(id).unwrap();
    let asg = id(&p.write("POST", &format!("/v1/tenants/{t}/assignments"), op, Some(json!({"role_id": user_manager, "user_id": mia})), 201).await.0);
    let sessions = format!("/v1/tenants/{t}/impersonation-sessions");
    let (s, _) = p.write("POST", &sessions, op, Some(json!({"target_user_id": mia, "reason": "ticket 4711", "scope": ["view", "manage_users"]})), 201).await;
    let sid = id(&s);
    let as_mia = [("arbiter-impersonation", sid.as_str())];

    // An action Mia may do, in scope: done, and audited as the operator acting as Mia.
    let r = p.admin.call("POST", &format!("/v1/tenants/{t}/groups"), Some(op), Some(json!({"name": "support"})), &as_mia);
    assert_eq!(r.status, 201, "{}", r.body);
    let pool = p.db.pool().await;
    let (actor, effective, session): (String, String, Option<String>) = sqlx::query_as(
        "SELECT actor, effective_actor, impersonation_session_id::text FROM arbiter_admin.audit_records WHERE request_id = $1",
    )
    .bind(r.header("x-request-id").unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    let op_key = op.split('.').next().unwrap();
    assert_eq!((actor.as_str(), effective.as_str()), (format!("api_key:{op_key}").as_str(), format!("user:{mia}").as_str()));
    assert_eq!(session, Some(sid.clone()));
    // Out of scope, or past what Mia may do, or elsewhere: refused.
    let r = p.admin.call("POST", &format!("/v1/tenants/{t}/roles"), Some(op), Some(json!({"name": "x"})), &as_mia);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("scope"), "{}", r.body);
    let r = p.admin.call("POST", "/v1/tenants", Some(op), Some(json!({"slug": "nope", "name": "Nope"})), &as_mia);
    assert_eq!(r.status, 403, "{}", r.body);
    p.write("DELETE", &format!("/v1/tenants/{t}/assignments/{asg}"), op, None, 204).await;
    let r = p.admin.call("POST", &format!("/v1/tenants/{t}/groups"), Some(op), Some(json!({"name": "second"})), &as_mia);
    assert_eq!(r.status, 404, "Mia no longer manages users, so neither does her session: {}", r.body);
    // Another key may not use the session.
    let (k, _) = p.write("POST", &format!("/v1/tenants/{t}/api-keys"), op, Some(json!({"name": "admin bot", "role": "admin"})), 201).await;
    let admin_key = k["api_key"].as_str().unwrap().to_string();
    let r = p.admin.call("GET", &format!("/v1/tenants/{t}/groups"), Some(&admin_key), None, &as_mia);
    assert_eq!(r.status, 403, "{}", r.body);
    // Who may impersonate whom: a tenant admin may not impersonate the tenant's owner; a
    // user manager may not impersonate at all.
    let users = json_of(&p.admin.call("GET", &format!("/v1/tenants/{t}/users?limit=100"), Some(op), None, &[]));
    let owner = users["items"].as_array().unwrap().iter().find(|u| u["email"] == "owner@acme.test").map(id).unwrap();
    let r = p.admin.call("POST", &sessions, Some(&admin_key), Some(json!({"target_user_id": owner, "reason": "curious"})), &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    let (k, _) = p.write("POST", &format!("/v1/tenants/{t}/api-keys"), op, Some(json!({"name": "um bot", "role": "user_manager"})), 201).await;
    let um_key = k["api_key"].as_str().unwrap().to_string();
    let r = p.admin.call("POST", &sessions, Some(&um_key), Some(json!({"target_user_id": mia, "reason": "curious"})), &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = p.admin.call("POST", &sessions, Some(op), Some(json!({"target_user_id": mia, "reason": " "})), &[]);
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some("/reason")), "{}", r.body);
    // Ended: refused from then on; the trail lists start, the action and the end.
    p.write("POST", &format!("{sessions}/{sid}/end"), op, None, 200).await;
    let r = p.admin.call("GET", &format!("/v1/tenants/{t}/groups"), Some(op), None, &as_mia);
    assert_eq!(r.status, 403, "{}", r.body);
    let actions = |query: &str| -> Vec<String> {
        let page = json_of(&p.admin.call("GET", &format!("/v1/tenants/{t}/audit-records?{query}"), Some(op), None, &[]));
        page["items"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(actions(&format!("impersonation_session_id={sid}")), ["group.create"]);
    assert_eq!(actions(&format!("target_id={sid}")), ["impersonation.end", "impersonation.start"]);
    assert_eq!(actions(&format!("effective_actor=user:{mia}")), ["group.create"]);
    // The trail pages newest first, by its cursor.
    let first = json_of(&p.admin.call("GET", &format!("/v1/tenants/{t}/audit-records?limit=2"), Some(op), None, &[]));
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let second = json_of(&p.admin.call("GET", &format!("/v1/tenants/{t}/audit-records?limit=2&cursor={cursor}"), Some(op), None, &[]));
    let ids = |page: &Value| -> Vec<i64> { page["items"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect() };
    let (a, b) = (ids(&first), ids(&second));
    assert!(a[0] > a[1] && a[1] > b[0] && b[0] > b[1], "{a:?} {b:?}");
    assert_eq!(p.admin.call("GET", &format!("/v1/tenants/{t}/audit-records?cursor=x"), Some(op), None, &[]).status, 400);
    assert_eq!(p.admin.call("GET", &format!("/v1/tenants/{t}/audit-records"), Some(&um_key), None, &[]).status, 403);
}

/// Invitations, invite codes, join requests and the outbox: an emailed invitation's
/// secret travels only through the outbox (sealed, erased on delivery); accepting makes
/// the person a member the PDP sees at the returned revision; a secret is used at most
/// its uses, and a cancelled or wrong one is refused alike; a join request is approved or
/// rejected by the tenant's managers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_and_join_requests_make_members() {
    let p = platform("admin_invite").await;
    let (op, t) = (p.operator.as_str(), p.tenant.as_str());
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let invitations = format!("/v1/tenants/{t}/invitations");
    let member = |u: &str| format!("platform/tenant:{t}#member@platform/user:{u}");

    // By email: the response has no secret; the outbox has it, sealed at rest.
    let (inv, _) = p.write("POST", &invitations, op, Some(json!({"email": "New.Hire@Acme.test"})), 201).await;
    assert!(inv.get("code").is_none(), "an emailed invitation's secret is not returned: {inv}");
    assert_eq!((inv["email"].as_str(), inv["status"].as_str()), (Some("new.hire@acme.test"), Some("pending")));
    let outbox = json_of(&p.admin.call("GET", "/v1/outbox", Some(op), None, &[]));
    let message = outbox["items"].as_array().unwrap().iter().find(|m| m["payload"]["invitation_id"] == inv["id"]).unwrap().clone();
    assert_eq!(message["recipient"], "new.hire@acme.test");
    let token = message["secret"].as_str().unwrap().to_string();
    let pool = p.db.pool().await;
    let leaked: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM arbiter_admin.outbox WHERE position(convert_to($1, 'UTF8') in coalesce(sealed_secret, ''::bytea)) > 0)
              + (SELECT count(*) FROM arbiter_admin.audit_records WHERE after::text LIKE '%' || $1 || '%' OR before::text LIKE '%' || $1 || '%')",
    )
    .bind(token.split('.').nth(1).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "the secret is kept in the clear somewhere");
    // A wrong secret, and the right one for another address: refused.
    let wrong = format!("{}.{}", inv["id"].as_str().unwrap(), "0".repeat(64));
    let r = p.admin.call("POST", "/v1/invitations/accept", None, Some(json!({"token": wrong})), &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = p.admin.call("POST", "/v1/invitations/accept", None, Some(json!({"token": token, "email": "other@acme.test"})), &[]);
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some("/email")), "{}", r.body);
    // Accepted (no key: the secret is the credential): a member at that revision.
    let r = p.admin.call("POST", "/v1/invitations/accept", None, Some(json!({"token": token})), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let hire = json_of(&r)["user_id"].as_str().unwrap().to_string();
    assert!(p.allowed(&member(&hire), r.header("arbiter-revision").unwrap()).await);
    let r = p.admin.call("POST", "/v1/invitations/accept", None, Some(json!({"token": token})), &[]);
    assert_eq!(r.status, 403, "an invitation is used once: {}", r.body);
    // Delivered: the secret is erased and the message leaves the list.
    p.write("POST", &format!("/v1/outbox/{}/delivered", message["id"].as_str().unwrap()), op, None, 204).await;
    let erased: Option<Vec<u8>> = sqlx::query_scalar("SELECT sealed_secret FROM arbiter_admin.outbox WHERE id = $1::uuid")
        .bind(message["id"].as_str().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(erased.is_none());
    let outbox = json_of(&p.admin.call("GET", "/v1/outbox", Some(op), None, &[]));
    assert!(outbox["items"].as_array().unwrap().iter().all(|m| m["id"] != message["id"]));

    // An invite code for two, with a role: returned once; two people join with the role.
    let roles = json_of(&p.admin.call("GET", "/v1/roles?limit=100", Some(op), None, &[]));
    let auditor = roles["items"].as_array().unwrap().iter().find(|r| r["builtin"] == "auditor").map(id).unwrap();
    let (code, _) = p.write("POST", &invitations, op, Some(json!({"max_uses": 2, "role_id": auditor})), 201).await;
    let secret = code["code"].as_str().unwrap().to_string();
    let listed = json_of(&p.admin.call("GET", &format!("{invitations}/{}", id(&code)), Some(op), None, &[]));
    assert!(listed.get("code").is_none(), "the code is shown once");
    let mut joined = Vec::new();
    for email in ["a@acme.test", "b@acme.test"] {
        let r = p.admin.call("POST", "/v1/invitations/accept", None, Some(json!({"token": secret, "email": email})), &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        let u = json_of(&r)["user_id"].as_str().unwrap().to_string();
        assert!(p.allowed(&format!("platform/tenant:{t}#audit@platform/user:{u}"), r.header("arbiter-revision").unwrap()).await);
        joined.push(u);
    }
    let r = p.admin.call("POST", "/v1/invitations/accept", None, Some(json!({"token": secret, "email": "c@acme.test"})), &[]);
    assert_eq!(r.status, 403, "a code is used at most its uses: {}", r.body);
    // Cancelled: refused.
    let (c2, _) = p.write("POST", &invitations, op, Some(json!({})), 201).await;
    p.write("POST", &format!("{invitations}/{}/cancel", id(&c2)), op, None, 200).await;
    let r = p.admin.call("POST", "/v1/invitations/accept", None, Some(json!({"token": c2["code"], "email": "d@acme.test"})), &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    for (body, field) in [
        (json!({"email": "x@acme.test", "max_uses": 2}), "/max_uses"),
        (json!({"expires_in_seconds": 10}), "/expires_in_seconds"),
        (json!({"role_id": t}), "/role_id"),
    ] {
        let r = p.admin.call("POST", &invitations, Some(op), Some(body.clone()), &[]);
        assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some(field)), "{body}: {}", r.body);
    }

    // Join requests: public to make, one pending per person, approved by the tenant.
    let r = p.admin.call("POST", "/v1/join-requests", None, Some(json!({"tenant": "acme", "email": "walk.in@acme.test", "reason": "new office"})), &[]);
    assert_eq!(r.status, 201, "{}", r.body);
    let jr = id(&json_of(&r));
    let r = p.admin.call("POST", "/v1/join-requests", None, Some(json!({"tenant": "acme", "email": "walk.in@acme.test"})), &[]);
    assert_eq!(r.status, 409, "{}", r.body);
    let r = p.admin.call("POST", "/v1/join-requests", None, Some(json!({"tenant": "nosuch", "email": "x@acme.test"})), &[]);
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some("/tenant")), "{}", r.body);
    let (approved, rev) = p.write("POST", &format!("/v1/tenants/{t}/join-requests/{jr}/approve"), op, Some(json!({"reason": "welcome"})), 200).await;
    assert_eq!(approved["status"], "approved");
    assert!(p.allowed(&member(approved["user_id"].as_str().unwrap()), &rev).await);
    let r = p.admin.call("POST", &format!("/v1/tenants/{t}/join-requests/{jr}/reject"), Some(op), Some(json!({})), &[]);
    assert_eq!(r.status, 409, "{}", r.body);
    let r = p.admin.call("POST", "/v1/join-requests", None, Some(json!({"tenant": "acme", "email": "spam@acme.test"})), &[]);
    let spam = id(&json_of(&r));
    let (rejected, _) = p.write("POST", &format!("/v1/tenants/{t}/join-requests/{spam}/reject"), op, Some(json!({})), 200).await;
    assert_eq!((rejected["status"].as_str(), rejected["user_id"].as_str()), (Some("rejected"), None));
    let pending = json_of(&p.admin.call("GET", &format!("/v1/tenants/{t}/join-requests?status=pending"), Some(op), None, &[]));
    assert_eq!(pending["items"].as_array().unwrap().len(), 0);
}

/// A suspended tenant's objects are closed (the PDP's tenant gate) until it is
/// reactivated; a tenant pending deletion is deleted by the background job once its
/// grace period is over: everything it fed leaves the graph, its rows go, its people
/// stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_is_suspended_and_deleted_after_its_grace_period() {
    let p = platform("admin_delete").await;
    let op = p.operator.as_str();
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    p.write_app_schema().await;
    let (tb, _) = p.write("POST", "/v1/tenants", op, Some(json!({"slug": "doomed", "name": "Doomed", "grace_period_days": 0})), 201).await;
    let tb = id(&tb);
    let u = id(&p.write("POST", &format!("/v1/tenants/{tb}/users"), op, Some(json!({"email": "left@doomed.test"})), 201).await.0);
    let g = id(&p.write("POST", &format!("/v1/tenants/{tb}/groups"), op, Some(json!({"name": "crew"})), 201).await.0);
    p.write("POST", &format!("/v1/tenants/{tb}/groups/{g}/members"), op, Some(json!({"user_id": u})), 201).await;
    let r = id(&p.write("POST", &format!("/v1/tenants/{tb}/roles"), op, Some(json!({"name": "pilot"})), 201).await.0);
    p.write("POST", &format!("/v1/tenants/{tb}/assignments"), op, Some(json!({"role_id": r, "group_id": g})), 201).await;
    let (_, before) = p.write("POST", &format!("/v1/tenants/{tb}/acl-entries"), op,
        Some(json!({"resource_type": "doc", "resource_id": "wreck", "subject_type": "group", "subject_id": g, "relations": ["viewer"]})), 201).await;
    let checks = [
        format!("platform/tenant:{tb}#member@platform/user:{u}"),
        format!("platform/group:{g}#member@platform/user:{u}"),
        format!("platform/role:{tb}_{r}#holder@platform/user:{u}"),
        format!("doc:wreck#view@platform/user:{u}"),
        format!("doc:wreck#tenant@platform/tenant:{tb}"),
    ];
    for c in &checks {
        assert!(p.allowed(c, &before).await, "{c}");
    }
    // Suspended: the tenant's objects are closed to everyone; reactivated, open again.
    let view = format!("doc:wreck#view@platform/user:{u}");
    let (_, suspended) = p.write("POST", &format!("/v1/tenants/{tb}/status"), op, Some(json!({"status": "suspended", "reason": "unpaid"})), 200).await;
    assert!(!p.allowed(&view, &suspended).await, "a suspended tenant's object denies");
    let (_, active) = p.write("POST", &format!("/v1/tenants/{tb}/status"), op, Some(json!({"status": "active"})), 200).await;
    assert!(p.allowed(&view, &active).await, "reactivated");
    p.write("POST", &format!("/v1/tenants/{tb}/status"), op, Some(json!({"status": "pending_deletion", "reason": "closed"})), 200).await;
    p.eventually("the tenant's deletion", || async { p.admin.call("GET", &format!("/v1/tenants/{tb}"), Some(op), None, &[]).status == 404 }).await;
    let now = p.head_token().await;
    for c in &checks {
        assert!(!p.allowed(c, &now).await, "{c} survived the tenant");
    }
    let pool = p.db.pool().await;
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM relationships WHERE resource_id = $1 OR subject_id = $1 OR resource_id LIKE $1 || '\\_%' OR subject_id LIKE $1 || '\\_%'",
    )
    .bind(&tb)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0);
    let (person, audited): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM arbiter_admin.users WHERE id = $1::uuid),
                (SELECT count(*) FROM arbiter_admin.audit_records WHERE action = 'tenant.delete' AND target_id = $2)",
    )
    .bind(&u)
    .bind(&tb)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((person, audited), (1, 1), "the person stays; the deletion is audited");
}

/// Every mutating operation of the OpenAPI document, called once with valid input:
/// each must succeed, carry a revision and leave exactly one audit record. An
/// operation added to the document without a step here fails the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_operation_leaves_an_audit_record() {
    let p = platform("admin_audit").await;
    let (op, t) = (p.operator.clone(), p.tenant.clone());
    let doc = json_of(&p.admin.call("GET", "/openapi.json", None, None, &[]));
    let mut mutating: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                mutating.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let mut covered: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    // (template, concrete path, body, status): run in order, each must audit.
    macro_rules! step {
        ($method:expr, $template:expr, $path:expr, $body:expr, $status:expr) => {{
            covered.insert(format!("{} {}", $method, $template));
            p.write($method, AsRef::<str>::as_ref(&$path), &op, $body, $status).await.0
        }};
    }
    let gp = id(&step!("POST", "/v1/permissions", "/v1/permissions", Some(json!({"name": "g:read", "resource": "g", "action": "read"})), 201));
    step!("PATCH", "/v1/permissions/{permission_id}", format!("/v1/permissions/{gp}"), Some(json!({"description": "d"})), 200);
    let gr = id(&step!("POST", "/v1/roles", "/v1/roles", Some(json!({"name": "global reader"})), 201));
    step!("PATCH", "/v1/roles/{role_id}", format!("/v1/roles/{gr}"), Some(json!({"description": "d"})), 200);
    step!("PUT", "/v1/roles/{role_id}/permissions/{permission_id}", format!("/v1/roles/{gr}/permissions/{gp}"), None, 201);
    let tpl = id(&step!("POST", "/v1/role-templates", "/v1/role-templates",
        Some(json!({"name": "basic", "document": {"roles": [{"name": "reader", "permissions": ["g:read"]}, {"name": "lead", "parent": "reader"}]}})), 201));
    step!("PATCH", "/v1/role-templates/{template_id}", format!("/v1/role-templates/{tpl}"), Some(json!({"description": "d"})), 200);
    let t2 = id(&step!("POST", "/v1/tenants", "/v1/tenants", Some(json!({"slug": "two", "name": "Two", "template": "basic"})), 201));
    step!("PATCH", "/v1/tenants/{tenant_id}", format!("/v1/tenants/{t}"), Some(json!({"description": "d"})), 200);
    step!("POST", "/v1/tenants/{tenant_id}/status", format!("/v1/tenants/{t2}/status"), Some(json!({"status": "suspended", "reason": "unpaid"})), 200);
    let dom = id(&step!("POST", "/v1/tenants/{tenant_id}/domains", format!("/v1/tenants/{t}/domains"), Some(json!({"domain": "acme.example.com"})), 201));
    let dep = id(&step!("POST", "/v1/tenants/{tenant_id}/departments", format!("/v1/tenants/{t}/departments"), Some(json!({"name": "R&D"})), 201));
    step!("PATCH", "/v1/tenants/{tenant_id}/departments/{department_id}", format!("/v1/tenants/{t}/departments/{dep}"), Some(json!({"description": "d"})), 200);
    let u = id(&step!("POST", "/v1/tenants/{tenant_id}/users", format!("/v1/tenants/{t}/users"), Some(json!({"email": "eve@acme.test", "department_id": dep})), 201));
    step!("PATCH", "/v1/tenants/{tenant_id}/users/{user_id}", format!("/v1/tenants/{t}/users/{u}"), Some(json!({"display_name": "Eve"})), 200);
    step!("PUT", "/v1/tenants/{tenant_id}/users/{user_id}/preferences/{key}", format!("/v1/tenants/{t}/users/{u}/preferences/theme"), Some(json!({"value": "dark"})), 200);
    step!("PUT", "/v1/users/{user_id}/preferences/{key}", format!("/v1/users/{u}/preferences/language"), Some(json!({"value": "en"})), 200);
    let c = id(&step!("POST", "/v1/tenants/{tenant_id}/users/{user_id}/contacts", format!("/v1/tenants/{t}/users/{u}/contacts"), Some(json!({"type": "phone", "value": "+1 555 0100"})), 201));
    let g = id(&step!("POST", "/v1/tenants/{tenant_id}/groups", format!("/v1/tenants/{t}/groups"), Some(json!({"name": "g"})), 201));
    step!("PATCH", "/v1/tenants/{tenant_id}/groups/{group_id}", format!("/v1/tenants/{t}/groups/{g}"), Some(json!({"description": "d"})), 200);
    let m = id(&step!("POST", "/v1/tenants/{tenant_id}/groups/{group_id}/members", format!("/v1/tenants/{t}/groups/{g}/members"), Some(json!({"user_id": u})), 201));
    let perm = id(&step!("POST", "/v1/tenants/{tenant_id}/permissions", format!("/v1/tenants/{t}/permissions"), Some(json!({"name": "t:write", "resource": "t", "action": "write"})), 201));
    step!("PATCH", "/v1/tenants/{tenant_id}/permissions/{permission_id}", format!("/v1/tenants/{t}/permissions/{perm}"), Some(json!({"tags": ["x"]})), 200);
    let r = id(&step!("POST", "/v1/tenants/{tenant_id}/roles", format!("/v1/tenants/{t}/roles"), Some(json!({"name": "writer"})), 201));
    step!("PATCH", "/v1/tenants/{tenant_id}/roles/{role_id}", format!("/v1/tenants/{t}/roles/{r}"), Some(json!({"parent_role_id": gr})), 200);
    step!("PUT", "/v1/tenants/{tenant_id}/roles/{role_id}/permissions/{permission_id}", format!("/v1/tenants/{t}/roles/{r}/permissions/{perm}"), None, 201);
    let a = id(&step!("POST", "/v1/tenants/{tenant_id}/assignments", format!("/v1/tenants/{t}/assignments"), Some(json!({"role_id": r, "group_id": g})), 201));
    let key = id(&step!("POST", "/v1/tenants/{tenant_id}/api-keys", format!("/v1/tenants/{t}/api-keys"), Some(json!({"name": "ci", "role": "user_manager"})), 201));
    step!("POST", "/v1/tenants/{tenant_id}/api-keys/{key_id}/rotate", format!("/v1/tenants/{t}/api-keys/{key}/rotate"), None, 200);
    let okey = id(&step!("POST", "/v1/api-keys", "/v1/api-keys", Some(json!({"name": "ops"})), 201));
    p.write_app_schema().await;
    let acl = id(&step!("POST", "/v1/tenants/{tenant_id}/acl-entries", format!("/v1/tenants/{t}/acl-entries"),
        Some(json!({"resource_type": "doc", "resource_id": "d1", "subject_type": "group", "subject_id": g, "relations": ["viewer"]})), 201));
    step!("PATCH", "/v1/tenants/{tenant_id}/acl-entries/{entry_id}", format!("/v1/tenants/{t}/acl-entries/{acl}"), Some(json!({"expires_at": null})), 200);
    step!("DELETE", "/v1/tenants/{tenant_id}/acl-entries/{entry_id}", format!("/v1/tenants/{t}/acl-entries/{acl}"), None, 204);
    let n1 = id(&step!("POST", "/v1/tenants/{tenant_id}/graph/nodes", format!("/v1/tenants/{t}/graph/nodes"), Some(json!({"type": "doc", "object_id": "n1"})), 201));
    step!("PATCH", "/v1/tenants/{tenant_id}/graph/nodes/{node_id}", format!("/v1/tenants/{t}/graph/nodes/{n1}"), Some(json!({"properties": {"a": 1}})), 200);
    let n2 = id(&p.write("POST", &format!("/v1/tenants/{t}/graph/nodes"), &op, Some(json!({"type": "doc", "object_id": "n2"})), 201).await.0);
    let e = id(&step!("POST", "/v1/tenants/{tenant_id}/graph/edges", format!("/v1/tenants/{t}/graph/edges"),
        Some(json!({"from_node_id": n1, "to_node_id": n2, "relation_type": "related"})), 201));
    step!("PATCH", "/v1/tenants/{tenant_id}/graph/edges/{edge_id}", format!("/v1/tenants/{t}/graph/edges/{e}"), Some(json!({"properties": {"b": 2}})), 200);
    step!("DELETE", "/v1/tenants/{tenant_id}/graph/edges/{edge_id}", format!("/v1/tenants/{t}/graph/edges/{e}"), None, 204);
    step!("DELETE", "/v1/tenants/{tenant_id}/graph/nodes/{node_id}", format!("/v1/tenants/{t}/graph/nodes/{n1}"), None, 204);
    let l1 = id(&step!("POST", "/v1/security-labels", "/v1/security-labels", Some(json!({"name": "internal", "level": 1})), 201));
    let l2 = id(&p.write("POST", "/v1/security-labels", &op, Some(json!({"name": "restricted", "level": 2})), 201).await.0);
    step!("PATCH", "/v1/security-labels/{label_id}", format!("/v1/security-labels/{l1}"), Some(json!({"description": "d"})), 200);
    step!("PUT", "/v1/security-labels/{label_id}/parents/{parent_id}", format!("/v1/security-labels/{l1}/parents/{l2}"), None, 201);
    step!("DELETE", "/v1/security-labels/{label_id}/parents/{parent_id}", format!("/v1/security-labels/{l1}/parents/{l2}"), None, 204);
    let ol = id(&step!("POST", "/v1/tenants/{tenant_id}/object-labels", format!("/v1/tenants/{t}/object-labels"),
        Some(json!({"object_type": "doc", "object_id": "d1", "label_id": l1})), 201));
    step!("DELETE", "/v1/tenants/{tenant_id}/object-labels/{object_label_id}", format!("/v1/tenants/{t}/object-labels/{ol}"), None, 204);
    step!("DELETE", "/v1/security-labels/{label_id}", format!("/v1/security-labels/{l2}"), None, 204);
    let at = id(&step!("POST", "/v1/attributes", "/v1/attributes", Some(json!({"object_type": "platform/user", "name": "team", "data_type": "string"})), 201));
    step!("PATCH", "/v1/attributes/{attr_id}", format!("/v1/attributes/{at}"), Some(json!({"description": "d"})), 200);
    let av = id(&step!("POST", "/v1/attributes/{attr_id}/values", format!("/v1/attributes/{at}/values"), Some(json!({"value": "core"})), 201));
    let sa = id(&step!("POST", "/v1/tenants/{tenant_id}/subject-attributes", format!("/v1/tenants/{t}/subject-attributes"),
        Some(json!({"subject_type": "user", "subject_id": u, "value_id": av})), 201));
    step!("DELETE", "/v1/tenants/{tenant_id}/subject-attributes/{subject_attribute_id}", format!("/v1/tenants/{t}/subject-attributes/{sa}"), None, 204);
    let rat = id(&p.write("POST", "/v1/attributes", &op, Some(json!({"object_type": "doc", "name": "kind", "data_type": "string"})), 201).await.0);
    let rav = id(&p.write("POST", &format!("/v1/attributes/{rat}/values"), &op, Some(json!({"value": "memo"})), 201).await.0);
    let ra = id(&step!("POST", "/v1/tenants/{tenant_id}/resource-attributes", format!("/v1/tenants/{t}/resource-attributes"),
        Some(json!({"resource_type": "doc", "resource_id": "d1", "value_id": rav})), 201));
    step!("DELETE", "/v1/tenants/{tenant_id}/resource-attributes/{resource_attribute_id}", format!("/v1/tenants/{t}/resource-attributes/{ra}"), None, 204);
    step!("DELETE", "/v1/attributes/{attr_id}/values/{value_id}", format!("/v1/attributes/{at}/values/{av}"), None, 204);
    step!("DELETE", "/v1/attributes/{attr_id}", format!("/v1/attributes/{at}"), None, 204);
    let pol = id(&step!("POST", "/v1/policies", "/v1/policies", Some(json!({"name": "audit-step"})), 201));
    step!("PATCH", "/v1/policies/{policy_id}", format!("/v1/policies/{pol}"), Some(json!({"tags": ["x"]})), 200);
    step!("POST", "/v1/policies/{policy_id}/versions", format!("/v1/policies/{pol}/versions"),
        Some(json!({"definition": "forbid (principal, action, resource) when { false };"})), 201);
    step!("POST", "/v1/policies/{policy_id}/versions/{number}/activate", format!("/v1/policies/{pol}/versions/1/activate"), None, 200);
    step!("POST", "/v1/policies/{policy_id}/versions/{number}/retire", format!("/v1/policies/{pol}/versions/1/retire"), None, 200);
    step!("DELETE", "/v1/policies/{policy_id}", format!("/v1/policies/{pol}"), None, 204);
    let dlg_user = id(&p.write("POST", &format!("/v1/tenants/{t}/users"), &op, Some(json!({"email": "dan@acme.test"})), 201).await.0);
    let dlg = id(&step!("POST", "/v1/tenants/{tenant_id}/delegations", format!("/v1/tenants/{t}/delegations"),
        Some(json!({"grantor_user_id": u, "delegate_user_id": dlg_user, "role_id": r})), 201));
    step!("POST", "/v1/tenants/{tenant_id}/delegations/{delegation_id}/revoke", format!("/v1/tenants/{t}/delegations/{dlg}/revoke"), None, 200);
    let ses = id(&step!("POST", "/v1/tenants/{tenant_id}/impersonation-sessions", format!("/v1/tenants/{t}/impersonation-sessions"),
        Some(json!({"target_user_id": u, "reason": "audit step"})), 201));
    step!("POST", "/v1/tenants/{tenant_id}/impersonation-sessions/{session_id}/end", format!("/v1/tenants/{t}/impersonation-sessions/{ses}/end"), None, 200);
    let inv = step!("POST", "/v1/tenants/{tenant_id}/invitations", format!("/v1/tenants/{t}/invitations"), Some(json!({"max_uses": 1})), 201);
    step!("POST", "/v1/invitations/accept", "/v1/invitations/accept", Some(json!({"token": inv["code"], "email": "joiner@acme.test"})), 200);
    let inv2 = id(&p.write("POST", &format!("/v1/tenants/{t}/invitations"), &op, Some(json!({"email": "mailed@acme.test"})), 201).await.0);
    step!("POST", "/v1/tenants/{tenant_id}/invitations/{invitation_id}/cancel", format!("/v1/tenants/{t}/invitations/{inv2}/cancel"), None, 200);
    let msg = json_of(&p.admin.call("GET", "/v1/outbox", Some(&op), None, &[]))["items"][0]["id"].as_str().unwrap().to_string();
    step!("POST", "/v1/outbox/{message_id}/delivered", format!("/v1/outbox/{msg}/delivered"), None, 204);
    let jr1 = id(&step!("POST", "/v1/join-requests", "/v1/join-requests", Some(json!({"tenant": "acme", "email": "knock@acme.test"})), 201));
    step!("POST", "/v1/tenants/{tenant_id}/join-requests/{request_id}/approve", format!("/v1/tenants/{t}/join-requests/{jr1}/approve"), Some(json!({})), 200);
    let jr2 = id(&p.write("POST", "/v1/join-requests", &op, Some(json!({"tenant": "acme", "email": "knock2@acme.test"})), 201).await.0);
    step!("POST", "/v1/tenants/{tenant_id}/join-requests/{request_id}/reject", format!("/v1/tenants/{t}/join-requests/{jr2}/reject"), Some(json!({})), 200);
    step!("POST", "/v1/users/{user_id}/suspend", format!("/v1/users/{u}/suspend"), Some(json!({"reason": "review"})), 200);
    step!("POST", "/v1/users/{user_id}/reactivate", format!("/v1/users/{u}/reactivate"), None, 200);
    let ls = id(&step!("POST", "/v1/log-streams", "/v1/log-streams", Some(json!({"name": "billing", "retention_days": 30})), 201));
    step!("PATCH", "/v1/log-streams/{stream_id}", format!("/v1/log-streams/{ls}"), Some(json!({"retention_days": null})), 200);
    let ac = id(&step!("POST", "/v1/audit-configs", "/v1/audit-configs", Some(json!({"service_name": "billing", "enabled_events": ["invoice.*"], "stream": "billing"})), 201));
    step!("PATCH", "/v1/audit-configs/{config_id}", format!("/v1/audit-configs/{ac}"), Some(json!({"stream": "events"})), 200);
    step!("DELETE", "/v1/audit-configs/{config_id}", format!("/v1/audit-configs/{ac}"), None, 204);
    step!("DELETE", "/v1/log-streams/{stream_id}", format!("/v1/log-streams/{ls}"), None, 204);
    let tr = id(&step!("POST", "/v1/tenants/{tenant_id}/alert-rules", format!("/v1/tenants/{t}/alert-rules"), Some(json!({"name": "pings", "event_pattern": "test.ping"})), 201));
    step!("PATCH", "/v1/tenants/{tenant_id}/alert-rules/{rule_id}", format!("/v1/tenants/{t}/alert-rules/{tr}"), Some(json!({"description": "d"})), 200);
    let pr = id(&step!("POST", "/v1/alert-rules", "/v1/alert-rules", Some(json!({"name": "platform pings", "event_pattern": "test.*", "enabled": false})), 201));
    step!("PATCH", "/v1/alert-rules/{rule_id}", format!("/v1/alert-rules/{pr}"), Some(json!({"threshold": 2})), 200);
    let ping = json!({"events": [{"service_name": "probe", "event_type": "test.ping", "actor": "probe", "tenant_id": t}]});
    step!("POST", "/v1/tenants/{tenant_id}/audit-events", format!("/v1/tenants/{t}/audit-events"), Some(ping.clone()), 200);
    step!("POST", "/v1/audit-events", "/v1/audit-events", Some(ping), 200);
    // Bulk provisioning takes NDJSON: one request, one audit record.
    covered.insert("POST /v1/tenants/{tenant_id}/bulk".to_string());
    let headers = vec![("authorization".to_string(), format!("Bearer {op}")), ("content-type".to_string(), "application/x-ndjson".to_string())];
    let bulk = http_request(&p.admin.addr, "POST", &format!("/v1/tenants/{t}/bulk"), &headers, Some(b"{\"op\":\"user\",\"ref\":\"b\",\"email\":\"bulk@acme.test\"}\n")).unwrap();
    assert_eq!(bulk.status, 200, "{}", bulk.body);
    let pool = p.db.pool().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM arbiter_admin.audit_records WHERE request_id = $1")
        .bind(bulk.header("x-request-id").unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "the bulk request left no audit record");
    let pep = json!({"reports": [{"decision_id": "d-1", "pep": "gateway", "outcome": "allowed"}]});
    step!("POST", "/v1/tenants/{tenant_id}/pep-logs", format!("/v1/tenants/{t}/pep-logs"), Some(pep.clone()), 200);
    step!("POST", "/v1/pep-logs", "/v1/pep-logs", Some(pep), 200);
    let open_alerts = format!("/v1/tenants/{t}/alerts?resolved=false");
    p.eventually("two alerts", || async { json_of(&p.admin.call("GET", &open_alerts, Some(&op), None, &[]))["items"].as_array().unwrap().len() == 2 }).await;
    let alerts = json_of(&p.admin.call("GET", &open_alerts, Some(&op), None, &[]));
    let (al1, al2) = (id(&alerts["items"][0]), id(&alerts["items"][1]));
    step!("POST", "/v1/tenants/{tenant_id}/alerts/{alert_id}/resolve", format!("/v1/tenants/{t}/alerts/{al1}/resolve"), Some(json!({"resolution": "test"})), 200);
    step!("POST", "/v1/alerts/{alert_id}/resolve", format!("/v1/alerts/{al2}/resolve"), Some(json!({})), 200);
    step!("DELETE", "/v1/tenants/{tenant_id}/alert-rules/{rule_id}", format!("/v1/tenants/{t}/alert-rules/{tr}"), None, 204);
    step!("DELETE", "/v1/alert-rules/{rule_id}", format!("/v1/alert-rules/{pr}"), None, 204);
    // Now undo, in an order the constraints allow.
    step!("DELETE", "/v1/api-keys/{key_id}", format!("/v1/api-keys/{okey}"), None, 204);
    step!("DELETE", "/v1/tenants/{tenant_id}/api-keys/{key_id}", format!("/v1/tenants/{t}/api-keys/{key}"), None, 204);
    step!("DELETE", "/v1/tenants/{tenant_id}/assignments/{assignment_id}", format!("/v1/tenants/{t}/assignments/{a}"), None, 204);
    step!("DELETE", "/v1/tenants/{tenant_id}/roles/{role_id}/permissions/{permission_id}", format!("/v1/tenants/{t}/roles/{r}/permissions/{perm}"), None, 204);
    step!("DELETE", "/v1/tenants/{tenant_id}/roles/{role_id}", format!("/v1/tenants/{t}/roles/{r}"), None, 204);
    step!("DELETE", "/v1/tenants/{tenant_id}/permissions/{permission_id}", format!("/v1/tenants/{t}/permissions/{perm}"), None, 204);
    step!("DELETE", "/v1/tenants/{tenant_id}/groups/{group_id}/members/{member_id}", format!("/v1/tenants/{t}/groups/{g}/members/{m}"), None, 204);
    step!("DELETE", "/v1/tenants/{tenant_id}/groups/{group_id}", format!("/v1/tenants/{t}/groups/{g}"), None, 204);
    step!("DELETE", "/v1/tenants/{tenant_id}/users/{user_id}/contacts/{contact_id}", format!("/v1/tenants/{t}/users/{u}/contacts/{c}"), None, 204);
    step!("DELETE", "/v1/tenants/{tenant_id}/users/{user_id}/preferences/{key}", format!("/v1/tenants/{t}/users/{u}/preferences/theme"), None, 204);
    step!("DELETE", "/v1/users/{user_id}/preferences/{key}", format!("/v1/users/{u}/preferences/language"), None, 204);
    step!("DELETE", "/v1/tenants/{tenant_id}/users/{user_id}", format!("/v1/tenants/{t}/users/{u}"), None, 204);
    step!("DELETE", "/v1/users/{user_id}", format!("/v1/users/{u}"), None, 204);
    step!("DELETE", "/v1/tenants/{tenant_id}/departments/{department_id}", format!("/v1/tenants/{t}/departments/{dep}"), None, 204);
    step!("DELETE", "/v1/tenants/{tenant_id}/domains/{domain_id}", format!("/v1/tenants/{t}/domains/{dom}"), None, 204);
    step!("DELETE", "/v1/role-templates/{template_id}", format!("/v1/role-templates/{tpl}"), None, 204);
    step!("DELETE", "/v1/roles/{role_id}/permissions/{permission_id}", format!("/v1/roles/{gr}/permissions/{gp}"), None, 204);
    // The template gave tenant two roles; the global role has none depending on it now.
    step!("DELETE", "/v1/roles/{role_id}", format!("/v1/roles/{gr}"), None, 204);
    step!("DELETE", "/v1/permissions/{permission_id}", format!("/v1/permissions/{gp}"), None, 204);
    let missing: Vec<&String> = mutating.difference(&covered).collect();
    assert!(missing.is_empty(), "mutating operations without an audit step: {missing:?}");
    // Personal data stays out of the trail.
    let pool = p.db.pool().await;
    let leaked: i64 = sqlx::query_scalar("SELECT count(*) FROM arbiter_admin.audit_records WHERE before::text LIKE '%eve@acme%' OR after::text LIKE '%eve@acme%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(leaked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_requests_are_rate_limited_and_sigterm_drains() {
    let p = platform("admin_ops").await;
    let (op, t) = (p.operator.as_str(), p.tenant.as_str());
    // Rotation: the new secret works, the old one stops at once.
    let (key, _) = p.write("POST", &format!("/v1/tenants/{t}/api-keys"), op, Some(json!({"name": "bot", "role": "auditor"})), 201).await;
    let (old, id) = (key["api_key"].as_str().unwrap().to_string(), key["id"].as_str().unwrap().to_string());
    let (rotated, _) = p.write("POST", &format!("/v1/tenants/{t}/api-keys/{id}/rotate"), op, None, 200).await;
    let new = rotated["api_key"].as_str().unwrap().to_string();
    assert!(new.starts_with(&id) && new != old);
    assert_eq!(p.admin.call("GET", &format!("/v1/tenants/{t}"), Some(&old), None, &[]).status, 401);
    assert_eq!(p.admin.call("GET", &format!("/v1/tenants/{t}"), Some(&new), None, &[]).status, 200);
    // An expiring key stops at its time.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let (k, _) = p.write("POST", &format!("/v1/tenants/{t}/api-keys"), op, Some(json!({"name": "temp", "role": "auditor", "expires_at": soon})), 201).await;
    let temp = k["api_key"].as_str().unwrap().to_string();
    assert_eq!(p.admin.call("GET", &format!("/v1/tenants/{t}"), Some(&temp), None, &[]).status, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(p.admin.call("GET", &format!("/v1/tenants/{t}"), Some(&temp), None, &[]).status, 401);

    // A second admin on the same database with a small rate limit: a burst of twice the
    // rate passes, then 429 with Retry-After; health checks are never limited.
    let limited = Admin::start(&p.db, &p.pdp, &["--rate-limit", "2"]);
    let statuses: Vec<u16> = (0..6).map(|_| limited.call("GET", &format!("/v1/tenants/{t}"), Some(op), None, &[]).status).collect();
    assert_eq!(&statuses[..4], &[200, 200, 200, 200], "{statuses:?}");
    let r = limited.call("GET", &format!("/v1/tenants/{t}"), Some(op), None, &[]);
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_eq!(limited.call("GET", "/healthz", None, None, &[]).status, 200);

    // SIGTERM: the admin drains and exits 0.
    let mut child = {
        let mut a = limited;
        std::mem::replace(&mut a.child, Command::new("true").spawn().unwrap())
    };
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// A request the receiver got: its headers and body.
type Received = (Vec<(String, String)>, String);

/// A webhook receiver: answers `failures` requests with 500, then 200; keeps each
/// request's headers and body.
struct Receiver {
    addr: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(failures: usize) -> Receiver {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = seen.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let mut raw = Vec::new();
                let mut buf = [0u8; 8192];
                // Headers, then as much body as content-length says.
                let (headers, body) = loop {
                    let Ok(k) = stream.read(&mut buf) else { break (Vec::new(), String::new()) };
                    if k == 0 {
                        break (Vec::new(), String::new());
                    }
                    raw.extend_from_slice(&buf[..k]);
                    let text = String::from_utf8_lossy(&raw).to_string();
                    let Some((head, rest)) = text.split_once("\r\n\r\n") else { continue };
                    let headers: Vec<(String, String)> = head
                        .split("\r\n")
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let len = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
                    if rest.len() >= len {
                        break (headers, rest[..len].to_string());
                    }
                };
                kept.lock().unwrap().push((headers, body));
                let status = if n < failures { "500 Internal Server Error" } else { "200 OK" };
                let _ = stream.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes());
            }
        });
        Receiver { addr, seen }
    }
}

/// The audit trail as a product: queries by every filter and a time range, paged by
/// time; refused calls in the security stream; events other services report, kept or
/// dropped by their service's config, in its stream; NDJSON and CSV exports of a query,
/// whole; the retention sweep by stream and by service; an alert rule over refused
/// calls that raises one alert per actor while it is open, delivered to a webhook
/// (signed, retried after a failure) and resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_is_queried_exported_kept_and_alerted_on() {
    let p = platform_with("admin_trail", &["--webhook-allow-private-networks"]).await;
    let (t, op) = (p.tenant.clone(), p.operator.clone());
    let call = |method: &str, path: &str, key: &str, body: Option<Value>| p.admin.call(method, path, Some(key), body, &[]);
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let trail = format!("/v1/tenants/{t}/audit-records");
    let items = |r: Reply| -> Vec<Value> {
        assert_eq!(r.status, 200, "{}", r.body);
        json_of(&r)["items"].as_array().unwrap().clone()
    };

    // An alert rule first (records are queued for rules enabled when they are written).
    let hook = Receiver::start(1);
    let r = call("POST", &format!("/v1/tenants/{t}/alert-rules"), &op, Some(json!({"name": "refused calls", "event_pattern": "access.denied",
        "min_severity": "medium", "threshold": 3, "window_seconds": 300, "webhook_url": format!("http://{}/hook", hook.addr)})));
    assert_eq!(r.status, 201, "{}", r.body);
    let rule = json_of(&r);
    let secret = rule["webhook_secret"].as_str().unwrap().to_string();
    assert!(json_of(&call("GET", &format!("/v1/tenants/{t}/alert-rules/{}", id(&rule)), &op, None)).get("webhook_secret").is_none());
    // A webhook into the admin's own network is refused without the development flag
    // (an instance whose jobs wait an hour, so that it sends nothing here).
    let strict = Admin::start(&p.db, &p.pdp, &["--jobs-interval", "3600"]);
    let r = strict.call("POST", &format!("/v1/tenants/{t}/alert-rules"), Some(&op),
        Some(json!({"name": "x", "event_pattern": "*", "webhook_url": format!("http://{}/hook", hook.addr)})), &[]);
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some("/webhook_url")), "{}", r.body);

    // Changes, then a query by each filter.
    let (ann, _) = p.write("POST", &format!("/v1/tenants/{t}/users"), &op, Some(json!({"email": "ann@acme.test"})), 201).await;
    let (g, _) = p.write("POST", &format!("/v1/tenants/{t}/groups"), &op, Some(json!({"name": "ops"})), 201).await;
    let r = call("PATCH", &format!("/v1/tenants/{t}/groups/{}", id(&g)), &op, Some(json!({"description": "d"})));
    let patch_request = r.header("x-request-id").unwrap().to_string();
    let actions = |query: &str| -> Vec<String> {
        items(call("GET", &format!("{trail}?{query}"), &op, None)).iter().map(|r| r["action"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(actions("action=group.*"), ["group.update", "group.create"]);
    assert_eq!(actions(&format!("request_id={patch_request}")), ["group.update"]);
    assert_eq!(actions(&format!("target_id={}&action=user.create", id(&ann))), ["user.create"]);
    let newest = items(call("GET", &trail, &op, None))[0]["occurred_at"].as_str().unwrap().to_string();
    let at = chrono::DateTime::parse_from_rfc3339(&newest).unwrap();
    let enc = |t: chrono::DateTime<chrono::FixedOffset>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).replace('+', "%2B");
    assert_eq!(actions(&format!("from={}", enc(at))), ["group.update"]);
    assert!(!actions(&format!("to={}", enc(at))).contains(&"group.update".to_string()));
    assert!(actions(&format!("from={}&to={}", enc(at + chrono::Duration::seconds(1)), enc(at + chrono::Duration::seconds(2)))).is_empty());
    for (query, field) in [("from=yesterday", "from"), (&*format!("from={0}&to={0}", enc(at)), "to"), ("severity=extreme", "severity"), ("action=gro*", "action")] {
        let r = call("GET", &format!("{trail}?{query}"), &op, None);
        assert_eq!((r.status, json_of(&r)["field"].as_str()), (400, Some(field)), "{query}: {}", r.body);
    }
    // Paged by time, newest first: two pages of two meet without a gap.
    let first = json_of(&call("GET", &format!("{trail}?limit=2"), &op, None));
    let second = json_of(&call("GET", &format!("{trail}?limit=2&cursor={}", first["next_cursor"].as_str().unwrap()), &op, None));
    let all = items(call("GET", &format!("{trail}?limit=4"), &op, None));
    let paged: Vec<Value> = first["items"].as_array().unwrap().iter().chain(second["items"].as_array().unwrap()).cloned().collect();
    assert_eq!(paged, all);

    // Refused calls: a bad key, and an auditor's key trying a change (three times, so
    // the rule raises an alert; a fourth raises no second one while it is open).
    let (k, _) = p.write("POST", &format!("/v1/tenants/{t}/api-keys"), &op, Some(json!({"name": "reader", "role": "auditor"})), 201).await;
    let (auditor, auditor_id) = (k["api_key"].as_str().unwrap().to_string(), format!("api_key:{}", id(&k)));
    let forged = format!("{}.{}", id(&k), "0".repeat(64));
    assert_eq!(call("GET", &trail, &forged, None).status, 401);
    for _ in 0..4 {
        assert_eq!(call("POST", &format!("/v1/tenants/{t}/groups"), &auditor, Some(json!({"name": "nope"}))).status, 403);
    }
    let security = items(call("GET", &format!("/v1/audit-records?stream=security&actor={auditor_id}"), &op, None));
    let kinds: Vec<&str> = security.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["access.denied"; 4].iter().copied().chain(["authentication.failed"]).collect::<Vec<_>>());
    assert_eq!(security[0]["payload"]["permission"], "manage_users");
    // The auditor reads the tenant's trail, refusals included.
    assert_eq!(items(call("GET", &format!("{trail}?stream=security&severity=medium"), &auditor, None)).len(), 4);

    // Events from other services: kept by config, in the config's stream.
    p.write("POST", "/v1/log-streams", &op, Some(json!({"name": "billing", "retention_days": 400})), 201).await;
    p.write("POST", "/v1/audit-configs", &op, Some(json!({"service_name": "billing", "enabled_events": ["invoice.*"], "stream": "billing"})), 201).await;
    // A service cannot report into the admin's own streams.
    let r = call("POST", "/v1/audit-configs", &op, Some(json!({"service_name": "forger", "enabled_events": ["*"], "stream": "changes"})));
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some("/stream")), "{}", r.body);
    let events = json!({"events": [
        {"service_name": "billing", "event_type": "invoice.refund", "actor": "clerk-7", "target_type": "invoice", "target_id": "=HYPERLINK(\"x\")",
         "severity": "high", "payload": {"amount": 120}, "correlation_id": "req-77"},
        {"service_name": "billing", "event_type": "login.ok", "actor": "clerk-7"},
        {"service_name": "crm", "event_type": "lead.export", "actor": "sam"}]});
    let r = call("POST", &format!("/v1/tenants/{t}/audit-events"), &op, Some(events));
    assert_eq!((r.status, json_of(&r)), (200, json!({"kept": 2, "dropped": 1})), "{}", r.body);
    let refund = items(call("GET", &format!("{trail}?request_id=req-77"), &op, None));
    assert_eq!((refund[0]["stream"].as_str(), refund[0]["service_name"].as_str(), refund[0]["payload"]["amount"].as_i64()), (Some("billing"), Some("billing"), Some(120)));
    assert_eq!(items(call("GET", &format!("{trail}?service_name=crm"), &op, None))[0]["stream"], "events");
    // A bad event refuses the whole report, naming it.
    let before = p.audit_count().await;
    for (event, field) in [
        (json!({"service_name": "admin", "event_type": "x", "actor": "a"}), "/events/1/service_name"),
        (json!({"service_name": "crm", "event_type": "Bad Type", "actor": "a"}), "/events/1/event_type"),
        (json!({"service_name": "crm", "event_type": "x", "actor": "a", "occurred_at": "2001-01-01T00:00:00Z"}), "/events/1/occurred_at"),
        (json!({"service_name": "crm", "event_type": "x", "actor": "a", "tenant_id": "00000000-0000-4000-8000-000000000000"}), "/events/1/tenant_id"),
    ] {
        let ok = json!({"service_name": "crm", "event_type": "fine", "actor": "a"});
        let r = call("POST", &format!("/v1/tenants/{t}/audit-events"), &op, Some(json!({"events": [ok, event]})));
        assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some(field)), "{}", r.body);
    }
    let pool = p.db.pool().await;
    let fine: i64 = sqlx::query_scalar("SELECT count(*) FROM arbiter_admin.audit_records WHERE action = 'fine'").fetch_one(&pool).await.unwrap();
    assert_eq!((fine, p.audit_count().await), (0, before));

    // Exports: the query whole, as NDJSON or CSV (a formula in a cell is defused).
    let r = call("GET", &format!("{trail}/export"), &op, None);
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/x-ndjson")));
    let lines: Vec<Value> = r.body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut listed = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = json_of(&call("GET", &format!("{trail}?limit=3{cursor}"), &op, None));
        listed.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(lines, listed);
    let r = call("GET", &format!("{trail}/export?format=csv&stream=billing"), &op, None);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    let rows: Vec<&str> = r.body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 2, "{}", r.body);
    assert!(rows[0].starts_with("id,occurred_at,tenant_id,stream,"));
    assert!(rows[1].contains(r#","'=HYPERLINK(""x"")","#), "{}", rows[1]);
    assert_eq!(call("GET", &format!("{trail}/export?format=xml"), &op, None).status, 400);

    // Retention: a record past its stream's days goes, one within them stays; a
    // service's own retention applies too.
    let short = json_of(&call("POST", "/v1/log-streams", &op, Some(json!({"name": "short", "retention_days": 1}))));
    assert_eq!(short["retention_days"], 1);
    p.write("POST", "/v1/audit-configs", &op, Some(json!({"service_name": "crm", "enabled_events": ["*"], "retention_days": 2})), 201).await;
    for (stream, service, age, target) in
        [("short", "probe", "36 hours", "old"), ("short", "probe", "12 hours", "young"), ("events", "crm", "3 days", "stale"), ("events", "crm", "1 day", "fresh")]
    {
        sqlx::query(&format!(
            "INSERT INTO arbiter_admin.audit_records (occurred_at, tenant_id, stream, service_name, actor, effective_actor, action, target_type, target_id, request_id)
             VALUES (now() - interval '{age}', $1::uuid, $2, $3, 'x', 'x', 'aged', 'x', $4, 'aged')"
        ))
        .bind(&t)
        .bind(stream)
        .bind(service)
        .bind(target)
        .execute(&pool)
        .await
        .unwrap();
    }
    p.eventually("the sweep", || async {
        let left: Vec<String> = sqlx::query_scalar("SELECT target_id FROM arbiter_admin.audit_records WHERE action = 'aged' ORDER BY target_id")
            .fetch_all(&pool)
            .await
            .unwrap();
        left == ["fresh", "young"]
    })
    .await;
    // A stream that holds records is not deleted; a built-in one never.
    assert_eq!(call("DELETE", &format!("/v1/log-streams/{}", id(&short)), &op, None).status, 409);
    let streams = items(call("GET", "/v1/log-streams?name=changes", &op, None));
    assert_eq!(call("DELETE", &format!("/v1/log-streams/{}", id(&streams[0])), &op, None).status, 409);

    // The alert: one for the auditor's key, delivered after one failed attempt, signed.
    let alerts = format!("/v1/tenants/{t}/alerts");
    p.eventually("the delivered alert", || async {
        items(call("GET", &alerts, &op, None)).first().is_some_and(|a| a["webhook_status"] == "delivered")
    })
    .await;
    let raised = items(call("GET", &alerts, &op, None));
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!((raised[0]["actor"].as_str(), raised[0]["count"].as_i64(), raised[0]["webhook_attempts"].as_i64()), (Some(&*auditor_id), Some(3), Some(2)));
    let seen = hook.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let (headers, body) = &seen[1];
    let signature = headers.iter().find(|(n, _)| n == "arbiter-signature").map(|(_, v)| v.clone()).unwrap();
    let (ts, v1) = signature.strip_prefix("t=").and_then(|s| s.split_once(",v1=")).unwrap();
    assert_eq!(v1, arbiter_admin::webhook::sign(secret.as_bytes(), ts.parse().unwrap(), body.as_bytes()));
    let delivered: Value = serde_json::from_str(body).unwrap();
    assert_eq!((delivered["alert"]["id"].as_str(), delivered["record"]["action"].as_str()), (raised[0]["id"].as_str(), Some("access.denied")));
    // Resolved once; the auditor may resolve it (the `audit` permission), not twice.
    let r = call("POST", &format!("{alerts}/{}/resolve", id(&raised[0])), &auditor, Some(json!({"resolution": "a test"})));
    assert_eq!((r.status, json_of(&r)["resolved"].as_bool()), (200, Some(true)), "{}", r.body);
    assert_eq!(call("POST", &format!("{alerts}/{}/resolve", id(&raised[0])), &op, Some(json!({}))).status, 409);
    assert_eq!(items(call("GET", &format!("{alerts}?resolved=false"), &op, None)).len(), 0);
}

/// Decisions and their enforcement, and who can do what: a logged Check's id comes back
/// to the caller (`arbiter-decision-id`); the tenant's decision logs list it (and not
/// another tenant's), with the enforcement points' reports joined and disagreements
/// found; a user's effective permissions and the holders of a permission on an object
/// are the PDP's answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_enforcement_and_who_can_do_what() {
    use arbiter_proto::arbiter::v1 as pb;
    let p = platform_full("admin_decisions", &["--decision-log", "postgres"], &[]).await;
    let (t, op) = (p.tenant.clone(), p.operator.clone());
    let call = |method: &str, path: &str, body: Option<Value>| p.admin.call(method, path, Some(&op), body, &[]);
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    p.write_app_schema().await;
    let (ann, _) = p.write("POST", &format!("/v1/tenants/{t}/users"), &op, Some(json!({"email": "ann@acme.test"})), 201).await;
    let (bob, _) = p.write("POST", &format!("/v1/tenants/{t}/users"), &op, Some(json!({"email": "bob@acme.test", "display_name": "Bob"})), 201).await;
    let (g, _) = p.write("POST", &format!("/v1/tenants/{t}/groups"), &op, Some(json!({"name": "readers"})), 201).await;
    p.write("POST", &format!("/v1/tenants/{t}/groups/{}/members", id(&g)), &op, Some(json!({"user_id": id(&ann)})), 201).await;
    p.write("POST", &format!("/v1/tenants/{t}/acl-entries"), &op,
        Some(json!({"resource_type": "doc", "resource_id": "d1", "subject_type": "group", "subject_id": id(&g), "relations": ["viewer"]})), 201).await;
    let (_, token) = p.write("POST", &format!("/v1/tenants/{t}/acl-entries"), &op,
        Some(json!({"resource_type": "doc", "resource_id": "d1", "subject_type": "user", "subject_id": id(&bob), "relations": ["owner"]})), 201).await;

    // A Check, logged: its id comes back with the answer.
    let mut c = p.pdp.clients().await;
    let checked = c.permissions.check(check_req(&format!("doc:d1#view@platform/user:{}", id(&ann)), at_least(&token))).await.unwrap();
    assert_eq!(checked.get_ref().decision, pb::Decision::Allowed as i32);
    let decision_id = checked.metadata().get("arbiter-decision-id").unwrap().to_str().unwrap().to_string();
    // Another tenant's object: logged, but not in this tenant's logs.
    let (other, _) = p.write("POST", "/v1/tenants", &op, Some(json!({"slug": "globex", "name": "Globex"})), 201).await;
    let other_check = format!("platform/tenant:{}#view@platform/user:{}", id(&other), id(&ann));
    c.permissions.check(check_req(&other_check, at_least(&token))).await.unwrap();
    let logs = format!("/v1/tenants/{t}/decision-logs");
    p.eventually("the decision logs", || async {
        json_of(&call("GET", &format!("/v1/decision-logs?resource=platform/tenant:{}", id(&other)), None))["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;
    // The tenant's logs hold the decisions on its objects (the admin's own on the tenant
    // among them), not those on another tenant's.
    let theirs = json_of(&call("GET", &format!("{logs}?resource=platform/tenant:{}", id(&other)), None));
    assert_eq!(theirs["items"], json!([]));
    let mine = json_of(&call("GET", &format!("{logs}?resource=doc:d1"), None));
    let items = mine["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{mine}");
    assert!(json_of(&call("GET", &format!("{logs}?resource=platform/tenant:{t}"), None))["items"].as_array().is_some_and(|i| !i.is_empty()));
    assert_eq!((items[0]["decision_id"].as_str(), items[0]["decision"].as_str()), (Some(&*decision_id), Some("allowed")));
    assert_eq!(items[0]["subject"], format!("platform/user:{}", id(&ann)));

    // Enforcement: one PEP did as told, another did not.
    let reports = json!({"reports": [
        {"decision_id": decision_id, "pep": "gateway", "outcome": "allowed", "policy_version": 1},
        {"decision_id": decision_id, "pep": "legacy-proxy", "outcome": "denied"},
        {"decision_id": "never-logged", "pep": "gateway", "outcome": "error"}]});
    let r = call("POST", &format!("/v1/tenants/{t}/pep-logs"), Some(reports));
    assert_eq!((r.status, json_of(&r)["recorded"].as_i64()), (200, Some(3)), "{}", r.body);
    let disagreeing = json_of(&call("GET", &format!("/v1/tenants/{t}/pep-logs?agrees=false"), None));
    let items = disagreeing["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{disagreeing}");
    assert_eq!((items[0]["pep"].as_str(), items[0]["decision"]["decision"].as_str(), items[0]["agrees"].as_bool()), (Some("legacy-proxy"), Some("allowed"), Some(false)));
    let unknown = json_of(&call("GET", &format!("/v1/tenants/{t}/pep-logs?decision_id=never-logged"), None));
    assert_eq!((unknown["items"][0]["decision"].is_null(), unknown["items"][0]["agrees"].is_null()), (true, true));
    let with = json_of(&call("GET", &format!("{logs}?decision=allowed&subject=platform/user:{}", id(&ann)), None));
    assert_eq!(with["items"][0]["enforcements"].as_array().unwrap().len(), 2);
    for (query, field) in [("decision=maybe", "decision"), ("from=soon", "from"), ("cursor=nope", "cursor")] {
        let r = call("GET", &format!("{logs}?{query}"), None);
        assert_eq!((r.status, json_of(&r)["field"].as_str()), (400, Some(field)), "{query}: {}", r.body);
    }
    let r = call("POST", &format!("/v1/tenants/{t}/pep-logs"), Some(json!({"reports": [{"decision_id": "x", "pep": "p", "outcome": "maybe"}]})));
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some("/reports/0/outcome")), "{}", r.body);

    // Who can do what.
    let (perm, _) = p.write("POST", &format!("/v1/tenants/{t}/permissions"), &op, Some(json!({"name": "notes:read", "resource": "notes", "action": "read"})), 201).await;
    let (role, _) = p.write("POST", &format!("/v1/tenants/{t}/roles"), &op, Some(json!({"name": "reader"})), 201).await;
    p.write("PUT", &format!("/v1/tenants/{t}/roles/{}/permissions/{}", id(&role), id(&perm)), &op, None, 201).await;
    p.write("POST", &format!("/v1/tenants/{t}/assignments"), &op, Some(json!({"role_id": id(&role), "group_id": id(&g)})), 201).await;
    let eff = json_of(&call("GET", &format!("/v1/tenants/{t}/users/{}/effective-permissions", id(&ann)), None));
    let names: Vec<&str> = eff["permissions"].as_array().unwrap_or_else(|| panic!("{eff}")).iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["notes:read"], "{eff}");
    assert_eq!(eff["tenant_permissions"], json!([]));
    let eff_bob = json_of(&call("GET", &format!("/v1/tenants/{t}/users/{}/effective-permissions", id(&bob)), None));
    assert_eq!(eff_bob["permissions"], json!([]));
    assert_eq!(call("GET", &format!("/v1/tenants/{}/users/{}/effective-permissions", id(&other), id(&ann)), None).status, 404);
    let access = format!("/v1/tenants/{t}/access?resource_type=doc&resource_id=d1&permission=view");
    let all = json_of(&call("GET", &access, None));
    let mut holders: Vec<&str> = all["items"].as_array().unwrap().iter().map(|h| h["email"].as_str().unwrap()).collect();
    holders.sort_unstable();
    assert_eq!(holders, ["ann@acme.test", "bob@acme.test"], "{all}");
    let first = json_of(&call("GET", &format!("{access}&limit=1"), None));
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = json_of(&call("GET", &format!("{access}&limit=1&cursor={cursor}"), None));
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_ne!(rest["items"][0]["user_id"], first["items"][0]["user_id"]);
    // An object that is not the tenant's, and a question the PDP refuses.
    let r = call("GET", &format!("/v1/tenants/{t}/access?resource_type=doc&resource_id=nobody&permission=view"), None);
    assert_eq!(r.status, 404, "{}", r.body);
    let r = call("GET", &format!("/v1/tenants/{t}/access?resource_type=doc&resource_id=d1&permission=fly"), None);
    assert_eq!(r.status, 422, "{}", r.body);
    let r = call("GET", &format!("/v1/tenants/{t}/access?resource_type=doc"), None);
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (400, Some("resource_id")), "{}", r.body);
}

/// Bulk provisioning: one NDJSON body makes users, nested groups, memberships, role
/// assignments and ACL entries at one revision, decided by the PDP as the single-row
/// endpoints' rows are; a bad line (a shape, a reference, a duplicate, a cycle, a
/// relation the schema lacks, another tenant's object) names itself and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_provisioning_is_validated_whole_and_fed_at_one_revision() {
    let p = platform("admin_bulk").await;
    let (t, op) = (p.tenant.clone(), p.operator.clone());
    p.write_app_schema().await;
    let (role, _) = p.write("POST", &format!("/v1/tenants/{t}/roles"), &op, Some(json!({"name": "reader"})), 201).await;
    let (perm, _) = p.write("POST", &format!("/v1/tenants/{t}/permissions"), &op, Some(json!({"name": "notes:read", "resource": "notes", "action": "read"})), 201).await;
    let role_id = role["id"].as_str().unwrap().to_string();
    p.write("PUT", &format!("/v1/tenants/{t}/roles/{role_id}/permissions/{}", perm["id"].as_str().unwrap()), &op, None, 201).await;
    let (old, _) = p.write("POST", &format!("/v1/tenants/{t}/users"), &op, Some(json!({"email": "old@acme.test"})), 201).await;
    let old = old["id"].as_str().unwrap().to_string();
    let bulk = |body: String| {
        let headers = vec![("authorization".to_string(), format!("Bearer {op}")), ("content-type".to_string(), "application/x-ndjson".to_string())];
        http_request(&p.admin.addr, "POST", &format!("/v1/tenants/{t}/bulk"), &headers, Some(body.as_bytes())).unwrap()
    };
    let mut lines = Vec::new();
    for i in 0..200 {
        lines.push(json!({"op": "user", "ref": format!("u{i}"), "email": format!("u{i}@acme.test"), "display_name": format!("User {i}")}));
    }
    for g in 0..10 {
        lines.push(json!({"op": "group", "ref": format!("g{g}"), "name": format!("team {g}")}));
    }
    for i in 0..200 {
        lines.push(json!({"op": "member", "group": format!("g{}", i % 10), "user": format!("u{i}")}));
    }
    // g0 contains g1 contains ... g9: nested ten deep.
    for g in 0..9 {
        lines.push(json!({"op": "member", "group": format!("g{g}"), "group_member": format!("g{}", g + 1)}));
    }
    lines.push(json!({"op": "member", "group": "g9", "user": old}));
    lines.push(json!({"op": "assignment", "role_id": role_id, "group": "g0"}));
    for d in 0..50 {
        lines.push(json!({"op": "acl", "resource_type": "doc", "resource_id": format!("d{d}"), "subject_type": "group", "subject": "g5", "relations": ["viewer"]}));
        lines.push(json!({"op": "acl", "resource_type": "doc", "resource_id": format!("d{d}"), "subject_type": "user", "subject": "u3", "relations": ["owner", "viewer"]}));
    }
    let ndjson = |lines: &[Value]| lines.iter().map(Value::to_string).collect::<Vec<_>>().join("\n") + "\n";
    let head_before = p.db_head().await;
    let r = bulk(ndjson(&lines));
    assert_eq!(r.status, 200, "{}", r.body);
    let done = json_of(&r);
    assert_eq!(
        (done["users"].as_i64(), done["groups"].as_i64(), done["members"].as_i64(), done["assignments"].as_i64(), done["acl_entries"].as_i64()),
        (Some(200), Some(10), Some(210), Some(1), Some(100))
    );
    // One revision for all of it, and one audit record.
    assert_eq!(p.db_head().await, head_before + 1);
    let token = r.header("arbiter-revision").unwrap().to_string();
    let pool = p.db.pool().await;
    let user_id = |email: String| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, String>("SELECT id::text FROM arbiter_admin.users WHERE email = $1").bind(email).fetch_one(&pool).await.unwrap() }
    };
    // Decided by the PDP: u105 (in g5) views d7 through g5's entry; `old` (in g9, nested
    // in g0) holds the reader role's permission; u3 owns d1; u4 does not view d1.
    let u105 = user_id("u105@acme.test".into()).await;
    assert!(p.allowed(&format!("doc:d7#view@platform/user:{u105}"), &token).await);
    let u4 = user_id("u4@acme.test".into()).await;
    assert!(!p.allowed(&format!("doc:d1#view@platform/user:{u4}"), &token).await);
    let u3 = user_id("u3@acme.test".into()).await;
    assert!(p.allowed(&format!("doc:d1#view@platform/user:{u3}"), &token).await);
    let granted = format!("platform/permission:{t}_{}#allowed@platform/user:{old}", perm["id"].as_str().unwrap());
    assert!(p.allowed(&granted, &token).await);
    assert!(!p.allowed(&format!("platform/tenant:{t}#view@platform/user:{u4}"), &token).await);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM arbiter_admin.audit_records WHERE action = 'bulk.provision'").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 1);
    let logs: i64 = sqlx::query_scalar("SELECT count(*) FROM arbiter_admin.acl_logs WHERE change_type = 'create'").fetch_one(&pool).await.unwrap();
    assert_eq!(logs, 100);

    // Bad requests name the line and change nothing.
    let head = p.db_head().await;
    let before = p.audit_count().await;
    let cases: Vec<(Vec<Value>, u16, &str)> = vec![
        (vec![json!({"op": "user", "ref": "x", "email": "nope"})], 422, "/0/email"),
        (vec![json!({"op": "user", "ref": "x", "email": "x@acme.test"}), json!({"op": "user", "ref": "x", "email": "y@acme.test"})], 422, "/1/ref"),
        (vec![json!({"op": "user", "ref": "x", "email": "u7@acme.test"})], 409, "/0/email"),
        (vec![json!({"op": "group", "ref": "g", "name": "team 3"})], 409, "/0/name"),
        (vec![json!({"op": "member", "group": "nobody", "user": old})], 422, "/0/group"),
        (vec![json!({"op": "launch"})], 400, "/0/op"),
        (vec![json!({"op": "assignment", "role_id": "00000000-0000-4000-8000-000000000000", "user": old})], 422, "/0/role_id"),
        (vec![json!({"op": "acl", "resource_type": "doc", "resource_id": "z", "subject_type": "user", "subject": old, "relations": ["fly"]})], 422, "/0/relations/0"),
        (vec![json!({"op": "acl", "resource_type": "doc", "resource_id": "z", "subject_type": "user", "subject": old, "relations": ["viewer"]}),
              json!({"op": "acl", "resource_type": "doc", "resource_id": "z", "subject_type": "user", "subject": old, "relations": ["owner"]})], 409, "/1/subject"),
    ];
    for (lines, status, field) in cases {
        let r = bulk(ndjson(&lines));
        assert_eq!((r.status, json_of(&r)["field"].as_str()), (status, Some(field)), "{lines:?}: {}", r.body);
    }
    assert_eq!((p.db_head().await, p.audit_count().await), (head, before), "a refused bulk request changed something");
    // A cycle through the existing nesting: g9 would contain g0, which holds g9.
    let g0: String = sqlx::query_scalar("SELECT id::text FROM arbiter_admin.groups WHERE name = 'team 0'").fetch_one(&pool).await.unwrap();
    let g9: String = sqlx::query_scalar("SELECT id::text FROM arbiter_admin.groups WHERE name = 'team 9'").fetch_one(&pool).await.unwrap();
    let r = bulk(ndjson(&[json!({"op": "user", "ref": "z", "email": "z@acme.test"}), json!({"op": "member", "group": g9, "group_member": g0})]));
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (422, Some("/1/group_member")), "{}", r.body);
    // Another tenant's object.
    let (other, _) = p.write("POST", "/v1/tenants", &op, Some(json!({"slug": "globex", "name": "Globex"})), 201).await;
    let (ou, _) = p.write("POST", &format!("/v1/tenants/{}/users", other["id"].as_str().unwrap()), &op, Some(json!({"email": "o@globex.test"})), 201).await;
    p.write("POST", &format!("/v1/tenants/{}/acl-entries", other["id"].as_str().unwrap()), &op,
        Some(json!({"resource_type": "doc", "resource_id": "theirs", "subject_type": "user", "subject_id": ou["id"], "relations": ["viewer"]})), 201).await;
    let (head, before) = (p.db_head().await, p.audit_count().await);
    let r = bulk(ndjson(&[json!({"op": "acl", "resource_type": "doc", "resource_id": "theirs", "subject_type": "user", "subject": old, "relations": ["viewer"]})]));
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (409, Some("/resource_id")), "{}", r.body);
    // Not NDJSON, and an empty body.
    let headers = vec![("authorization".to_string(), format!("Bearer {op}")), ("content-type".to_string(), "application/json".to_string())];
    let r = http_request(&p.admin.addr, "POST", &format!("/v1/tenants/{t}/bulk"), &headers, Some(b"{}")).unwrap();
    assert_eq!(r.status, 415);
    assert_eq!(bulk(String::new()).status, 400);
    // Bounds: a line longer than 64 KiB, and a body over `--max-bulk-size`.
    let long = format!("{{\"op\":\"group\",\"ref\":\"g\",\"name\":\"{}\"}}\n", "x".repeat(70 * 1024));
    let r = bulk(long);
    assert_eq!((r.status, json_of(&r)["field"].as_str()), (400, Some("/0")), "{}", r.body);
    let small = Admin::start(&p.db, &p.pdp, &["--max-bulk-size", "4096", "--jobs-interval", "3600"]);
    let headers = vec![("authorization".to_string(), format!("Bearer {op}")), ("content-type".to_string(), "application/x-ndjson".to_string())];
    let body = ndjson(&(0..100).map(|i| json!({"op": "user", "ref": format!("b{i}"), "email": format!("b{i}@acme.test")})).collect::<Vec<_>>());
    let r = http_request(&small.addr, "POST", &format!("/v1/tenants/{t}/bulk"), &headers, Some(body.as_bytes())).unwrap();
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!((p.db_head().await, p.audit_count().await), (head, before), "a refused bulk request changed something");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM arbiter_admin.users WHERE email IN ('x@acme.test', 'z@acme.test')").fetch_one(&pool).await.unwrap();
    assert_eq!(users, 0);
}

/// A relationship write reads the live schema without a lock (writes take the revision
/// counter's lock only from their write to their commit), so a schema that lands between
/// its check and its write must refuse it: 409, nothing written. A schema that landed
/// before the check does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_checked_against_a_replaced_schema_is_refused() {
    use arbiter_admin::db::{Db, Scope};
    let p = platform("admin_schema_race").await;
    let tenant: sqlx::types::Uuid = p.tenant.parse().unwrap();
    let db = Db::connect(&p.db.url).await.unwrap();
    let pool = p.db.pool().await;
    let relationships = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM relationships WHERE resource_id = 'race'").fetch_one(&pool).await.unwrap()
    };
    let rewrite_schema = || async {
        sqlx::query("SELECT arbiter_write_schema((SELECT schema_text FROM arbiter_schema))").execute(&pool).await.unwrap();
    };

    // Checked, then the schema is replaced (by the same text, at a new revision), then written.
    let mut tx = db.begin(Scope::Tenant(tenant)).await.unwrap();
    arbiter_admin::model::live_schema(&mut tx, "/resource_type").await.unwrap();
    rewrite_schema().await;
    tx.feed.touch("platform/tenant:race", "member", &arbiter_admin::feed::user(sqlx::types::Uuid::new_v4()));
    let refused = tx.flush("test").await.unwrap_err();
    assert_eq!(refused.status_code(), 409, "{refused:?}");
    drop(tx);
    assert_eq!(relationships().await, 0, "a refused write changed nothing");

    // Replaced first, then checked and written: accepted.
    rewrite_schema().await;
    let mut tx = db.begin(Scope::Tenant(tenant)).await.unwrap();
    arbiter_admin::model::live_schema(&mut tx, "/resource_type").await.unwrap();
    tx.feed.touch("platform/tenant:race", "member", &arbiter_admin::feed::user(sqlx::types::Uuid::new_v4()));
    assert!(tx.flush("test").await.unwrap().is_some());
    tx.commit().await.unwrap();
    assert_eq!(relationships().await, 1);
}

/// `arbiter_write_bulk` sorts its changes and drops repeats unless its caller says it
/// has (the admin does); a caller that says so and repeats a change gets an error, and
/// nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulk_write_function_sorts_unless_told_its_changes_are_sorted() {
    let p = platform("admin_bulk_fn").await;
    let pool = p.db.pool().await;
    let t = &p.tenant;
    let users = ["c", "a", "b", "a"].map(|u| format!("0000000{u}-0000-4000-8000-000000000000"));
    let written = |revision: i64| {
        let pool = pool.clone();
        async move {
            let changes: i64 = sqlx::query_scalar("SELECT count(*) FROM arbiter_changelog WHERE revision = $1").bind(revision).fetch_one(&pool).await.unwrap();
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM relationships WHERE created_revision = $1").bind(revision).fetch_one(&pool).await.unwrap();
            (changes, rows)
        }
    };

    // Told they are sorted, with a repeat: refused whole.
    let mut tx = pool.begin().await.unwrap();
    fill_bulk_changes(&mut tx, t, &users).await;
    let err = sqlx::query_scalar::<_, i64>("SELECT arbiter_write_bulk('{}', sorted => true)").fetch_one(&mut *tx).await.unwrap_err();
    assert!(err.to_string().contains("cannot affect row a second time"), "{err}");
    drop(tx);
    let head: i64 = sqlx::query_scalar("SELECT revision FROM arbiter_revision").fetch_one(&pool).await.unwrap();
    assert_eq!(written(head + 1).await, (0, 0));

    // Not told: sorted and each change once, at one revision.
    let mut tx = pool.begin().await.unwrap();
    fill_bulk_changes(&mut tx, t, &users).await;
    let revision: i64 = sqlx::query_scalar("SELECT arbiter_write_bulk('{}')").fetch_one(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(written(revision).await, (3, 3));
    let order: Vec<String> = sqlx::query_scalar("SELECT subject_id FROM arbiter_changelog WHERE revision = $1 ORDER BY seq")
        .bind(revision)
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
}

/// `arbiter_bulk_changes` holding `tenant`'s membership for each of `users`, in order.
async fn fill_bulk_changes(tx: &mut sqlx::PgConnection, tenant: &str, users: &[String]) {
    sqlx::query("CREATE TEMP TABLE arbiter_bulk_changes (resource_type text, resource_id text, relation text, subject_type text, subject_id text, subject_relation text) ON COMMIT DROP")
        .execute(&mut *tx)
        .await
        .unwrap();
    for u in users {
        sqlx::query("INSERT INTO arbiter_bulk_changes VALUES ('platform/tenant', $1, 'member', 'platform/user', $2, NULL)")
            .bind(tenant)
            .bind(u)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
}
