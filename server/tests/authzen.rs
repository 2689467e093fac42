//! The AuthZEN Authorization API 1.0 against the real server, through a small HTTP/1.1
//! client written from the spec: single and boxcarred evaluations (defaults, overrides,
//! the three `evaluations_semantic`s), the subject / resource / action searches paged one
//! result at a time, `properties` and `context` reaching Cedar policies, the metadata
//! document, `X-Request-ID` echoing, the 400s and 401s, and caveated (conditional) answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::path::Path;

use common::{Reply, Server};
use serde_json::{json, Value};

const SCHEMA: &str = r#"
definition user {}

definition team {
    relation member: user
}

definition doc {
    relation owner: user
    relation viewer: user | user:* | team#member
    relation banned: user
    permission edit = owner
    permission view = (viewer + edit) - banned
}
"#;

const RELATIONSHIPS: &[&str] = &[
    "doc:1#owner@user:ann",
    "doc:1#viewer@user:bob",
    "doc:2#viewer@team:eng#member",
    "team:eng#member@user:cat",
    "team:eng#member@user:dan",
    "doc:3#viewer@user:*",
    "doc:3#banned@user:eve",
    "doc:4#viewer@user:ann",
    "doc:5#viewer@user:ann",
    "doc:6#owner@user:ann",
];

/// A clearance, an ip and a classification that requests supply (AuthZEN `properties`),
/// and a suspension that only the attribute store holds.
const ATTRIBUTES: &str = "types:
  user:
    clearance?: {type: long, source: request}
    ip?: {type: ip, source: request}
    suspended?: bool
  doc:
    classification?: {type: long, source: request}
context:
  hour?: long
";

const POLICIES: &str = r#"
@id("clearance")
forbid(principal, action == Action::"view", resource is doc)
when { resource has classification && !(principal has clearance && principal.clearance >= resource.classification) };

@id("office-hours")
forbid(principal, action == Action::"edit", resource)
when { context has hour && (context.hour < 8 || context.hour > 18) };

@id("office-network")
permit(principal, action == Action::"view", resource == doc::"lobby")
when { principal has ip && principal.ip.isInRange(ip("10.0.0.0/8")) };

@id("suspended-accounts")
forbid(principal is user, action, resource)
when { principal has suspended && principal.suspended };
"#;

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// The message of an AuthZEN error body, checking its shape.
    fn error(&self) -> String {
        assert_eq!(self.header("content-type"), Some("application/json"), "{self:?}");
        let body = self.json();
        assert_eq!(body["error"]["status"], self.status, "{body}");
        body["error"]["message"].as_str().unwrap_or_else(|| panic!("no message: {body}")).to_string()
    }
}

/// A client of one server's HTTP port, written from the spec's HTTPS binding.
struct Client {
    addr: String,
    key: Option<String>,
}

impl Client {
    fn new(server: &Server) -> Client {
        Client { addr: server.http.clone(), key: server.key.clone() }
    }

