//! Errors as `application/problem+json` (RFC 9457): a status, a title, a detail that
//! names the problem, and, for bad input, the field (a JSON pointer into the body, or
//! the parameter's name). Server faults carry an error id; their detail goes to the log.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// A problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The field in the request that is wrong: a JSON pointer into the body (`/email`)
    /// or a parameter's name (`limit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For server faults: the id under which the detail was logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
    #[serde(skip)]
    retry_after: Option<u16>,
    #[serde(skip)]
    authenticate: bool,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            error_id: None,
            retry_after: None,
            authenticate: false,
        }
    }

    /// 400: the request cannot be read (syntax, types, unknown fields, parameters).
    pub fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, detail).with_field(field)
    }

    /// 422: the request is readable but its content is not acceptable.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail).with_field(field)
    }

    pub fn not_found(what: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, format!("{} was not found", what.into()))
    }

    pub fn conflict(field: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, detail).with_field(field)
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Problem {
        let mut p = Problem::new(StatusCode::UNAUTHORIZED, detail);
        p.authenticate = true;
        p
    }

    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn precondition_failed(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::PRECONDITION_FAILED, detail).with_field("If-Match")
    }

    /// 503 with a retry hint: a dependency (Postgres, the PDP) did not answer.
    pub fn unavailable(detail: impl Into<String>) -> Problem {
        let mut p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail);
        p.retry_after = Some(1);
        p
    }

    /// A fault of the server or a dependency: the client learns what failed and an
    /// error id; the cause is logged under that id.
    pub fn fault(status: StatusCode, what: &str, cause: &dyn std::fmt::Display) -> Problem {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let id = id[..12].to_string();
        tracing::error!(error_id = %id, cause = %cause, "{what}");
        let mut p = Problem::new(status, format!("{what} (error id {id})"));
        p.error_id = Some(id);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            p.retry_after = Some(1);
        }
        p
    }

    pub fn internal(what: &str, cause: &dyn std::fmt::Display) -> Problem {
        Problem::fault(StatusCode::INTERNAL_SERVER_ERROR, what, cause)
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.authenticate {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"arbiter-admin\""));
        }
        response
    }
}

impl From<sqlx::Error> for Problem {
    /// Database errors: constraint violations are the client's (named by the constraint's
    /// column); lost connections and timeouts are 503; anything else is a fault.
    fn from(e: sqlx::Error) -> Problem {
        if let sqlx::Error::Database(db) = &e {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let constraint = db.constraint().unwrap_or("").to_string();
            let field = constraint_field(&constraint);
            match code.as_str() {
                // unique_violation
                "23505" => return Problem::conflict(field.clone(), format!("`{}` is already taken", field.trim_start_matches('/'))),
                // foreign_key_violation
                "23503" => {
                    return Problem::invalid(field.clone(), format!("`{}` refers to something that does not exist or is still in use", field.trim_start_matches('/')))
                }
                // check_violation, not_null_violation, string_data_right_truncation
                "23514" | "23502" | "22001" => {
                    return Problem::invalid(field.clone(), format!("`{}` is not acceptable ({})", field.trim_start_matches('/'), db.message()))
                }
                // serialization_failure, deadlock_detected, lock_not_available, query_canceled (statement_timeout)
                "40001" | "40P01" | "55P03" | "57014" => {
                    return Problem::fault(StatusCode::SERVICE_UNAVAILABLE, "the database was busy; retry", &e)
                }
                _ => {}
            }
        }
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Problem::fault(StatusCode::SERVICE_UNAVAILABLE, "the database is unavailable", &e)
            }
            e => Problem::internal("a database statement failed", &e),
        }
    }
}

/// The JSON pointer of the field a constraint guards: constraints are named
/// `<table>_<column>...` by Postgres (`users_email`, `tenants_slug_key`).
fn constraint_field(constraint: &str) -> String {
    const KNOWN: [(&str, &str); 30] = [
        ("tenants_slug", "/slug"),
        ("tenant_domains_domain", "/domain"),
        ("users_email", "/email"),
        ("users_username", "/username"),
        ("groups_tenant_id_name", "/name"),
        ("departments_tenant_id_name", "/name"),
        ("departments_parent_id", "/parent_id"),
        ("roles_name", "/name"),
        ("roles_parent_role_id", "/parent_role_id"),
        ("permissions_name", "/name"),
        ("group_members_user", "/user_id"),
        ("group_members_group", "/group_id"),
        ("role_assignments_user", "/user_id"),
        ("role_assignments_group", "/group_id"),
        ("acl_entries_one_per_subject", "/subject_id"),
        ("graph_nodes_object", "/object_id"),
        ("graph_edges_one_per_relation", "/relation_type"),
        ("security_labels_name", "/name"),
        ("label_hierarchy_pkey", "/parent_label_id"),
        ("object_labels_once", "/label_id"),
        ("attributes_type_name", "/name"),
        ("attribute_values_attr_value", "/value"),
        ("subject_attributes_once", "/value_id"),
        ("subject_attributes_one_value", "/value_id"),
        ("resource_attributes_once", "/value_id"),
        ("resource_attributes_one_value", "/value_id"),
        ("policies_environment_name", "/name"),
        ("log_streams_name", "/name"),
        ("audit_configs_service_name", "/service_name"),
        ("audit_configs_stream", "/stream"),
    ];
    for (prefix, field) in KNOWN {
        if constraint.starts_with(prefix) {
            return field.to_string();
        }
    }
    format!("/{constraint}")
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, Problem>;
