//! AuthZEN's JSON request shapes, read by hand from a parsed `serde_json::Value` so
//! that every mistake is refused with the field named (`evaluations[2].resource.id`).
//! Unknown keys are ignored: later revisions of the spec may add them.

use serde_json::{Map, Value};

/// A malformed request: the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

fn bad(message: impl Into<String>) -> BadRequest {
    BadRequest(message.into())
}

/// A subject or a resource: `{type, id, properties}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub kind: String,
    /// Empty where the request leaves it out (the searched side of a search).
    pub id: String,
    /// Attribute values for this request, handed to Cedar.
    pub properties: Option<Map<String, Value>>,
}

/// One access evaluation: the 4-tuple.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub subject: Entity,
    pub action: String,
    pub resource: Entity,
    pub context: Option<Map<String, Value>>,
}

/// `options.evaluations_semantic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

/// What `/access/v1/evaluations` was asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluations {
    /// No (or an empty) `evaluations` array: a single evaluation, answered as one.
    Single(Box<Evaluation>),
    Batch { items: Vec<Evaluation>, semantic: Semantic },
}

/// The `page` of a search request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// The `next_token` of the previous page.
    pub token: Option<String>,
    pub limit: Option<u64>,
}

/// A search: the side searched has an empty id (and, for actions, an empty action).
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    pub query: Evaluation,
    pub page: PageRequest,
}

/// Whether an entity's `id` must be given or is ignored (the side a search looks for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id {
    Required,
    Ignored,
}

/// The request body as a JSON object.
pub fn parse_body(body: &[u8]) -> Result<Map<String, Value>, BadRequest> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the request body must be a JSON object")),
        Err(e) if body.iter().all(u8::is_ascii_whitespace) => Err(bad(format!("the request body is empty ({e})"))),
        Err(e) => Err(bad(format!("the request body is not valid JSON: {e}"))),
    }
}

/// A key's value; `null` counts as absent.
fn get<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|v| !v.is_null())
}

fn as_object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, BadRequest> {
    value.as_object().ok_or_else(|| bad(format!("`{field}` must be a JSON object")))
}

fn required<'a>(object: &'a Map<String, Value>, key: &str, field: &str) -> Result<&'a Value, BadRequest> {
    get(object, key).ok_or_else(|| bad(format!("`{field}` is required")))
}

/// A required, non-empty string.
fn string(object: &Map<String, Value>, key: &str, field: &str) -> Result<String, BadRequest> {
    match required(object, key, field)? {
        Value::String(s) if s.is_empty() => Err(bad(format!("`{field}` must not be empty"))),
        Value::String(s) => Ok(s.clone()),
        _ => Err(bad(format!("`{field}` must be a string"))),
    }
}

fn optional_object(object: &Map<String, Value>, key: &str, field: &str) -> Result<Option<Map<String, Value>>, BadRequest> {
    get(object, key).map(|v| as_object(v, field).cloned()).transpose()
}

fn entity(value: &Value, field: &str, id: Id) -> Result<Entity, BadRequest> {
    let object = as_object(value, field)?;
    let kind = string(object, "type", &format!("{field}.type"))?;
    let id = match id {
        Id::Required => string(object, "id", &format!("{field}.id"))?,
        Id::Ignored => String::new(),
    };
    let properties = optional_object(object, "properties", &format!("{field}.properties"))?;
    Ok(Entity { kind, id, properties })
}

/// An action's `name` (its `properties` have no counterpart in Arbiter and are ignored).
fn action(value: &Value, field: &str) -> Result<String, BadRequest> {
    let object = as_object(value, field)?;
    optional_object(object, "properties", &format!("{field}.properties"))?;
    string(object, "name", &format!("{field}.name"))
}

/// `POST /access/v1/evaluation`.
pub fn evaluation(body: &Map<String, Value>) -> Result<Evaluation, BadRequest> {
    Ok(Evaluation {
        subject: entity(required(body, "subject", "subject")?, "subject", Id::Required)?,
        action: action(required(body, "action", "action")?, "action")?,
        resource: entity(required(body, "resource", "resource")?, "resource", Id::Required)?,
        context: optional_object(body, "context", "context")?,
    })
}

