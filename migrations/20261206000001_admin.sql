-- The admin server's tables (DESIGN §12), in their own schema beside the PDP's.
-- migrations/README.md maps every seed table to where it lives here and which endpoint
-- serves it.
--
-- Tenancy is enforced by row-level security: the admin runs each transaction as the
-- non-superuser role arbiter_admin_app with `arbiter.tenant_id` set to the one tenant it
-- acts in (or `arbiter.scope` = 'platform' on the platform operators' explicit,
-- audited endpoints). A handler bug cannot read or write another tenant's rows.

CREATE SCHEMA arbiter_admin;

-- The role every admin transaction runs as (SET LOCAL ROLE). Roles are per cluster, so
-- the role may exist already (another database of the same cluster).
DO $$
BEGIN
    CREATE ROLE arbiter_admin_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- The tenant the transaction acts in, or NULL.
CREATE FUNCTION arbiter_admin.current_tenant() RETURNS uuid
LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('arbiter.tenant_id', true), '')::uuid $$;

-- Does the transaction act across tenants (a platform operator's explicit endpoint)?
CREATE FUNCTION arbiter_admin.platform_scope() RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT coalesce(current_setting('arbiter.scope', true), '') = 'platform' $$;

-- May the transaction see a row of tenant `t`?
CREATE FUNCTION arbiter_admin.visible(t uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT arbiter_admin.platform_scope() OR t = arbiter_admin.current_tenant() $$;

-- ---------------------------------------------------------------------------------
-- Tenancy

CREATE TABLE arbiter_admin.tenants (
    id uuid PRIMARY KEY,
    slug text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9](-?[a-z0-9])*$' AND length(slug) <= 63),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'pending_deletion')),
    status_reason text,
    grace_period_days integer NOT NULL DEFAULT 30 CHECK (grace_period_days BETWEEN 0 AND 365),
    deletion_requested_at timestamptz,
    deletion_scheduled_at timestamptz,
    settings jsonb NOT NULL DEFAULT '{}'::jsonb,
    feature_flags jsonb NOT NULL DEFAULT '{}'::jsonb,
    quotas jsonb NOT NULL DEFAULT '{}'::jsonb,
    security_policy jsonb NOT NULL DEFAULT '{}'::jsonb,
    onboarding_status text NOT NULL DEFAULT 'pending' CHECK (onboarding_status IN ('pending', 'in_progress', 'completed')),
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'pending_deletion') = (deletion_scheduled_at IS NOT NULL))
);
CREATE INDEX tenants_status ON arbiter_admin.tenants (status);
CREATE INDEX tenants_deletion_due ON arbiter_admin.tenants (deletion_scheduled_at) WHERE deletion_scheduled_at IS NOT NULL;

CREATE TABLE arbiter_admin.tenant_domains (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    domain text NOT NULL UNIQUE CHECK (domain ~ '^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$' AND length(domain) <= 253),
    is_primary boolean NOT NULL DEFAULT false,
    verified_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_domains_tenant ON arbiter_admin.tenant_domains (tenant_id);

-- ---------------------------------------------------------------------------------
-- Directory: global identities, their tenant memberships, profile extras

CREATE TABLE arbiter_admin.users (
    id uuid PRIMARY KEY,
    email text NOT NULL CHECK (length(email) <= 1000 AND email LIKE '%_@_%'),
    username text CHECK (username ~ '^[a-z0-9._-]{1,64}$'),
    first_name text NOT NULL DEFAULT '',
    last_name text NOT NULL DEFAULT '',
    display_name text NOT NULL DEFAULT '',
    locale text NOT NULL DEFAULT 'en',
    timezone text NOT NULL DEFAULT 'UTC',
    avatar_url text,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
    status_reason text,
    status_changed_at timestamptz,
    status_changed_by text,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    deleted_at timestamptz,
    deleted_by text,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'deleted') = (deleted_at IS NOT NULL))
);
-- One identity per address among the living; a deleted user's address is free again.
CREATE UNIQUE INDEX users_email ON arbiter_admin.users (email) WHERE status <> 'deleted';
CREATE UNIQUE INDEX users_username ON arbiter_admin.users (username) WHERE status <> 'deleted' AND username IS NOT NULL;

