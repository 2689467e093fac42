//! The feed: the relationship changes that one admin transaction makes to the PDP's
//! graph (docs/platform.md, "From tables to relationships"). Object ids are the rows'
//! UUIDs; a role or permission as held in a tenant is `{tenant}_{id}`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

/// The one platform object.
pub const PLATFORM: &str = "platform/platform:root";

pub fn user(id: Uuid) -> String {
    format!("platform/user:{id}")
}

pub fn api_key(id: Uuid) -> String {
    format!("platform/api_key:{id}")
}

pub fn tenant(id: Uuid) -> String {
    format!("platform/tenant:{id}")
}

pub fn group(id: Uuid) -> String {
    format!("platform/group:{id}")
}

/// The subject set of a group's members.
pub fn group_members(id: Uuid) -> String {
    format!("platform/group:{id}#member")
}

/// Role `role` as held in tenant `tenant`.
pub fn role(tenant: Uuid, role: Uuid) -> String {
    format!("platform/role:{}", role_id(tenant, role))
}

/// The id of [`role`]'s object.
pub fn role_id(tenant: Uuid, role: Uuid) -> String {
    format!("{tenant}_{role}")
}

/// The subject set of a role's holders in a tenant.
pub fn role_holders(tenant: Uuid, role_id: Uuid) -> String {
    format!("{}#holder", role(tenant, role_id))
}

/// Permission `permission` as granted in tenant `tenant`.
pub fn permission(tenant: Uuid, permission: Uuid) -> String {
    format!("platform/permission:{tenant}_{permission}")
}

/// Changes in the JSON form `arbiter_write` takes.
#[derive(Debug, Default)]
pub struct Feed {
    changes: Vec<Value>,
}

impl Feed {
    pub fn touch(&mut self, resource: &str, relation: &str, subject: &str) {
        self.changes.push(json!({"op": "touch", "resource": resource, "relation": relation, "subject": subject}));
    }

    /// A relationship that expires at `expires_at` (none: never).
    pub fn touch_until(&mut self, resource: &str, relation: &str, subject: &str, expires_at: Option<DateTime<Utc>>) {
        match expires_at {
            Some(at) => self.changes.push(json!({
                "op": "touch", "resource": resource, "relation": relation, "subject": subject,
                "expires_at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            })),
            None => self.touch(resource, relation, subject),
        }
    }

    pub fn delete(&mut self, resource: &str, relation: &str, subject: &str) {
        self.changes.push(json!({"op": "delete", "resource": resource, "relation": relation, "subject": subject}));
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub(crate) fn take(&mut self) -> Value {
        Value::Array(std::mem::take(&mut self.changes))
    }
}