/// `POST /access/v1/evaluations`. The top-level `subject`, `action`, `resource` and
/// `context` are defaults that an item's own key replaces as a whole; an item must end up
/// with a subject, an action and a resource. More than `max_items` is refused.
pub fn evaluations(body: &Map<String, Value>, max_items: usize) -> Result<Evaluations, BadRequest> {
    let items = match get(body, "evaluations") {
        None => &[][..],
        Some(Value::Array(items)) => &items[..],
        Some(_) => return Err(bad("`evaluations` must be an array")),
    };
    if items.is_empty() {
        return evaluation(body).map(|e| Evaluations::Single(Box::new(e)));
    }
    if items.len() > max_items {
        return Err(bad(format!(
            "{} evaluations in one request, more than the limit of {max_items} (`--max-bulk-checks`)",
            items.len()
        )));
    }
    let semantic = semantic(body)?;
    // Defaults are checked whether or not an item uses them.
    let subject = get(body, "subject").map(|v| entity(v, "subject", Id::Required)).transpose()?;
    let action_name = get(body, "action").map(|v| action(v, "action")).transpose()?;
    let resource = get(body, "resource").map(|v| entity(v, "resource", Id::Required)).transpose()?;
    let context = optional_object(body, "context", "context")?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("evaluations[{i}]");
        let object = as_object(item, &at)?;
        let missing = |key: &str| bad(format!("`{at}.{key}` is required: the item has none and there is no top-level `{key}`"));
        let subject = match get(object, "subject") {
            Some(v) => entity(v, &format!("{at}.subject"), Id::Required)?,
            None => subject.clone().ok_or_else(|| missing("subject"))?,
        };
        let action = match get(object, "action") {
            Some(v) => action(v, &format!("{at}.action"))?,
            None => action_name.clone().ok_or_else(|| missing("action"))?,
        };
        let resource = match get(object, "resource") {
            Some(v) => entity(v, &format!("{at}.resource"), Id::Required)?,
            None => resource.clone().ok_or_else(|| missing("resource"))?,
        };
        let context = match get(object, "context") {
            Some(v) => Some(as_object(v, &format!("{at}.context"))?.clone()),
            None => context.clone(),
        };
        out.push(Evaluation { subject, action, resource, context });
    }
    Ok(Evaluations::Batch { items: out, semantic })
}

fn semantic(body: &Map<String, Value>) -> Result<Semantic, BadRequest> {
    let Some(options) = get(body, "options") else { return Ok(Semantic::ExecuteAll) };
    let options = as_object(options, "options")?;
    match get(options, "evaluations_semantic") {
        None => Ok(Semantic::ExecuteAll),
        Some(Value::String(s)) => match s.as_str() {
            "execute_all" => Ok(Semantic::ExecuteAll),
            "deny_on_first_deny" => Ok(Semantic::DenyOnFirstDeny),
            "permit_on_first_permit" => Ok(Semantic::PermitOnFirstPermit),
            other => Err(bad(format!(
                "unknown `options.evaluations_semantic` `{other}`: use execute_all, deny_on_first_deny or permit_on_first_permit"
            ))),
        },
        Some(_) => Err(bad("`options.evaluations_semantic` must be a string")),
    }
}

fn page(body: &Map<String, Value>) -> Result<PageRequest, BadRequest> {
    let Some(page) = get(body, "page") else { return Ok(PageRequest::default()) };
    let page = as_object(page, "page")?;
    // `token` (the spec); `next_token` as drafts before it sent it back.
    let token = match get(page, "token").or_else(|| get(page, "next_token")) {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("`page.token` must be a string")),
    };
    let limit = match get(page, "limit") {
        None => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| bad("`page.limit` must be a non-negative integer"))?),
    };
    Ok(PageRequest { token, limit })
}

/// `POST /access/v1/search/subject`: the subject's type, not its id.
pub fn subject_search(body: &Map<String, Value>) -> Result<Search, BadRequest> {
    Ok(Search {
        query: Evaluation {
            subject: entity(required(body, "subject", "subject")?, "subject", Id::Ignored)?,
            action: action(required(body, "action", "action")?, "action")?,
            resource: entity(required(body, "resource", "resource")?, "resource", Id::Required)?,
            context: optional_object(body, "context", "context")?,
        },
        page: page(body)?,
    })
}

/// `POST /access/v1/search/resource`: the resource's type, not its id.
pub fn resource_search(body: &Map<String, Value>) -> Result<Search, BadRequest> {
    Ok(Search {
        query: Evaluation {
            subject: entity(required(body, "subject", "subject")?, "subject", Id::Required)?,
            action: action(required(body, "action", "action")?, "action")?,
            resource: entity(required(body, "resource", "resource")?, "resource", Id::Ignored)?,
            context: optional_object(body, "context", "context")?,
        },
        page: page(body)?,
    })
}