    /// A raw request: `extra` headers as given, the key as a bearer token if set, a body
    /// as JSON.
    fn send(&self, method: &str, path: &str, extra: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
        let mut headers: Vec<(String, String)> = Vec::new();
        if let Some(k) = &self.key {
            headers.push(("authorization".into(), format!("Bearer {k}")));
        }
        headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        if body.is_some() {
            headers.push(("content-type".into(), "application/json".into()));
        }
        common::http_request(&self.addr, method, path, &headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn post(&self, path: &str, body: &Value) -> Reply {
        self.send("POST", path, &[], Some(body.to_string().as_bytes()))
    }

    /// POSTs and expects a 200 JSON answer.
    fn ok(&self, path: &str, body: &Value) -> Value {
        let r = self.post(path, body);
        assert_eq!(r.status, 200, "{path} {body}: {r:?}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
        r.json()
    }

    fn decide(&self, body: &Value) -> bool {
        let answer = self.ok("/access/v1/evaluation", body);
        answer["decision"].as_bool().unwrap_or_else(|| panic!("no decision: {answer}"))
    }

    /// Every result of a search, following `page.next_token` with `limit` per page.
    fn search_all(&self, path: &str, query: &Value, limit: Option<u64>) -> (Vec<Value>, usize) {
        let mut results = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let mut q = query.clone();
            let mut page = json!({});
            if let Some(l) = limit {
                page["limit"] = json!(l);
            }
            if !token.is_empty() {
                page["token"] = json!(token);
            }
            q["page"] = page;
            let answer = self.ok(path, &q);
            pages += 1;
            let got = answer["results"].as_array().unwrap_or_else(|| panic!("no results: {answer}")).clone();
            if let Some(l) = limit {
                assert!(got.len() as u64 <= l, "page larger than {l}: {answer}");
            }
            assert_eq!(answer["page"]["count"], got.len(), "{answer}");
            results.extend(got);
            token = answer["page"]["next_token"].as_str().unwrap_or_else(|| panic!("no next_token: {answer}")).to_string();
            if token.is_empty() {
                return (results, pages);
            }
            assert!(pages < 100, "paging does not end");
        }
    }
}

fn subject(t: &str, id: &str) -> Value {
    json!({"type": t, "id": id})
}

fn eval(sub: &str, action: &str, res: &str) -> Value {
    let (st, sid) = sub.split_once(':').unwrap();
    let (rt, rid) = res.split_once(':').unwrap();
    json!({"subject": subject(st, sid), "action": {"name": action}, "resource": subject(rt, rid)})
}

fn ids(results: &[Value]) -> Vec<String> {
    results.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

fn names(results: &[Value]) -> Vec<String> {
    results.iter().map(|r| r["name"].as_str().unwrap().to_string()).collect()
}

/// A server with the schema, relationships, attribute declarations and policies above.
fn start(dir: &Path, files: &Path, extra: &[&str]) -> Server {
    std::fs::write(files.join("schema.zed"), SCHEMA).unwrap();
    std::fs::write(files.join("attributes.yaml"), ATTRIBUTES).unwrap();
    std::fs::write(files.join("policies.cedar"), POLICIES).unwrap();
    let schema = files.join("schema.zed");
    let mut args = vec!["--schema", schema.to_str().unwrap()];
    args.extend_from_slice(extra);
    let server = Server::start(dir, &args);
    let attributes = files.join("attributes.yaml");
    let (code, _, err) = server.cli(&["attributes", "define", attributes.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let policies = files.join("policies.cedar");
    let (code, _, err) = server.cli(&["policy", "write", policies.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let mut write = vec!["write"];
    write.extend_from_slice(RELATIONSHIPS);
    let (code, _, err) = server.cli(&write);
    assert_eq!(code, 0, "{err}");
    server
}

#[test]
fn evaluations_one_at_a_time_and_boxcarred() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let server = start(dir.path(), files.path(), &[]);
    let c = Client::new(&server);

    // Single evaluations: allowed and denied are both 200s.
    assert!(c.decide(&eval("user:ann", "edit", "doc:1")));
    assert!(c.decide(&eval("user:bob", "view", "doc:1")));
    assert!(!c.decide(&eval("user:bob", "edit", "doc:1")));
    assert!(c.decide(&eval("user:cat", "view", "doc:2")), "through team:eng#member");
    assert!(c.decide(&eval("user:zed", "view", "doc:3")), "through user:*");
    assert!(!c.decide(&eval("user:eve", "view", "doc:3")), "banned");
    assert!(!c.decide(&eval("user:ann", "view", "doc:nobody-wrote")));
    // A relation is an action too.
    assert!(c.decide(&eval("user:ann", "owner", "doc:1")));
    // The spec's example shape: action properties are accepted (and ignored).
    let mut with_props = eval("user:ann", "view", "doc:1");
    with_props["action"]["properties"] = json!({"method": "GET"});
    assert!(c.decide(&with_props));
    // What the schema does not define is the caller's mistake: a 400 naming it.
    let r = c.post("/access/v1/evaluation", &eval("user:ann", "destroy", "doc:1"));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("`destroy`"), "{r:?}");
    let r = c.post("/access/v1/evaluation", &eval("robot:r2", "view", "doc:1"));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("`robot`"), "{r:?}");

    // A batch with defaults: the top-level subject, action and context apply to every
    // item that does not name its own, and an item's own key replaces the default whole.
    let batch = json!({
        "subject": subject("user", "ann"),
        "action": {"name": "view"},
        "evaluations": [
            {"resource": subject("doc", "1")},
            {"resource": subject("doc", "2")},
            {"resource": subject("doc", "1"), "subject": subject("user", "bob"), "action": {"name": "edit"}},
            {"resource": subject("doc", "4")},
            {"resource": subject("doc", "1"), "action": {"name": "destroy"}},
            {"resource": subject("doc", "2"), "subject": subject("user", "dan")},
        ],
    });
    let answer = c.ok("/access/v1/evaluations", &batch);
    let results = answer["evaluations"].as_array().unwrap();
    let decisions: Vec<bool> = results.iter().map(|r| r["decision"].as_bool().unwrap()).collect();
    assert_eq!(decisions, [true, false, false, true, false, true], "{answer}");
    assert!(answer.get("decision").is_none(), "the batch answer has no top-level decision: {answer}");
    // The failing item is denied with its error; the others are answered.
    assert_eq!(results[4]["context"]["error"]["status"], 400, "{answer}");
    assert!(results[4]["context"]["error"]["message"].as_str().unwrap().contains("`destroy`"), "{answer}");

    // The three semantics over the same items: true, false, true.
    let items = json!([
        {"resource": subject("doc", "1")},
        {"resource": subject("doc", "2")},
        {"resource": subject("doc", "4")},
    ]);
    let run = |semantic: Option<&str>| -> Vec<bool> {
        let mut b = json!({"subject": subject("user", "ann"), "action": {"name": "view"}, "evaluations": items});
        if let Some(s) = semantic {
            b["options"] = json!({"evaluations_semantic": s});
        }
        let answer = c.ok("/access/v1/evaluations", &b);
        answer["evaluations"].as_array().unwrap().iter().map(|r| r["decision"].as_bool().unwrap()).collect()
    };
    assert_eq!(run(None), [true, false, true]);
    assert_eq!(run(Some("execute_all")), [true, false, true]);
    // Deny on first deny stops at the denial: fewer results than items.
    assert_eq!(run(Some("deny_on_first_deny")), [true, false]);
    // Permit on first permit stops at the first permit.
    assert_eq!(run(Some("permit_on_first_permit")), [true]);
    let all_denied = json!({
        "subject": subject("user", "eve"), "action": {"name": "edit"},
        "options": {"evaluations_semantic": "permit_on_first_permit"},
        "evaluations": [{"resource": subject("doc", "1")}, {"resource": subject("doc", "2")}],
    });
    assert_eq!(c.ok("/access/v1/evaluations", &all_denied)["evaluations"].as_array().unwrap().len(), 2);
    // An error counts as a denial for deny_on_first_deny.
    let erroring = json!({
        "subject": subject("user", "ann"),
        "options": {"evaluations_semantic": "deny_on_first_deny"},
        "evaluations": [
            {"action": {"name": "view"}, "resource": subject("doc", "1")},
            {"action": {"name": "destroy"}, "resource": subject("doc", "1")},
            {"action": {"name": "view"}, "resource": subject("doc", "4")},
        ],
    });
    let answer = c.ok("/access/v1/evaluations", &erroring);
    assert_eq!(answer["evaluations"].as_array().unwrap().len(), 2, "{answer}");
    assert_eq!(answer["evaluations"][1]["decision"], false);

    // Without an evaluations array the endpoint answers like the single one.
    let single = c.ok("/access/v1/evaluations", &eval("user:ann", "view", "doc:1"));
    assert_eq!(single, json!({"decision": true}));
    let mut empty = eval("user:bob", "edit", "doc:1");
    empty["evaluations"] = json!([]);
    assert_eq!(c.ok("/access/v1/evaluations", &empty), json!({"decision": false}));

    // Batch mistakes are 400s naming the item.
    for (body, needle) in [
        (json!({"evaluations": [{"resource": subject("doc", "1")}]}), "`evaluations[0].subject` is required"),
        (
            json!({"subject": subject("user", "ann"), "action": {"name": "view"},
                   "evaluations": [{"resource": subject("doc", "1")}, {"resource": {"type": "doc"}}]}),
            "`evaluations[1].resource.id` is required",
        ),
        (
            json!({"subject": subject("user", "ann"), "action": {"name": "view"}, "resource": subject("doc", "1"),
                   "options": {"evaluations_semantic": "all_of_them"}, "evaluations": [{}]}),
            "`all_of_them`",
        ),
        (json!({"evaluations": {"resource": subject("doc", "1")}}), "`evaluations` must be an array"),
    ] {
        let r = c.post("/access/v1/evaluations", &body);
        assert_eq!(r.status, 400, "{body}: {r:?}");
        let m = r.error();
        assert!(m.contains(needle), "{body}: {m}");
    }
    // More items than --max-bulk-checks allows.
    let many: Vec<Value> = (0..1001).map(|i| json!({"resource": subject("doc", &i.to_string())})).collect();
    let r = c.post(
        "/access/v1/evaluations",
        &json!({"subject": subject("user", "ann"), "action": {"name": "view"}, "evaluations": many}),
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("--max-bulk-checks"), "{r:?}");

    // The metadata document, built from the request's Host.
    let r = c.send("GET", "/.well-known/authzen-configuration", &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let base = format!("http://{}", server.http);
    assert_eq!(
        r.json(),
        json!({
            "policy_decision_point": base,
            "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
            "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
            "search_subject_endpoint": format!("{base}/access/v1/search/subject"),
            "search_resource_endpoint": format!("{base}/access/v1/search/resource"),
            "search_action_endpoint": format!("{base}/access/v1/search/action"),
        })
    );
    // Every endpoint it names answers.
    for (_, url) in r.json().as_object().unwrap().iter().filter(|(k, _)| k.ends_with("_endpoint")) {
        let path = url.as_str().unwrap().strip_prefix(&base).unwrap().to_string();
        let r = c.post(&path, &json!({}));
        assert_eq!(r.status, 400, "{path}: {r:?}");
    }
    // AuthZEN requests show in the metrics by route and status.
    let (_, metrics) = server.http_get("/metrics", None);
    assert!(metrics.contains("arbiter_http_requests_total{route=\"evaluations\",status=\"200\"}"), "{metrics}");
    assert!(metrics.contains("arbiter_http_requests_total{route=\"evaluation\",status=\"400\"}"), "{metrics}");
}

#[test]
fn searches_page_through_the_whole_answer() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let server = start(dir.path(), files.path(), &[]);
    let c = Client::new(&server);

    // Subject search: transitive through the team; the subject id, if sent, is ignored.
    let q = json!({"subject": {"type": "user", "id": "ignored"}, "action": {"name": "view"}, "resource": subject("doc", "2")});
    let whole = c.ok("/access/v1/search/subject", &q);
    assert_eq!(whole["results"], json!([subject("user", "cat"), subject("user", "dan")]), "{whole}");
    assert_eq!(whole["page"], json!({"next_token": "", "count": 2}));
    for (doc, want) in [("1", vec!["ann", "bob"]), ("2", vec!["cat", "dan"])] {
        let q = json!({"subject": {"type": "user"}, "action": {"name": "view"}, "resource": subject("doc", doc)});
        let (paged, pages) = c.search_all("/access/v1/search/subject", &q, Some(1));
        assert_eq!(ids(&paged), want);
        assert_eq!(pages, 2);
        // Every result, fed back as an evaluation, is allowed.
        for s in &paged {
            assert!(c.decide(&json!({"subject": s, "action": {"name": "view"}, "resource": subject("doc", doc)})));
        }
    }
    // A wildcard is reported as `*` with the ids it leaves out.
    let q = json!({"subject": {"type": "user"}, "action": {"name": "view"}, "resource": subject("doc", "3")});
    let answer = c.ok("/access/v1/search/subject", &q);
    assert_eq!(answer["results"], json!([{"type": "user", "id": "*", "properties": {"excluded_ids": ["eve"]}}]));

    // Resource search, whole and one at a time.
    let q = json!({"subject": subject("user", "ann"), "action": {"name": "view"}, "resource": {"type": "doc"}});
    let (whole, pages) = c.search_all("/access/v1/search/resource", &q, None);
    assert_eq!(pages, 1);
    assert_eq!(ids(&whole), ["1", "3", "4", "5", "6"], "owner, wildcard, viewer, viewer, owner");
    assert!(whole.iter().all(|r| r["type"] == "doc"));
    let (paged, pages) = c.search_all("/access/v1/search/resource", &q, Some(1));
    assert_eq!(paged, whole);
    assert_eq!(pages, 5);
    let (paged, pages) = c.search_all("/access/v1/search/resource", &q, Some(2));
    assert_eq!((paged, pages), (whole.clone(), 3));
    for r in &whole {
        assert!(c.decide(&json!({"subject": subject("user", "ann"), "action": {"name": "view"}, "resource": r})));
    }
    // A grant only a Cedar permit gives is not enumerated (doc:lobby needs an ip).
    assert!(!ids(&whole).contains(&"lobby".to_string()));

    // Action search: the permissions and relations of the resource's type, by name.
    let q = json!({"subject": subject("user", "ann"), "resource": subject("doc", "1")});
    let (whole, _) = c.search_all("/access/v1/search/action", &q, None);
    assert_eq!(names(&whole), ["edit", "owner", "view"]);
    let (paged, pages) = c.search_all("/access/v1/search/action", &q, Some(1));
    assert_eq!((names(&paged), pages), (names(&whole), 3));
    // A relation counts through subject sets, as in a Check.
    let q = json!({"subject": subject("user", "cat"), "resource": subject("doc", "2")});
    assert_eq!(names(&c.search_all("/access/v1/search/action", &q, Some(1)).0), ["view", "viewer"]);
    let q = json!({"subject": subject("user", "nobody"), "resource": subject("doc", "1")});
    let answer = c.ok("/access/v1/search/action", &q);
    assert_eq!(answer, json!({"results": [], "page": {"next_token": "", "count": 0}}));

    // A token continues only the search that returned it; a mangled one is refused.
    let q = json!({"subject": subject("user", "ann"), "action": {"name": "view"}, "resource": {"type": "doc"}, "page": {"limit": 1}});
    let first = c.ok("/access/v1/search/resource", &q);
    let token = first["page"]["next_token"].as_str().unwrap().to_string();
    assert!(!token.is_empty());
    let mut other = q.clone();
    other["subject"] = subject("user", "bob");
    other["page"]["token"] = json!(token);
    let r = c.post("/access/v1/search/resource", &other);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("different search"), "{r:?}");
    let mut action = json!({"subject": subject("user", "ann"), "resource": subject("doc", "1")});
    action["page"] = json!({"token": token});
    assert_eq!(c.post("/access/v1/search/action", &action).status, 400);
    let mut mangled = q.clone();
    mangled["page"]["token"] = json!("not-a-token");
    let r = c.post("/access/v1/search/resource", &mangled);
    assert_eq!(r.status, 400);
    assert!(r.error().contains("page.token"), "{r:?}");

    // Search mistakes are 400s naming the field.
    for (path, body, needle) in [
        ("/access/v1/search/subject", json!({"action": {"name": "view"}, "resource": subject("doc", "1")}), "`subject` is required"),
        ("/access/v1/search/subject", json!({"subject": {"type": "user"}, "action": {"name": "view"}, "resource": {"type": "doc"}}), "`resource.id` is required"),
        ("/access/v1/search/resource", json!({"subject": {"type": "user"}, "action": {"name": "view"}, "resource": {"type": "doc"}}), "`subject.id` is required"),
        ("/access/v1/search/resource", json!({"subject": subject("user", "ann"), "action": {"name": "view"}, "resource": {"type": "doc"}, "page": {"limit": -1}}), "`page.limit`"),
        ("/access/v1/search/action", json!({"subject": subject("user", "ann"), "resource": {"type": "doc"}}), "`resource.id` is required"),
        ("/access/v1/search/action", json!({"subject": subject("user", "ann"), "resource": subject("folder", "1")}), "`folder`"),
        ("/access/v1/search/resource", json!({"subject": subject("user", "ann"), "action": {"name": "read"}, "resource": {"type": "doc"}}), "`read`"),
    ] {
        let r = c.post(path, &body);
        assert_eq!(r.status, 400, "{path} {body}: {r:?}");
        let m = r.error();
        assert!(m.contains(needle), "{path} {body}: {m}");
    }
}

#[test]
fn properties_and_context_reach_cedar() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let server = start(dir.path(), files.path(), &[]);
    let c = Client::new(&server);
    let with = |sub_props: Value, res_props: Value, context: Value, action: &str, res: &str| {
        let mut e = eval("user:ann", action, res);
        if !sub_props.is_null() {
            e["subject"]["properties"] = sub_props;
        }
        if !res_props.is_null() {
            e["resource"]["properties"] = res_props;
        }
        if !context.is_null() {
            e["context"] = context;
        }
        e
    };
    let n = Value::Null;

    // Resource properties: a classification the subject's clearance must reach.
    assert!(c.decide(&with(n.clone(), n.clone(), n.clone(), "view", "doc:1")));
    assert!(!c.decide(&with(n.clone(), json!({"classification": 2}), n.clone(), "view", "doc:1")));
    assert!(c.decide(&with(json!({"clearance": 3}), json!({"classification": 2}), n.clone(), "view", "doc:1")));
    assert!(!c.decide(&with(json!({"clearance": 1}), json!({"classification": 2}), n.clone(), "view", "doc:1")));
    // Subject properties: an ip (a plain string, as the spec writes it) in a permit.
    assert!(!c.decide(&with(n.clone(), n.clone(), n.clone(), "view", "doc:lobby")));
    assert!(c.decide(&with(json!({"ip": "10.1.2.3"}), n.clone(), n.clone(), "view", "doc:lobby")));
    assert!(!c.decide(&with(json!({"ip": "192.168.1.1"}), n.clone(), n.clone(), "view", "doc:lobby")));
    // Context: the office-hours forbid on edit.
    assert!(c.decide(&with(n.clone(), n.clone(), n.clone(), "edit", "doc:1")));
    assert!(c.decide(&with(n.clone(), n.clone(), json!({"hour": 10}), "edit", "doc:1")));
    assert!(!c.decide(&with(n.clone(), n.clone(), json!({"hour": 23}), "edit", "doc:1")));
    // Keys no declaration names are left out.
    assert!(c.decide(&with(json!({"department": "sales"}), json!({"colour": "red"}), json!({"tz": "UTC"}), "edit", "doc:1")));
    // A declared key of the wrong type is a 400 naming it (when a policy may read it).
    for (sub_props, res_props, context, action, needle) in [
        (json!({"clearance": "high"}), n.clone(), n.clone(), "view", "clearance"),
        (json!({"ip": "not-an-ip"}), n.clone(), n.clone(), "view", "ip"),
        (n.clone(), json!({"classification": 1.5}), n.clone(), "view", "classification"),
        (n.clone(), n.clone(), json!({"hour": "late"}), "edit", "hour"),
    ] {
        let r = c.post("/access/v1/evaluation", &with(sub_props, res_props, context, action, "doc:1"));
        assert_eq!(r.status, 400, "{r:?}");
        let m = r.error();
        assert!(m.contains(needle), "{m}");
    }
    // Nothing was stored: the plain question is answered as before.
    assert!(c.decide(&with(n.clone(), n.clone(), n.clone(), "view", "doc:1")));

    // A stored attribute is the store's alone: a request that supplies one is refused,
    // naming it, so no caller can lift a suspension by sending `{"suspended": false}`.
    let (code, _, err) = server.cli(&["attributes", "set", "user:bob", r#"{"suspended": true}"#]);
    assert_eq!(code, 0, "{err}");
    assert!(!c.decide(&eval("user:bob", "view", "doc:1")), "bob is suspended");
    for (side, props) in [("subject", json!({"suspended": false})), ("subject", json!({"suspended": false, "clearance": 9}))] {
        let mut e = eval("user:bob", "view", "doc:1");
        e[side]["properties"] = props;
        let r = c.post("/access/v1/evaluation", &e);
        assert_eq!(r.status, 400, "{r:?}");
        let m = r.error();
        assert!(m.contains("`suspended` is a stored attribute") && m.contains("user:bob"), "{m}");
    }
    // Nor through a batch item or a search: the item fails alone, the search is refused.
    let answer = c.ok(
        "/access/v1/evaluations",
        &json!({"evaluations": [
            {"subject": {"type": "user", "id": "bob", "properties": {"suspended": false}}, "action": {"name": "view"}, "resource": subject("doc", "1")},
            {"subject": subject("user", "ann"), "action": {"name": "view"}, "resource": subject("doc", "1")},
        ]}),
    );
    assert_eq!(answer["evaluations"][0]["decision"], false, "{answer}");
    assert_eq!(answer["evaluations"][0]["context"]["error"]["status"], 400, "{answer}");
    assert_eq!(answer["evaluations"][1]["decision"], true, "{answer}");
    let search = json!({"subject": {"type": "user", "id": "bob", "properties": {"suspended": false}},
                        "action": {"name": "view"}, "resource": {"type": "doc"}});
    let r = c.post("/access/v1/search/resource", &search);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("`suspended` is a stored attribute"), "{r:?}");
    let (code, _, err) = server.cli(&["attributes", "delete", "user:bob"]);
    assert_eq!(code, 0, "{err}");

    // In a batch, the top-level context is the default and an item's replaces it.
    let answer = c.ok(
        "/access/v1/evaluations",
        &json!({
            "subject": subject("user", "ann"), "action": {"name": "edit"}, "context": {"hour": 23},
            "evaluations": [
                {"resource": subject("doc", "1")},
                {"resource": subject("doc", "1"), "context": {"hour": 9}},
                {"resource": subject("doc", "6"), "context": {}},
            ],
        }),
    );
    let decisions: Vec<&Value> = answer["evaluations"].as_array().unwrap().iter().map(|r| &r["decision"]).collect();
    assert_eq!(decisions, [false, true, true], "{answer}");

    // Searches honour them too: what the lookup finds is checked with them.
    let q = |sub_props: Value, res_props: Value| {
        let mut q = json!({"subject": subject("user", "ann"), "action": {"name": "view"}, "resource": {"type": "doc"}});
        if !sub_props.is_null() {
            q["subject"]["properties"] = sub_props;
        }
        if !res_props.is_null() {
            q["resource"]["properties"] = res_props;
        }
        q
    };
    let plain = c.search_all("/access/v1/search/resource", &q(n.clone(), n.clone()), None).0;
    assert_eq!(ids(&plain).len(), 5);
    let classified = c.search_all("/access/v1/search/resource", &q(n.clone(), json!({"classification": 2})), Some(2)).0;
    assert!(classified.is_empty(), "{classified:?}");
    let cleared = c.search_all("/access/v1/search/resource", &q(json!({"clearance": 5}), json!({"classification": 2})), Some(2)).0;
    assert_eq!(cleared, plain);
    let late = json!({"subject": subject("user", "ann"), "resource": subject("doc", "1"), "context": {"hour": 23}});
    assert_eq!(names(&c.search_all("/access/v1/search/action", &late, None).0), ["owner", "view"]);
    let sub = json!({"subject": {"type": "user"}, "action": {"name": "view"},
                     "resource": {"type": "doc", "id": "1", "properties": {"classification": 1}},
                     "context": {"hour": 12}});
    assert!(c.search_all("/access/v1/search/subject", &sub, None).0.is_empty());
}

#[test]
fn keys_request_ids_bad_bodies_and_a_configured_base() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        files.path(),
        &["--preshared-key", "s3cret", "--authzen-base-url", "https://pdp.example.com/", "--max-message-size", "8192"],
    );
    let c = Client::new(&server);
    let anonymous = Client { addr: server.http.clone(), key: None };
    let wrong = Client { addr: server.http.clone(), key: Some("guess".into()) };
    let rid = [("x-request-id", "bfe9eb29-ab87-4ca3-be83-a1d5d8305716")];
    let body = eval("user:ann", "view", "doc:1").to_string();

    // The key: missing or wrong is a JSON 401 (with the request id echoed).
    for (client, needle) in [(&anonymous, "missing"), (&wrong, "invalid")] {
        for (method, path) in [
            ("POST", "/access/v1/evaluation"),
            ("POST", "/access/v1/evaluations"),
            ("POST", "/access/v1/search/subject"),
            ("POST", "/access/v1/search/resource"),
            ("POST", "/access/v1/search/action"),
            ("GET", "/.well-known/authzen-configuration"),
        ] {
            let r = client.send(method, path, &rid, (method == "POST").then_some(body.as_bytes()));
            assert_eq!(r.status, 401, "{path}: {r:?}");
            assert!(r.error().contains(needle), "{r:?}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            assert_eq!(r.header("x-request-id"), Some(rid[0].1), "{r:?}");
        }
    }
    // With the key: the answer, and the request id echoed.
    let r = c.send("POST", "/access/v1/evaluation", &rid, Some(body.as_bytes()));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), json!({"decision": true}));
    assert_eq!(r.header("x-request-id"), Some(rid[0].1));
    // No request id, none echoed.
    let r = c.send("POST", "/access/v1/evaluation", &[], Some(body.as_bytes()));
    assert_eq!(r.header("x-request-id"), None);
    // Health probes stay open and echo the id too.
    let r = anonymous.send("GET", "/healthz", &rid, None);
    assert_eq!((r.status, r.header("x-request-id")), (200, Some(rid[0].1)));

