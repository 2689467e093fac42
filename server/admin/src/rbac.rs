//! The feed of roles and permissions (docs/platform.md). A role as held in tenant T is
//! the object `platform/role:T_R`; a permission as granted in T is
//! `platform/permission:T_P`. A tenant's role exists in its tenant; a global role exists
//! in every tenant, so its structure (its parent, the permissions it grants) is written
//! once per tenant: when the role changes (for every tenant) and when a tenant is
//! created (for every global role). Holders (assignments) are written per assignment.
//! The admin's built-in roles are relations of `platform/tenant` instead.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::Tx;
use crate::feed;
use crate::problem::ApiResult;

/// The tenants a role exists in: its own, or every tenant for a global role (the
/// transaction is then in the platform scope, which sees them all).
pub async fn tenants_of(tx: &mut Tx, role_tenant: Option<Uuid>) -> ApiResult<Vec<Uuid>> {
    match role_tenant {
        Some(t) => Ok(vec![t]),
        None => Ok(sqlx::query_scalar("SELECT id FROM arbiter_admin.tenants ORDER BY id").fetch_all(tx.conn()).await?),
    }
}

/// Touches (`add`) or deletes the edge that makes holders of `role` hold `parent`, in
/// each of `tenants`.
pub fn parent_edges(tx: &mut Tx, tenants: &[Uuid], role: Uuid, parent: Uuid, add: bool) {
    for &t in tenants {
        let (resource, subject) = (feed::role(t, parent), feed::role_holders(t, role));
        if add {
            tx.feed.touch(&resource, "holder", &subject);
        } else {
            tx.feed.delete(&resource, "holder", &subject);
        }
    }
}

/// Touches or deletes the edge that grants `permission` to holders of `role`, in each of
/// `tenants`.
pub fn grant_edges(tx: &mut Tx, tenants: &[Uuid], role: Uuid, permission: Uuid, add: bool) {
    for &t in tenants {
        let (resource, subject) = (feed::permission(t, permission), feed::role_holders(t, role));
        if add {
            tx.feed.touch(&resource, "granted", &subject);
        } else {
            tx.feed.delete(&resource, "granted", &subject);
        }
    }
}

/// Writes (or deletes) a role's whole structure in `tenants`: its parent edge and the
/// edges of every permission it grants.
pub async fn structure(tx: &mut Tx, tenants: &[Uuid], role: Uuid, add: bool) -> ApiResult<()> {
    let parent: Option<Uuid> = sqlx::query_scalar("SELECT parent_role_id FROM arbiter_admin.roles WHERE id = $1")
        .bind(role)
        .fetch_optional(tx.conn())
        .await?
        .flatten();
    if let Some(p) = parent {
        parent_edges(tx, tenants, role, p, add);
    }
    let permissions: Vec<Uuid> = sqlx::query_scalar("SELECT permission_id FROM arbiter_admin.role_permissions WHERE role_id = $1")
        .bind(role)
        .fetch_all(tx.conn())
        .await?;
    for p in permissions {
        grant_edges(tx, tenants, role, p, add);
    }
    Ok(())
}

/// A new tenant gets every global role's structure.
pub async fn provision_global_roles(tx: &mut Tx, tenant: Uuid) -> ApiResult<()> {
    let roles: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM arbiter_admin.roles WHERE tenant_id IS NULL AND builtin IS NULL ORDER BY id")
        .fetch_all(tx.conn())
        .await?;
    for r in roles {
        structure(tx, &[tenant], r, true).await?;
    }
    Ok(())
}

/// Who an assignment gives the role to.
#[derive(Debug, Clone, Copy)]
pub enum Assignee {
    User(Uuid),
    Group(Uuid),
}

/// The relationship an assignment feeds: a holder of the role in the tenant, or, for a
/// built-in role, the tenant relation of the same name.
pub fn assignment_edge(tx: &mut Tx, tenant: Uuid, role: Uuid, builtin: Option<&str>, who: Assignee, expires_at: Option<DateTime<Utc>>, add: bool) {
    let subject = match who {
        Assignee::User(u) => feed::user(u),
        Assignee::Group(g) => feed::group_members(g),
    };
    let (resource, relation) = match builtin {
        Some(b) => (feed::tenant(tenant), b.to_string()),
        None => (feed::role(tenant, role), "holder".to_string()),
    };
    if add {
        tx.feed.touch_until(&resource, &relation, &subject, expires_at);
    } else {
        tx.feed.delete(&resource, &relation, &subject);
    }
}
