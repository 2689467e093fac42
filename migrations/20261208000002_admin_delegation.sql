-- Admin server 2, acting for others: delegations (a user's role held by another user for
-- a time window) and impersonation sessions (an admin acting as a user, every action
-- audited with the user as the effective actor).

-- A grantor's role, held by the delegate from `valid_from` until `valid_until` (never
-- ending when NULL). Fed, while it lasts, as `platform/delegation:D#delegate@platform/user:U`
-- (expiring at valid_until) and the role's holder (or the built-in role's tenant
-- relation) `...@platform/delegation:D#delegate`. One that starts later is fed by the
-- background job when it starts (`fed`).
CREATE TABLE arbiter_admin.delegations (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    grantor_user_id uuid NOT NULL REFERENCES arbiter_admin.users (id) ON DELETE CASCADE,
    delegate_user_id uuid NOT NULL REFERENCES arbiter_admin.users (id) ON DELETE CASCADE,
    -- The seed's action_scope / permission_id: the role delegated.
    role_id uuid NOT NULL REFERENCES arbiter_admin.roles (id) ON DELETE CASCADE,
    reason text NOT NULL DEFAULT '',
    valid_from timestamptz NOT NULL,
    valid_until timestamptz,
    fed boolean NOT NULL DEFAULT false,
    revoked_at timestamptz,
    revoked_by text,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_until IS NULL OR valid_until > valid_from),
    CHECK (grantor_user_id <> delegate_user_id)
);
CREATE INDEX delegations_tenant ON arbiter_admin.delegations (tenant_id, id);
CREATE INDEX delegations_due ON arbiter_admin.delegations (valid_from) WHERE NOT fed AND revoked_at IS NULL;
CREATE INDEX delegations_fed ON arbiter_admin.delegations (id) WHERE fed AND revoked_at IS NULL;

-- An admin (an API key) acting as a user of a tenant, within `scope` (tenant permissions
-- of the platform schema), until it ends or expires.
CREATE TABLE arbiter_admin.impersonation_sessions (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    -- The seed's admin_user_id: who impersonates (the audit trail's actor).
    impersonator text NOT NULL,
    impersonator_key_id uuid NOT NULL,
    target_user_id uuid NOT NULL REFERENCES arbiter_admin.users (id) ON DELETE CASCADE,
    reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    scope text[] NOT NULL CHECK (cardinality(scope) BETWEEN 1 AND 5),
    started_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    ended_at timestamptz,
    ended_by text,
    CHECK (expires_at > started_at)
);
CREATE INDEX impersonation_sessions_tenant ON arbiter_admin.impersonation_sessions (tenant_id, id);

-- Which impersonation session an audited action ran in (the effective actor is its user).
ALTER TABLE arbiter_admin.audit_records ADD COLUMN impersonation_session_id uuid;

ALTER TABLE arbiter_admin.delegations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.delegations USING (arbiter_admin.visible(tenant_id));
ALTER TABLE arbiter_admin.impersonation_sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.impersonation_sessions USING (arbiter_admin.visible(tenant_id));

GRANT SELECT, INSERT, UPDATE, DELETE ON arbiter_admin.delegations, arbiter_admin.impersonation_sessions TO arbiter_admin_app;