    // Malformed bodies: 400s with a JSON error naming the problem, id echoed.
    for (raw, needle) in [
        (&b""[..], "empty"),
        (&b"{\"subject\": "[..], "not valid JSON"),
        (&b"[]"[..], "JSON object"),
        (&b"{\"subject\": {\"type\": \"user\", \"id\": \"ann\"}, \"action\": {\"name\": \"view\"}}"[..], "`resource` is required"),
        (&b"{\"subject\": {\"type\": \"user\", \"id\": 1}, \"action\": {\"name\": \"view\"}, \"resource\": {\"type\": \"doc\", \"id\": \"1\"}}"[..], "`subject.id` must be a string"),
        (&b"{\"subject\": {\"type\": \"user\", \"id\": \"ann\"}, \"action\": \"view\", \"resource\": {\"type\": \"doc\", \"id\": \"1\"}}"[..], "`action` must be a JSON object"),
        (&b"{\"subject\": {\"type\": \"user\", \"id\": \"ann\"}, \"action\": {\"name\": \"view\"}, \"resource\": {\"type\": \"doc\", \"id\": \"1\"}, \"context\": [1]}"[..], "`context` must be a JSON object"),
        (&b"{\"subject\": {\"type\": \"user\", \"id\": \"a b\"}, \"action\": {\"name\": \"view\"}, \"resource\": {\"type\": \"doc\", \"id\": \"1\"}}"[..], "subject"),
    ] {
        let r = c.send("POST", "/access/v1/evaluation", &rid, Some(raw));
        assert_eq!(r.status, 400, "{}: {r:?}", String::from_utf8_lossy(raw));
        let m = r.error();
        assert!(m.contains(needle), "{}: {m}", String::from_utf8_lossy(raw));
        assert_eq!(r.header("x-request-id"), Some(rid[0].1));
    }
    // An oversized body names the limit.
    let huge = format!("{{\"context\": {{\"pad\": \"{}\"}}}}", "x".repeat(20_000));
    let r = c.send("POST", "/access/v1/evaluation", &[], Some(huge.as_bytes()));
    assert_eq!(r.status, 400);
    assert!(r.error().contains("--max-message-size"), "{r:?}");

