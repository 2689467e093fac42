//! The relationship text syntax: `type:id#relation@type:id[#relation]`, optionally
//! followed by `[caveat_name:{json}]` and `[expiration:RFC3339]`. Shared by validation
//! files, the CLI and import files.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::compiler::is_valid_type_name;

/// Longest allowed object id, in bytes.
pub const MAX_OBJECT_ID_LEN: usize = 1024;

/// The id of a wildcard subject (`user:*`).
pub const WILDCARD_ID: &str = "*";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub object_type: String,
    pub object_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectRef {
    pub object: ObjectRef,
    /// `None` is the object itself (written without `#relation`, or as `#...`).
    pub relation: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaveatRef {
    pub name: String,
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relationship {
    pub resource: ObjectRef,
    pub relation: String,
    pub subject: SubjectRef,
    pub caveat: Option<CaveatRef>,
    pub expiration: Option<DateTime<Utc>>,
}

/// A parse error in relationship text; the message names the problem and the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RelationshipParseError {
    pub message: String,
}

fn err(message: String) -> RelationshipParseError {
    RelationshipParseError { message }
}

/// Whether `id` is a valid object id: 1 to 1024 bytes from SpiceDB's character set,
/// ASCII letters, digits and `/ _ | - = +`.
#[inline]
pub fn is_valid_object_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_OBJECT_ID_LEN && id.bytes().all(|b| b < 128 && (ID_BYTE >> b) & 1 == 1)
}

/// May `b` appear in an object id?
const fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'|' | b'-' | b'=' | b'+')
}

/// [`is_id_byte`] as one bit per byte (ids are ASCII): a Check tests two ids, and a test
/// of one bit per byte costs less than the comparisons it replaces.
const ID_BYTE: u128 = {
    let mut bits = 0u128;
    let mut b = 0u8;
    while b < 128 {
        if is_id_byte(b) {
            bits |= 1 << b;
        }
        b += 1;
    }
    bits
};

/// Explains why `id` is not a valid object id.
#[inline]
pub fn object_id_problem(id: &str) -> Option<String> {
    if is_valid_object_id(id) {
        return None;
    }
    id_problem(id)
}

#[cold]
fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("object id is empty".into());
    }
    if id.len() > MAX_OBJECT_ID_LEN {
        return Some(format!(
            "object id is {} bytes long; the limit is {MAX_OBJECT_ID_LEN}",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !u8::try_from(*c).is_ok_and(is_id_byte))
    {
        return Some(format!(
            "object id `{}` contains `{}`; ids use letters, digits and `/ _ | - = +`",
            shorten(id),
            c.escape_default()
        ));
    }
    None
}

/// Cuts long user input for messages.
pub fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", s.get(..end).unwrap_or(""))
}

fn parse_type(t: &str, what: &str, whole: &str) -> Result<String, RelationshipParseError> {
    if is_valid_type_name(t) {
        Ok(t.to_string())
    } else {
        Err(err(format!(
            "invalid {what} type `{}` in `{}`",
            shorten(t),
            shorten(whole)
        )))
    }
}

fn parse_relation_name(r: &str, whole: &str) -> Result<String, RelationshipParseError> {
    if crate::compiler::is_valid_identifier(r) {
        Ok(r.to_string())
    } else {
        Err(err(format!(
            "invalid relation `{}` in `{}`",
            shorten(r),
            shorten(whole)
        )))
    }
}

/// Parses `type:id`.
pub fn parse_object(
    s: &str,
    whole: &str,
    what: &str,
    allow_wildcard: bool,
) -> Result<ObjectRef, RelationshipParseError> {
    let Some((t, id)) = s.split_once(':') else {
        return Err(err(format!(
            "expected `type:id` for the {what} in `{}`",
            shorten(whole)
        )));
    };
    let object_type = parse_type(t, what, whole)?;
    if !(allow_wildcard && id == WILDCARD_ID) {
        if let Some(problem) = object_id_problem(id) {
            return Err(err(format!(
                "{problem} (the {what} in `{}`)",
                shorten(whole)
            )));
        }
    }
    Ok(ObjectRef {
        object_type,
        object_id: id.to_string(),
    })
}

/// Parses `type:id[#relation]` (`#...` means no relation).
pub fn parse_subject(s: &str, whole: &str) -> Result<SubjectRef, RelationshipParseError> {
    let (obj, relation) = match s.split_once('#') {
        Some((o, "...")) => (o, None),
        Some((o, r)) => (o, Some(parse_relation_name(r, whole)?)),
        None => (s, None),
    };
    let object = parse_object(obj, whole, "subject", true)?;
    if object.object_id == WILDCARD_ID && relation.is_some() {
        return Err(err(format!(
            "a wildcard subject cannot have a relation, in `{}`",
            shorten(whole)
        )));
    }
    Ok(SubjectRef { object, relation })
}