/// `POST /access/v1/search/action`: no action (one given is ignored).
pub fn action_search(body: &Map<String, Value>) -> Result<Search, BadRequest> {
    Ok(Search {
        query: Evaluation {
            subject: entity(required(body, "subject", "subject")?, "subject", Id::Required)?,
            action: String::new(),
            resource: entity(required(body, "resource", "resource")?, "resource", Id::Required)?,
            context: optional_object(body, "context", "context")?,
        },
        page: page(body)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

    use serde_json::json;

    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn refused(result: Result<impl std::fmt::Debug, BadRequest>) -> String {
        match result {
            Ok(v) => panic!("accepted: {v:?}"),
            Err(BadRequest(m)) => m,
        }
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(refused(parse_body(b"")).contains("empty"));
        assert!(refused(parse_body(b"{\"subject\": ")).contains("not valid JSON"));
        assert!(refused(parse_body(b"[1]")).contains("JSON object"));
        assert!(parse_body(b" {} ").is_ok());
    }

    #[test]
    fn every_missing_or_mistyped_field_is_named() {
        let ok = json!({
            "subject": {"type": "user", "id": "ann", "properties": {"dept": "eng"}},
            "action": {"name": "view", "properties": {"method": "GET"}},
            "resource": {"type": "doc", "id": "1"},
            "context": {"hour": 9},
        });
        let e = evaluation(&body(ok.clone())).unwrap();
        assert_eq!(e.subject.properties, Some(body(json!({"dept": "eng"}))));
        assert_eq!((e.action.as_str(), e.resource.id.as_str()), ("view", "1"));
        for (path, value, needle) in [
            ("subject", Value::Null, "`subject` is required"),
            ("subject", json!("user:ann"), "`subject` must be a JSON object"),
            ("subject", json!({"id": "ann"}), "`subject.type` is required"),
            ("subject", json!({"type": "user"}), "`subject.id` is required"),
            ("subject", json!({"type": "user", "id": 7}), "`subject.id` must be a string"),
            ("subject", json!({"type": "", "id": "a"}), "`subject.type` must not be empty"),
            ("resource", json!({"type": "doc", "id": "1", "properties": [1]}), "`resource.properties` must be a JSON object"),
            ("action", json!({}), "`action.name` is required"),
            ("context", json!("now"), "`context` must be a JSON object"),
        ] {
            let mut b = body(ok.clone());
            b.insert(path.into(), value);
            let m = refused(evaluation(&b));
            assert!(m.contains(needle), "{path}: {m}");
        }
    }

    #[test]
    fn batch_items_take_the_top_level_defaults_and_replace_them_whole() {
        let b = body(json!({
            "subject": {"type": "user", "id": "ann"},
            "action": {"name": "view"},
            "context": {"hour": 9},
            "options": {"evaluations_semantic": "deny_on_first_deny"},
            "evaluations": [
                {"resource": {"type": "doc", "id": "1"}},
                {"resource": {"type": "doc", "id": "2"}, "action": {"name": "edit"},
                 "subject": {"type": "user", "id": "bob"}, "context": {"hour": 23}},
            ],
        }));
        let Evaluations::Batch { items, semantic } = evaluations(&b, 10).unwrap() else { panic!("not a batch") };
        assert_eq!(semantic, Semantic::DenyOnFirstDeny);
        assert_eq!((items[0].subject.id.as_str(), items[0].action.as_str()), ("ann", "view"));
        assert_eq!(items[0].context, Some(body(json!({"hour": 9}))));
        assert_eq!((items[1].subject.id.as_str(), items[1].action.as_str()), ("bob", "edit"));
        assert_eq!(items[1].context, Some(body(json!({"hour": 23}))));
        // No evaluations: one evaluation, answered as one.
        let single = body(json!({
            "subject": {"type": "user", "id": "ann"}, "action": {"name": "view"},
            "resource": {"type": "doc", "id": "1"}, "evaluations": [],
        }));
        assert!(matches!(evaluations(&single, 10).unwrap(), Evaluations::Single(_)));
        // Mistakes name the item.
        let m = refused(evaluations(&body(json!({"evaluations": [{"resource": {"type": "doc", "id": "1"}}]})), 10));
        assert!(m.contains("`evaluations[0].subject` is required"), "{m}");
        let m = refused(evaluations(
            &body(json!({"action": {"name": "view"}, "subject": {"type": "user", "id": "a"},
                         "evaluations": [{"resource": {"type": "doc", "id": "1"}}, {"resource": {"type": "doc"}}]})),
            10,
        ));
        assert!(m.contains("`evaluations[1].resource.id` is required"), "{m}");
        let m = refused(evaluations(&body(json!({"evaluations": [1, 2, 3]})), 2));
        assert!(m.contains("more than the limit of 2"), "{m}");
        let m = refused(evaluations(
            &body(json!({"options": {"evaluations_semantic": "first"}, "evaluations": [{}]})),
            2,
        ));
        assert!(m.contains("`first`"), "{m}");
    }

    #[test]
    fn searches_ignore_the_searched_id_and_read_the_page() {
        let s = subject_search(&body(json!({
            "subject": {"type": "user", "id": "ignored"},
            "action": {"name": "view"},
            "resource": {"type": "doc", "id": "1"},
            "page": {"token": "t", "limit": 2},
        })))
        .unwrap();
        assert_eq!(s.query.subject.id, "");
        assert_eq!(s.page, PageRequest { token: Some("t".into()), limit: Some(2) });
        let s = action_search(&body(json!({
            "subject": {"type": "user", "id": "ann"},
            "resource": {"type": "doc", "id": "1"},
            "page": {"next_token": "old"},
        })))
        .unwrap();
        assert_eq!(s.page.token.as_deref(), Some("old"));
        for page in [json!({"limit": -1}), json!({"limit": 1.5}), json!({"limit": "2"}), json!({"token": 3}), json!(4)] {
            let m = refused(resource_search(&body(json!({
                "subject": {"type": "user", "id": "ann"}, "action": {"name": "view"},
                "resource": {"type": "doc"}, "page": page,
            }))));
            assert!(m.contains("`page"), "{m}");
        }
    }
}