    // The configured base names the PDP, whatever the Host.
    let r = c.send("GET", "/.well-known/authzen-configuration", &rid, None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-request-id"), Some(rid[0].1));
    let meta = r.json();
    assert_eq!(meta["policy_decision_point"], "https://pdp.example.com");
    assert_eq!(meta["access_evaluation_endpoint"], "https://pdp.example.com/access/v1/evaluation");
    assert_eq!(meta["search_action_endpoint"], "https://pdp.example.com/access/v1/search/action");

    // A base that is not an http(s) URL stops the server at start.
    let other = tempfile::tempdir().unwrap();
    let failed = Server::try_start(other.path(), &["--authzen-base-url", "pdp.example.com"]);
    assert!(failed.is_err(), "started with a bad base URL");
}

/// The README's AuthZEN section.
/// A caveated grant: a conditional answer is a denial that names the parameters it
/// waits on, in single and boxcarred evaluations (short-circuited ones too), and
/// searches leave conditional results out until the context decides them.
#[test]
fn caveated_answers_are_denials_naming_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let schema = files.path().join("schema.zed");
    std::fs::write(
        &schema,
        "caveat below(n int, limit int) {\n  n < limit\n}\n\ndefinition user {}\n\ndefinition doc {\n  relation viewer: user | user with below\n  permission view = viewer\n}\n",
    )
    .unwrap();
    let server = Server::start(dir.path(), &["--schema", schema.to_str().unwrap()]);
    let (code, _, err) = server.cli(&[
        "write",
        r#"doc:1#viewer@user:ann[below:{"limit":5}]"#,
        "doc:2#viewer@user:ann",
        r#"doc:3#viewer@user:ann[below:{"limit":1}]"#,
    ]);
    assert_eq!(code, 0, "{err}");
    let c = Client::new(&server);
    let conditional = json!({"decision": false, "context": {"conditional": true, "missing_context": ["n"]}});
    assert_eq!(c.ok("/access/v1/evaluation", &eval("user:ann", "view", "doc:1")), conditional);
    let mut with_n = eval("user:ann", "view", "doc:1");
    with_n["context"] = json!({"n": 2});
    assert_eq!(c.ok("/access/v1/evaluation", &with_n), json!({"decision": true}));
    with_n["context"] = json!({"n": 7});
    assert_eq!(c.ok("/access/v1/evaluation", &with_n), json!({"decision": false}));

