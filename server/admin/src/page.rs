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

/// Query parameters of a list ordered by a number (the audit trail).
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NumberedPageParams {
    /// Items per page (1 to the server's maximum, `--max-page-size`, 500 by default).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(minimum = 0)]
    pub cursor: Option<i64>,
}

/// A page request, checked.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: u32,
    pub after: Option<Uuid>,
    /// The cursor of a list ordered by a number ([`Query::parse_numbered`]).
    pub after_number: Option<i64>,
}

/// Parsed query parameters: the page and any filters `allowed` names.
#[derive(Debug)]
pub struct Query {
    pub page: Page,
    pub filters: Vec<(String, String)>,
}

impl Query {
    /// Reads `raw` (`limit=10&cursor=...&status=active`), refusing unknown or repeated
    /// parameters and values out of range.
    pub fn parse(raw: Option<&str>, max: u32, allowed: &[&str]) -> ApiResult<Query> {
        Query::parse_cursor(raw, max, allowed, false)
    }

    /// [`Query::parse`] for a list ordered by a number: its cursor is the last number.
    pub fn parse_numbered(raw: Option<&str>, max: u32, allowed: &[&str]) -> ApiResult<Query> {
        Query::parse_cursor(raw, max, allowed, true)
    }

    fn parse_cursor(raw: Option<&str>, max: u32, allowed: &[&str], numbered: bool) -> ApiResult<Query> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| Problem::bad_request("query", format!("the query string is not readable: {e}")))?;
        let mut limit = None;
        let mut after = None;
        let mut after_number = None;
        let mut filters: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            if k.contains('\0') || v.contains('\0') {
                return Err(Problem::bad_request(k.replace('\0', ""), "a query parameter holds a NUL character"));
            }
            let repeated = match k.as_str() {
                "limit" => limit.is_some(),
                "cursor" => after.is_some() || after_number.is_some(),
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
                    if numbered {
                        after_number = Some(v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(refused)?);
                    } else {
                        after = Some(v.parse::<Uuid>().map_err(|_| refused())?);
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
        Ok(Query { page: Page { limit: limit.unwrap_or(DEFAULT_LIMIT.min(max)), after, after_number }, filters })
    }

    pub fn filter(&self, name: &str) -> Option<&str> {
        self.filters.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
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
        // A numbered cursor is a whole number, not negative.
        assert_eq!(Query::parse_numbered(Some("cursor=42"), 500, &[]).unwrap().page.after_number, Some(42));
        for (raw, field) in [("cursor=-1", "cursor"), ("cursor=1.5", "cursor"), ("cursor=00000000-0000-0000-0000-000000000000", "cursor")] {
            let err = Query::parse_numbered(Some(raw), 500, &[]).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{raw}: {err:?}");
        }
        // And a list by id does not read one.
        assert_eq!(Query::parse(Some("cursor=1"), 500, &[]).unwrap_err().field.as_deref(), Some("cursor"));
    }
}
