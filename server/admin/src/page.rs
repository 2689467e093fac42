//! Cursor pagination and query parameters. A list is ordered by id; its cursor is the
//! last id of the page (opaque to clients); `limit` defaults to 50 and may not exceed
//! `--max-page-size`. Unknown parameters are refused by name.

use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::problem::{ApiResult, Problem};

pub const DEFAULT_LIMIT: u32 = 50;

/// Query parameters of a list.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page (1 to the server's maximum, `--max-page-size`, 500 by default).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<uuid::Uuid>,
}

/// Query parameters of a list ordered by time, newest first (the audit trail).
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimePageParams {
    /// Items per page (1 to the server's maximum, `--max-page-size`, 500 by default).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}\.[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

/// A page request, checked.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: u32,
    pub after: Option<Uuid>,
    /// The cursor of a list ordered by time ([`Query::parse_timed`]): the last item's
    /// time (microseconds since 1970) and id.
    pub after_time: Option<(i64, i64)>,
}

/// What a list's cursor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    Uuid,
    Timed,
    Keyed,
    Opaque,
}

/// Parsed query parameters: the page and any filters `allowed` names.
#[derive(Debug)]
pub struct Query {
    pub page: Page,
    /// The cursor of a list ordered by time and a text key ([`Query::parse_keyed`]).
    pub after_key: Option<(i64, String)>,
    /// A cursor another service made, passed on as it is ([`Query::parse_opaque`]).
    pub after_opaque: Option<String>,
    pub filters: Vec<(String, String)>,
}

impl Query {
    /// Reads `raw` (`limit=10&cursor=...&status=active`), refusing unknown or repeated
    /// parameters and values out of range.
    pub fn parse(raw: Option<&str>, max: u32, allowed: &[&str]) -> ApiResult<Query> {
        Query::parse_cursor(raw, max, allowed, Cursor::Uuid)
    }

    /// [`Query::parse`] for a list ordered by time and a text key, newest first: its
    /// cursor is `<microseconds>~<key>` of the last item (the key: letters, digits, `-`
    /// and `_`).
    pub fn parse_keyed(raw: Option<&str>, max: u32, allowed: &[&str]) -> ApiResult<Query> {
        Query::parse_cursor(raw, max, allowed, Cursor::Keyed)
    }

    /// [`Query::parse`] for a list ordered by time and a numbered id, newest first: its
    /// cursor is `<microseconds>.<id>` of the last item.
    pub fn parse_timed(raw: Option<&str>, max: u32, allowed: &[&str]) -> ApiResult<Query> {
        Query::parse_cursor(raw, max, allowed, Cursor::Timed)
    }

    /// [`Query::parse`] for a list whose cursor another service made (the PDP's): 1 to
    /// 1024 visible ASCII characters, passed on as they are.
    pub fn parse_opaque(raw: Option<&str>, max: u32, allowed: &[&str]) -> ApiResult<Query> {
        Query::parse_cursor(raw, max, allowed, Cursor::Opaque)
    }