    let batch = |semantic: &str, docs: &[&str]| {
        let items: Vec<Value> = docs.iter().map(|d| json!({"resource": subject("doc", d)})).collect();
        let b = json!({"subject": subject("user", "ann"), "action": {"name": "view"},
                       "options": {"evaluations_semantic": semantic}, "evaluations": items});
        c.ok("/access/v1/evaluations", &b)["evaluations"].clone()
    };
    assert_eq!(batch("execute_all", &["1", "2"]), json!([conditional, {"decision": true}]));
    // A conditional answer is a denial: it stops deny_on_first_deny, and keeps its names.
    assert_eq!(batch("deny_on_first_deny", &["2", "1", "3"]), json!([{"decision": true}, conditional]));
    assert_eq!(batch("permit_on_first_permit", &["1", "3", "2"]), json!([conditional, conditional, {"decision": true}]));

    // Searches return what is decided: conditional resources are left out.
    let q = json!({"subject": subject("user", "ann"), "action": {"name": "view"}, "resource": {"type": "doc"}});
    assert_eq!(ids(c.ok("/access/v1/search/resource", &q)["results"].as_array().unwrap()), ["2"]);
    let mut q = q;
    q["context"] = json!({"n": 0});
    assert_eq!(ids(c.ok("/access/v1/search/resource", &q)["results"].as_array().unwrap()), ["1", "2", "3"]);
}