/// Splits `resource#relation@subject` into its three parts, or explains what is missing.
pub fn split_triple(s: &str) -> Result<(&str, &str, &str), RelationshipParseError> {
    let Some((resource_part, subject_part)) = s.split_once('@') else {
        return Err(err(format!(
            "expected `resource#relation@subject`, missing `@` in `{}`",
            shorten(s)
        )));
    };
    let Some((resource, relation)) = resource_part.split_once('#') else {
        return Err(err(format!(
            "expected `type:id#relation` before `@` in `{}`",
            shorten(s)
        )));
    };
    Ok((resource, relation, subject_part))
}

/// Parses one relationship line.
pub fn parse_relationship(line: &str) -> Result<Relationship, RelationshipParseError> {
    let line = line.trim();
    let (core, trailer) = match line.find('[') {
        Some(i) => (line.get(..i).unwrap_or(""), line.get(i..).unwrap_or("")),
        None => (line, ""),
    };
    let (resource, relation, subject) = split_triple(core)?;
    let resource = parse_object(resource, line, "resource", false)?;
    let relation = parse_relation_name(relation, line)?;
    let subject = parse_subject(subject, line)?;
    let (caveat, expiration) = parse_trailer(trailer, line)?;
    Ok(Relationship {
        resource,
        relation,
        subject,
        caveat,
        expiration,
    })
}

type Trailer = (Option<CaveatRef>, Option<DateTime<Utc>>);

fn parse_trailer(mut rest: &str, whole: &str) -> Result<Trailer, RelationshipParseError> {
    let mut caveat = None;
    let mut expiration = None;
    while !rest.is_empty() {
        let Some(body) = rest.strip_prefix('[') else {
            return Err(err(format!(
                "unexpected `{}` after the subject in `{}`",
                shorten(rest),
                shorten(whole)
            )));
        };
        let name_end = body.find([':', ']']).unwrap_or(body.len());
        let name = body.get(..name_end).unwrap_or("");
        let after = body.get(name_end..).unwrap_or("");
        if name == "expiration" {
            let Some(value) = after.strip_prefix(':') else {
                return Err(err(format!("`[expiration]` needs a time, like `[expiration:2030-01-01T00:00:00Z]`, in `{}`", shorten(whole))));
            };
            let end = value.find(']').ok_or_else(|| {
                err(format!(
                    "missing `]` after the expiration in `{}`",
                    shorten(whole)
                ))
            })?;
            let text = value.get(..end).unwrap_or("");
            let t = DateTime::parse_from_rfc3339(text)
                .map_err(|e| err(format!("invalid expiration `{}` ({e}); use RFC 3339, like 2030-01-01T00:00:00Z, in `{}`", shorten(text), shorten(whole))))?;
            if expiration.is_some() {
                return Err(err(format!(
                    "expiration given twice in `{}`",
                    shorten(whole)
                )));
            }
            expiration = Some(t.with_timezone(&Utc));
            rest = value.get(end + 1..).unwrap_or("");
            continue;
        }
        if !is_valid_type_name(name) {
            return Err(err(format!(
                "invalid caveat name `{}` in `{}`",
                shorten(name),
                shorten(whole)
            )));
        }
        if caveat.is_some() {
            return Err(err(format!("more than one caveat in `{}`", shorten(whole))));
        }
        if let Some(json) = after.strip_prefix(':') {
            let mut stream =
                serde_json::Deserializer::from_str(json).into_iter::<serde_json::Value>();
            let value = match stream.next() {
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    return Err(err(format!(
                        "invalid caveat context for `{name}` ({e}) in `{}`",
                        shorten(whole)
                    )))
                }
                None => {
                    return Err(err(format!(
                        "missing caveat context for `{name}` in `{}`",
                        shorten(whole)
                    )))
                }
            };
            let consumed = stream.byte_offset();
            let serde_json::Value::Object(map) = value else {
                return Err(err(format!(
                    "caveat context for `{name}` must be a JSON object, in `{}`",
                    shorten(whole)
                )));
            };
            let tail = json.get(consumed..).unwrap_or("").trim_start();
            let Some(tail) = tail.strip_prefix(']') else {
                return Err(err(format!(
                    "missing `]` after the caveat context in `{}`",
                    shorten(whole)
                )));
            };
            caveat = Some(CaveatRef {
                name: name.to_string(),
                context: Some(map),
            });
            rest = tail;
        } else if let Some(tail) = after.strip_prefix(']') {
            caveat = Some(CaveatRef {
                name: name.to_string(),
                context: None,
            });
            rest = tail;
        } else {
            return Err(err(format!(
                "missing `]` after the caveat in `{}`",
                shorten(whole)
            )));
        }
    }
    Ok((caveat, expiration))
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.object_type, self.object_id)
    }
}