CREATE TABLE arbiter_admin.departments (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    parent_id uuid REFERENCES arbiter_admin.departments (id) ON DELETE RESTRICT,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE arbiter_admin.tenant_users (
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES arbiter_admin.users (id) ON DELETE CASCADE,
    is_root_admin boolean NOT NULL DEFAULT false,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    department_id uuid REFERENCES arbiter_admin.departments (id) ON DELETE SET NULL,
    title text NOT NULL DEFAULT '',
    joined_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX tenant_users_user ON arbiter_admin.tenant_users (user_id);

-- Preferences per tenant, or global (tenant_id NULL).
CREATE TABLE arbiter_admin.user_preferences (
    user_id uuid NOT NULL REFERENCES arbiter_admin.users (id) ON DELETE CASCADE,
    tenant_id uuid REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    key text NOT NULL CHECK (key ~ '^[a-zA-Z0-9._-]{1,128}$'),
    value jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX user_preferences_key
    ON arbiter_admin.user_preferences (user_id, coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid), key);

CREATE TABLE arbiter_admin.user_contacts (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES arbiter_admin.users (id) ON DELETE CASCADE,
    type text NOT NULL CHECK (type IN ('email', 'phone', 'address', 'other')),
    value text NOT NULL CHECK (length(value) BETWEEN 1 AND 500),
    is_default boolean NOT NULL DEFAULT false,
    verified_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, type, value)
);

-- ---------------------------------------------------------------------------------
-- Groups

CREATE TABLE arbiter_admin.groups (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- A member of a group: a user (with a role within the group) or another group of the
-- same tenant (nesting: its members are members).
CREATE TABLE arbiter_admin.group_members (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    group_id uuid NOT NULL REFERENCES arbiter_admin.groups (id) ON DELETE CASCADE,
    user_id uuid REFERENCES arbiter_admin.users (id) ON DELETE CASCADE,
    member_group_id uuid REFERENCES arbiter_admin.groups (id) ON DELETE CASCADE,
    role text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'manager', 'member')),
    added_by text,
    added_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((user_id IS NULL) <> (member_group_id IS NULL)),
    CHECK (member_group_id IS NULL OR role = 'member'),
    CHECK (member_group_id IS DISTINCT FROM group_id)
);
CREATE UNIQUE INDEX group_members_user ON arbiter_admin.group_members (group_id, user_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX group_members_group ON arbiter_admin.group_members (group_id, member_group_id) WHERE member_group_id IS NOT NULL;
CREATE INDEX group_members_by_user ON arbiter_admin.group_members (user_id);
CREATE INDEX group_members_by_group ON arbiter_admin.group_members (member_group_id);

-- ---------------------------------------------------------------------------------
-- Roles and permissions

-- A role of one tenant, or a global one (tenant_id NULL) that every tenant may assign.
-- `builtin` marks the admin's own roles, whose holders the platform schema knows by
-- relation (platform/tenant#admin, #user_manager, #auditor).
CREATE TABLE arbiter_admin.roles (
    id uuid PRIMARY KEY,
    tenant_id uuid REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    parent_role_id uuid REFERENCES arbiter_admin.roles (id) ON DELETE RESTRICT,
    builtin text UNIQUE CHECK (builtin IN ('admin', 'user_manager', 'auditor')),
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (builtin IS NULL OR (tenant_id IS NULL AND parent_role_id IS NULL)),
    CHECK (parent_role_id IS DISTINCT FROM id)
);
CREATE UNIQUE INDEX roles_name ON arbiter_admin.roles (coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid), name);

CREATE TABLE arbiter_admin.permissions (
    id uuid PRIMARY KEY,
    tenant_id uuid REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (name ~ '^[a-zA-Z0-9._:-]{1,200}$'),
    description text NOT NULL DEFAULT '',
    resource text NOT NULL CHECK (length(resource) BETWEEN 1 AND 200),
    action text NOT NULL CHECK (length(action) BETWEEN 1 AND 200),
    tags text[] NOT NULL DEFAULT '{}',
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX permissions_name ON arbiter_admin.permissions (coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid), name);

-- A role grants a permission. The row carries the role's tenant (NULL for a global role).
CREATE TABLE arbiter_admin.role_permissions (
    role_id uuid NOT NULL REFERENCES arbiter_admin.roles (id) ON DELETE CASCADE,
    permission_id uuid NOT NULL REFERENCES arbiter_admin.permissions (id) ON DELETE CASCADE,
    tenant_id uuid REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    granted_by text,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role_id, permission_id)
);