fn readme_section() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut lines = text.lines().skip_while(|l| !(l.starts_with('#') && l.trim_start_matches('#').trim() == "AuthZEN"));
    let heading = lines.next().expect("README.md has an AuthZEN section");
    let mut section = format!("{heading}\n");
    for line in lines.take_while(|l| !(l.starts_with("## ") || l.starts_with("### "))) {
        section.push_str(line);
        section.push('\n');
    }
    section
}

/// Splits a shell command line with single-quoted words (all the examples use).
fn shell_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    for c in line.chars() {
        match c {
            '\'' => (quoted, any) = (!quoted, true),
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// (curl words, expected output) for every `$ curl` of the section's `text` blocks; a
/// command runs on while a quote is open.
fn curl_examples(section: &str) -> Vec<(Vec<String>, String)> {
    let mut out: Vec<(Vec<String>, String)> = Vec::new();
    let mut in_block = false;
    let mut open: Option<String> = None;
    for line in section.lines() {
        if line.trim_start().starts_with("```") {
            in_block = line.trim() == "```text";
            continue;
        }
        if !in_block {
            continue;
        }
        let command = match (open.take(), line.strip_prefix("$ ")) {
            (Some(mut cmd), _) => {
                cmd.push('\n');
                cmd.push_str(line);
                cmd
            }
            (None, Some(cmd)) => cmd.to_string(),
            (None, None) => {
                if let Some((_, expected)) = out.last_mut() {
                    expected.push_str(line);
                    expected.push('\n');
                }
                continue;
            }
        };
        if command.matches('\'').count() % 2 == 1 {
            open = Some(command);
        } else {
            let words = shell_words(&command);
            assert_eq!(words.first().map(String::as_str), Some("curl"), "`{command}` must run curl");
            out.push((words, String::new()));
        }
    }
    out
}

/// Whether `got` matches `want`, where a `"..."` string in `want` stands for any
/// non-empty string.
fn matches(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::String(w), Value::String(g)) if w == "..." => !g.is_empty(),
        (Value::Object(w), Value::Object(g)) => w.len() == g.len() && w.iter().all(|(k, v)| g.get(k).is_some_and(|gv| matches(v, gv))),
        (Value::Array(w), Value::Array(g)) => w.len() == g.len() && w.iter().zip(g).all(|(a, b)| matches(a, b)),
        _ => want == got,
    }
}

