-- Admin server 2, access control lists: entries that grant a user or a group of a tenant
-- relations on one object of the application's own types, and their change log.
-- Each entry feeds one relationship per relation (docs/platform.md); the object is
-- claimed for the tenant by `type:id#tenant@platform/tenant:T`.

CREATE TABLE arbiter_admin.acl_entries (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    resource_type text NOT NULL CHECK (length(resource_type) BETWEEN 1 AND 128),
    resource_id text NOT NULL CHECK (length(resource_id) BETWEEN 1 AND 1024),
    -- The seed's `user_or_group`: who the entry grants to.
    subject_type text NOT NULL CHECK (subject_type IN ('user', 'group')),
    subject_id uuid NOT NULL,
    -- The seed's `permissions`: relations of the object's type, each a relationship.
    relations text[] NOT NULL CHECK (cardinality(relations) BETWEEN 1 AND 32),
    expires_at timestamptz,
    created_by text NOT NULL,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT acl_entries_one_per_subject UNIQUE (tenant_id, resource_type, resource_id, subject_type, subject_id)
);
CREATE INDEX acl_entries_subject ON arbiter_admin.acl_entries (tenant_id, subject_type, subject_id);

-- Every change to an entry, append-only: what it was and what it became. Ids are
-- UUIDv7, so their order is the order of the changes.
CREATE TABLE arbiter_admin.acl_logs (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    entry_id uuid NOT NULL,
    change_type text NOT NULL CHECK (change_type IN ('create', 'update', 'delete')),
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    before jsonb,
    after jsonb,
    revision bigint
);
CREATE INDEX acl_logs_entry ON arbiter_admin.acl_logs (tenant_id, entry_id, id);


CREATE TRIGGER acl_logs_append_only BEFORE UPDATE ON arbiter_admin.acl_logs
    FOR EACH ROW EXECUTE FUNCTION arbiter_admin.audit_is_append_only();

ALTER TABLE arbiter_admin.acl_entries ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.acl_entries USING (arbiter_admin.visible(tenant_id));
ALTER TABLE arbiter_admin.acl_logs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.acl_logs USING (arbiter_admin.visible(tenant_id));

GRANT SELECT, INSERT, UPDATE, DELETE ON arbiter_admin.acl_entries TO arbiter_admin_app;
GRANT SELECT, INSERT ON arbiter_admin.acl_logs TO arbiter_admin_app;