    fn parse_cursor(raw: Option<&str>, max: u32, allowed: &[&str], kind: Cursor) -> ApiResult<Query> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| Problem::bad_request("query", format!("the query string is not readable: {e}")))?;
        let mut limit = None;
        let mut after = None;
        let mut after_time = None;
        let mut after_key = None;
        let mut after_opaque = None;
        let mut filters: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            if k.contains('\0') || v.contains('\0') {
                return Err(Problem::bad_request(k.replace('\0', ""), "a query parameter holds a NUL character"));
            }
            let repeated = match k.as_str() {
                "limit" => limit.is_some(),
                "cursor" => after.is_some() || after_time.is_some() || after_key.is_some() || after_opaque.is_some(),
                _ => filters.iter().any(|(f, _)| *f == k),
            };
            if repeated {
                return Err(Problem::bad_request(k.clone(), format!("`{k}` is given twice")));
            }
            match k.as_str() {
                "limit" => {
                    let n: u32 = v
                        .parse()
                        .map_err(|_| Problem::bad_request("limit", format!("`limit` must be a whole number from 1 to {max}")))?;
                    if n == 0 || n > max {
                        return Err(Problem::bad_request("limit", format!("`limit` is {n}; it must be from 1 to {max}")));
                    }
                    limit = Some(n);
                }
                "cursor" => {
                    let refused = || Problem::bad_request("cursor", "`cursor` is not a cursor this server returned");
                    match kind {
                        Cursor::Timed => after_time = Some(time_cursor(&v).ok_or_else(refused)?),
                        Cursor::Keyed => after_key = Some(key_cursor(&v).ok_or_else(refused)?),
                        Cursor::Uuid => after = Some(v.parse::<Uuid>().map_err(|_| refused())?),
                        Cursor::Opaque => {
                            let ok = !v.is_empty() && v.len() <= 1024 && v.bytes().all(|b| b.is_ascii_graphic());
                            after_opaque = Some(ok.then_some(v).ok_or_else(refused)?);
                        }
                    }
                }
                _ if allowed.contains(&k.as_str()) => {
                    if v.len() > 1024 {
                        return Err(Problem::bad_request(k.clone(), format!("`{k}` is longer than 1024 bytes")));
                    }
                    filters.push((k, v));
                }
                _ => {
                    let mut known = vec!["limit", "cursor"];
                    known.extend_from_slice(allowed);
                    return Err(Problem::bad_request(k.clone(), format!("unknown query parameter `{k}` (known: {})", known.join(", "))));
                }
            }
        }
        Ok(Query { page: Page { limit: limit.unwrap_or(DEFAULT_LIMIT.min(max)), after, after_time }, after_key, after_opaque, filters })
    }

    pub fn filter(&self, name: &str) -> Option<&str> {
        self.filters.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// `<microseconds>.<id>`, both whole numbers of at most 18 digits.
fn time_cursor(v: &str) -> Option<(i64, i64)> {
    let (t, id) = v.split_once('.')?;
    let number = |s: &str| (!s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<i64>().ok()).flatten();
    Some((number(t)?, number(id)?))
}

/// `<microseconds>~<key>`: a whole number of at most 18 digits, and 1 to 256 letters,
/// digits, `-` and `_`.
fn key_cursor(v: &str) -> Option<(i64, String)> {
    let (t, key) = v.split_once('~')?;
    let micros = (!t.is_empty() && t.len() <= 18 && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse::<i64>().ok()).flatten()?;
    let ok = !key.is_empty() && key.len() <= 256 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| (micros, key.to_string()))
}

/// The cursor [`Query::parse_timed`] reads.
pub fn time_cursor_of(micros: i64, id: i64) -> String {
    format!("{micros}.{id}")
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageOf<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> PageOf<T> {
    /// Cuts `rows` (fetched with `limit + 1`) into a page.
    pub fn of(mut rows: Vec<T>, page: Page, id: impl Fn(&T) -> Uuid) -> PageOf<T> {
        let more = rows.len() > page.limit as usize;
        rows.truncate(page.limit as usize);
        let next_cursor = if more { rows.last().map(|r| id(r).to_string()) } else { None };
        PageOf { items: rows, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_checked_by_name() {
        let q = Query::parse(Some("limit=10&status=active"), 500, &["status"]).unwrap();
        assert_eq!(q.page.limit, 10);
        assert_eq!(q.filter("status"), Some("active"));
        assert_eq!(Query::parse(None, 500, &[]).unwrap().page.limit, DEFAULT_LIMIT);
        for (raw, field) in [
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("limit=x", "limit"),
            ("cursor=nope", "cursor"),
            ("colour=red", "colour"),
            ("status=a&status=b", "status"),
            ("limit=1&limit=2", "limit"),
        ] {
            let err = Query::parse(Some(raw), 500, &["status"]).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{raw}: {err:?}");
            assert_eq!(err.status, 400);
        }
        // A timed cursor is two whole numbers, not negative.
        assert_eq!(Query::parse_timed(Some("cursor=1765062000123456.42"), 500, &[]).unwrap().page.after_time, Some((1765062000123456, 42)));
        for (raw, field) in [("cursor=-1.2", "cursor"), ("cursor=1.-2", "cursor"), ("cursor=15", "cursor"), ("cursor=1.2.3", "cursor"),
            ("cursor=1234567890123456789.1", "cursor"), ("cursor=00000000-0000-0000-0000-000000000000", "cursor")] {
            let err = Query::parse_timed(Some(raw), 500, &[]).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{raw}: {err:?}");
        }
        // Another service's cursor is passed on as it is, bounded.
        assert_eq!(Query::parse_opaque(Some("cursor=abc%3D%3D"), 500, &[]).unwrap().after_opaque.as_deref(), Some("abc=="));
        for raw in ["cursor=", "cursor=a%20b", &format!("cursor={}", "a".repeat(1025))] {
            assert_eq!(Query::parse_opaque(Some(raw), 500, &[]).unwrap_err().field.as_deref(), Some("cursor"), "{raw}");
        }
        // And a list by id does not read one.
        assert_eq!(Query::parse(Some("cursor=1"), 500, &[]).unwrap_err().field.as_deref(), Some("cursor"));
    }
}