/// Every curl example of the README's AuthZEN section, against a fresh demo server (with
/// the tour's suspended-accounts policy), prints what the README shows. A `"..."` token
/// in a request is the `next_token` of the answer before.
#[test]
fn the_readme_authzen_examples_work_as_written() {
    let examples = curl_examples(&readme_section());
    assert!(examples.len() >= 8, "the AuthZEN examples went missing: {examples:?}");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--demo"]);
    let (code, _, err) = server.cli(&["attributes", "define", "src/demo/attributes.yaml"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = server.cli(&["policy", "write", "src/demo/policies/suspended.cedar"]);
    assert_eq!(code, 0, "{err}");
    let c = Client::new(&server);
    let mut last_token = String::new();
    for (words, expected) in examples {
        let url = words.iter().find(|w| w.starts_with("127.0.0.1:8080/")).unwrap_or_else(|| panic!("no URL in {words:?}"));
        let path = url.trim_start_matches("127.0.0.1:8080");
        let body = words.iter().position(|w| w == "-d").and_then(|i| words.get(i + 1));
        let reply = match body {
            Some(b) => {
                let mut body: Value = serde_json::from_str(b).unwrap_or_else(|e| panic!("README body is not JSON ({e}): {b}"));
                if body["page"]["token"] == "..." {
                    body["page"]["token"] = json!(last_token);
                }
                c.post(path, &body)
            }
            None => c.send("GET", path, &[], None),
        };
        let got = reply.json();
        let want: Value = serde_json::from_str(expected.trim()).unwrap_or_else(|e| panic!("README output is not JSON ({e}): {expected}"));
        assert!(matches(&want, &got), "{path} {body:?}\n want {want}\n  got {got}");
        if let Some(t) = got["page"]["next_token"].as_str() {
            last_token = t.to_string();
        }
    }
}