impl fmt::Display for SubjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.object)?;
        if let Some(r) = &self.relation {
            write!(f, "#{r}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Relationship {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}@{}", self.resource, self.relation, self.subject)?;
        if let Some(c) = &self.caveat {
            write!(f, "[{}", c.name)?;
            if let Some(ctx) = &c.context {
                write!(f, ":{}", sorted_keys(&serde_json::Value::Object(ctx.clone())))?;
            }
            write!(f, "]")?;
        }
        if let Some(e) = &self.expiration {
            write!(
                f,
                "[expiration:{}]",
                e.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            )?;
        }
        Ok(())
    }
}

/// `v` with every object's keys in sorted order, so the text form is canonical whether
/// or not serde_json preserves insertion order (another crate in the build may turn
/// `preserve_order` on).
pub fn sorted_keys(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted_keys(v))).collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.iter().map(sorted_keys).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let r = parse_relationship("document:1#viewer@user:tom").unwrap();
        assert_eq!(r.to_string(), "document:1#viewer@user:tom");
        let r = parse_relationship("document:1#viewer@group:eng#member").unwrap();
        assert_eq!(r.subject.relation.as_deref(), Some("member"));
        let r = parse_relationship("document:1#viewer@user:tom#...").unwrap();
        assert_eq!(r.subject.relation, None);
        let r = parse_relationship("test/doc:1#viewer@test/user:*").unwrap();
        assert_eq!(r.subject.object.object_id, "*");
        let r =
            parse_relationship(r#"doc:1#viewer@user:tom[only_on:{"a":[1,2],"b":"]"}]"#).unwrap();
        let c = r.caveat.unwrap();
        assert_eq!(c.name, "only_on");
        assert_eq!(c.context.unwrap().len(), 2);
        let r =
            parse_relationship("doc:1#viewer@user:tom[expiration:2023-12-01T00:00:00Z]").unwrap();
        assert_eq!(
            r.to_string(),
            "doc:1#viewer@user:tom[expiration:2023-12-01T00:00:00Z]"
        );
        let r = parse_relationship("doc:1#viewer@user:tom[cav][expiration:2023-12-01T00:00:00Z]")
            .unwrap();
        assert!(r.caveat.is_some() && r.expiration.is_some());
    }

    #[test]
    fn id_length_limit_is_inclusive() {
        let id = "a".repeat(MAX_OBJECT_ID_LEN);
        assert!(parse_relationship(&format!("doc:{id}#viewer@user:tom")).is_ok());
        let id = "a".repeat(MAX_OBJECT_ID_LEN + 1);
        let e = parse_relationship(&format!("doc:{id}#viewer@user:tom")).unwrap_err();
        assert!(e.message.contains("1025 bytes"), "{}", e.message);
    }

    #[test]
    fn bad_lines_name_the_problem() {
        for (line, needle) in [
            ("doc:1#viewer", "missing `@`"),
            ("doc:1viewer@user:tom", "`type:id#relation`"),
            ("doc#viewer@user:tom", "`type:id`"),
            ("doc:1#Viewer@user:tom", "invalid relation `Viewer`"),
            ("doc:a b#viewer@user:tom", "contains ` `"),
            ("doc:*#viewer@user:tom", "contains `*`"),
            ("doc:caf\u{e9}#viewer@user:tom", "contains `\\u{e9}`"),
            ("doc:a\u{7f}#viewer@user:tom", "contains `\\u{7f}`"),
            ("doc:1#viewer@user:tom.x", "contains `.`"),
            ("doc:1#viewer@user:*#member", "wildcard subject"),
            (
                "doc:1#viewer@user:tom[expiration:yesterday]",
                "invalid expiration",
            ),
            ("doc:1#viewer@user:tom[cav:{]", "invalid caveat context"),
            ("doc:1#viewer@user:tom[cav:[1]]", "must be a JSON object"),
            ("doc:1#viewer@user:tom junk", "contains ` `"),
        ] {
            let e = parse_relationship(line).unwrap_err();
            assert!(e.message.contains(needle), "{line}: {}", e.message);
        }
    }
}