-- A role held by a user or a group in one tenant, until expires_at if set.
CREATE TABLE arbiter_admin.role_assignments (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    role_id uuid NOT NULL REFERENCES arbiter_admin.roles (id) ON DELETE CASCADE,
    user_id uuid REFERENCES arbiter_admin.users (id) ON DELETE CASCADE,
    group_id uuid REFERENCES arbiter_admin.groups (id) ON DELETE CASCADE,
    expires_at timestamptz,
    assigned_by text,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((user_id IS NULL) <> (group_id IS NULL))
);
CREATE UNIQUE INDEX role_assignments_user ON arbiter_admin.role_assignments (tenant_id, role_id, user_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX role_assignments_group ON arbiter_admin.role_assignments (tenant_id, role_id, group_id) WHERE group_id IS NOT NULL;
CREATE INDEX role_assignments_by_user ON arbiter_admin.role_assignments (user_id);

-- Roles and their permissions that provision a new tenant (`template` on tenant create):
-- {"roles": [{"name": ..., "description": ..., "parent": NAME?, "permissions": [NAME...]}]}
-- naming permissions of the global catalogue.
CREATE TABLE arbiter_admin.role_templates (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    description text NOT NULL DEFAULT '',
    document jsonb NOT NULL,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The admin's own roles, one row each, known to the platform schema by relation.
INSERT INTO arbiter_admin.roles (id, tenant_id, name, description, builtin) VALUES
    ('00000000-0000-4000-8000-000000000001', NULL, 'tenant admin', 'Administers the tenant: settings, users, groups, roles and API keys', 'admin'),
    ('00000000-0000-4000-8000-000000000002', NULL, 'user manager', 'Manages the tenant''s users, groups and departments', 'user_manager'),
    ('00000000-0000-4000-8000-000000000003', NULL, 'auditor', 'Reads the directory, roles and the audit trail; changes nothing', 'auditor');

-- ---------------------------------------------------------------------------------
-- Machine callers

-- An API key: `Authorization: Bearer <id>.<secret>`. Only a keyed hash of the secret is
-- kept (HMAC-SHA-256 with the server pepper of `pepper_version`). A key acts in one
-- tenant with one of the admin's roles, or across tenants as a platform operator.
CREATE TABLE arbiter_admin.api_keys (
    id uuid PRIMARY KEY,
    tenant_id uuid REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role text NOT NULL CHECK (role IN ('operator', 'owner', 'admin', 'user_manager', 'auditor')),
    secret_hash bytea NOT NULL,
    pepper_version integer NOT NULL,
    created_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    rotated_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    CHECK ((role = 'operator') = (tenant_id IS NULL))
);
CREATE INDEX api_keys_tenant ON arbiter_admin.api_keys (tenant_id);

-- ---------------------------------------------------------------------------------
-- Audit (append-only) and idempotency

CREATE TABLE arbiter_admin.audit_records (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    tenant_id uuid,
    actor text NOT NULL,
    effective_actor text NOT NULL,
    action text NOT NULL,
    target_type text NOT NULL,
    target_id text NOT NULL,
    before jsonb,
    after jsonb,
    revision bigint,
    request_id text NOT NULL,
    client_ip text,
    user_agent text
);
CREATE INDEX audit_records_tenant_time ON arbiter_admin.audit_records (tenant_id, occurred_at);
CREATE INDEX audit_records_actor_time ON arbiter_admin.audit_records (actor, occurred_at);

CREATE FUNCTION arbiter_admin.audit_is_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only' USING ERRCODE = '42501';
END;
$$;
CREATE TRIGGER audit_records_append_only BEFORE UPDATE ON arbiter_admin.audit_records
    FOR EACH ROW EXECUTE FUNCTION arbiter_admin.audit_is_append_only();

-- A create's response, kept for replays of its Idempotency-Key (24 hours).
CREATE TABLE arbiter_admin.idempotency_keys (
    caller text NOT NULL,
    key text NOT NULL,
    tenant_id uuid,
    method text NOT NULL,
    path text NOT NULL,
    request_hash bytea NOT NULL,
    status integer NOT NULL,
    response jsonb NOT NULL,
    revision bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key)
);

-- ---------------------------------------------------------------------------------
-- Row-level security

ALTER TABLE arbiter_admin.tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.tenants USING (arbiter_admin.visible(id));

ALTER TABLE arbiter_admin.tenant_domains ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.tenant_domains USING (arbiter_admin.visible(tenant_id));

ALTER TABLE arbiter_admin.tenant_users ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.tenant_users USING (arbiter_admin.visible(tenant_id));

ALTER TABLE arbiter_admin.departments ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.departments USING (arbiter_admin.visible(tenant_id));

ALTER TABLE arbiter_admin.groups ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.groups USING (arbiter_admin.visible(tenant_id));

ALTER TABLE arbiter_admin.group_members ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.group_members USING (arbiter_admin.visible(tenant_id));

ALTER TABLE arbiter_admin.role_assignments ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.role_assignments USING (arbiter_admin.visible(tenant_id));

ALTER TABLE arbiter_admin.api_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.api_keys USING (arbiter_admin.visible(tenant_id));

-- A user (a global identity) is visible in a tenant it belongs to. Creating one inside
-- a tenant inserts the user, then its membership, in one transaction.
ALTER TABLE arbiter_admin.users ENABLE ROW LEVEL SECURITY;
CREATE POLICY users_read ON arbiter_admin.users FOR SELECT USING (
    arbiter_admin.platform_scope()
    OR EXISTS (SELECT 1 FROM arbiter_admin.tenant_users tu
               WHERE tu.user_id = users.id AND tu.tenant_id = arbiter_admin.current_tenant()));
CREATE POLICY users_insert ON arbiter_admin.users FOR INSERT
    WITH CHECK (arbiter_admin.platform_scope() OR arbiter_admin.current_tenant() IS NOT NULL);
CREATE POLICY users_update ON arbiter_admin.users FOR UPDATE USING (
    arbiter_admin.platform_scope()
    OR EXISTS (SELECT 1 FROM arbiter_admin.tenant_users tu
               WHERE tu.user_id = users.id AND tu.tenant_id = arbiter_admin.current_tenant()));

-- A user's extras follow the user's visibility; a preference of another tenant stays
-- that tenant's.
ALTER TABLE arbiter_admin.user_contacts ENABLE ROW LEVEL SECURITY;
CREATE POLICY user_rows ON arbiter_admin.user_contacts USING (
    arbiter_admin.platform_scope()
    OR EXISTS (SELECT 1 FROM arbiter_admin.tenant_users tu
               WHERE tu.user_id = user_contacts.user_id AND tu.tenant_id = arbiter_admin.current_tenant()));

ALTER TABLE arbiter_admin.user_preferences ENABLE ROW LEVEL SECURITY;
CREATE POLICY user_rows ON arbiter_admin.user_preferences USING (
    arbiter_admin.platform_scope()
    OR (coalesce(tenant_id = arbiter_admin.current_tenant(), tenant_id IS NULL)
        AND EXISTS (SELECT 1 FROM arbiter_admin.tenant_users tu
                    WHERE tu.user_id = user_preferences.user_id AND tu.tenant_id = arbiter_admin.current_tenant())));

-- Global roles and permissions are read by every tenant and written only by operators.
ALTER TABLE arbiter_admin.roles ENABLE ROW LEVEL SECURITY;
CREATE POLICY roles_read ON arbiter_admin.roles FOR SELECT USING (tenant_id IS NULL OR arbiter_admin.visible(tenant_id));
CREATE POLICY roles_write ON arbiter_admin.roles FOR ALL
    USING (arbiter_admin.platform_scope() OR (tenant_id IS NOT NULL AND arbiter_admin.visible(tenant_id)))
    WITH CHECK (arbiter_admin.platform_scope() OR (tenant_id IS NOT NULL AND arbiter_admin.visible(tenant_id)));

ALTER TABLE arbiter_admin.permissions ENABLE ROW LEVEL SECURITY;
CREATE POLICY permissions_read ON arbiter_admin.permissions FOR SELECT USING (tenant_id IS NULL OR arbiter_admin.visible(tenant_id));
CREATE POLICY permissions_write ON arbiter_admin.permissions FOR ALL
    USING (arbiter_admin.platform_scope() OR (tenant_id IS NOT NULL AND arbiter_admin.visible(tenant_id)))
    WITH CHECK (arbiter_admin.platform_scope() OR (tenant_id IS NOT NULL AND arbiter_admin.visible(tenant_id)));

ALTER TABLE arbiter_admin.role_permissions ENABLE ROW LEVEL SECURITY;
CREATE POLICY role_permissions_read ON arbiter_admin.role_permissions FOR SELECT USING (tenant_id IS NULL OR arbiter_admin.visible(tenant_id));
CREATE POLICY role_permissions_write ON arbiter_admin.role_permissions FOR ALL
    USING (arbiter_admin.platform_scope() OR (tenant_id IS NOT NULL AND arbiter_admin.visible(tenant_id)))
    WITH CHECK (arbiter_admin.platform_scope() OR (tenant_id IS NOT NULL AND arbiter_admin.visible(tenant_id)));

ALTER TABLE arbiter_admin.role_templates ENABLE ROW LEVEL SECURITY;
CREATE POLICY templates_read ON arbiter_admin.role_templates FOR SELECT USING (true);
CREATE POLICY templates_write ON arbiter_admin.role_templates FOR ALL
    USING (arbiter_admin.platform_scope()) WITH CHECK (arbiter_admin.platform_scope());

ALTER TABLE arbiter_admin.audit_records ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_read ON arbiter_admin.audit_records FOR SELECT USING (arbiter_admin.platform_scope() OR tenant_id = arbiter_admin.current_tenant());
CREATE POLICY audit_insert ON arbiter_admin.audit_records FOR INSERT
    WITH CHECK (arbiter_admin.platform_scope() OR tenant_id = arbiter_admin.current_tenant());

-- Idempotency records belong to their caller; the admin looks them up by caller.
ALTER TABLE arbiter_admin.idempotency_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY idempotency_rows ON arbiter_admin.idempotency_keys
    USING (tenant_id IS NULL OR arbiter_admin.visible(tenant_id));

-- ---------------------------------------------------------------------------------
-- What the role may do: its own tables (audit: read and append only), and the PDP's
-- write path (arbiter_write takes the revision counter's lock and logs the changes).

GRANT USAGE ON SCHEMA arbiter_admin TO arbiter_admin_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA arbiter_admin TO arbiter_admin_app;
REVOKE UPDATE, DELETE, TRUNCATE ON arbiter_admin.audit_records FROM arbiter_admin_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA arbiter_admin TO arbiter_admin_app;
GRANT SELECT, UPDATE ON arbiter_revision TO arbiter_admin_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON relationships TO arbiter_admin_app;
GRANT SELECT, INSERT ON arbiter_changelog TO arbiter_admin_app;
GRANT SELECT ON arbiter_schema TO arbiter_admin_app;
GRANT EXECUTE ON FUNCTION arbiter_write(jsonb, jsonb) TO arbiter_admin_app;
GRANT EXECUTE ON FUNCTION arbiter_apply(bigint, jsonb, text, jsonb) TO arbiter_admin_app;
