-- Admin server 3, decisions and their enforcement: the PDP's decision logs as the admin
-- reads them (a tenant sees the decisions on its own objects), and what policy
-- enforcement points report they enforced for a decision (seed `pep_logs`).

-- The tenant an object (`type:id`) belongs to: the tenant itself, a role or permission
-- as held in it (`<tenant>_<id>`), or an object whose `tenant` relation names it.
CREATE FUNCTION arbiter_admin.object_tenant(object text) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = arbiter_admin, public, pg_temp AS $$
    WITH o AS (
        SELECT split_part(object, ':', 1) AS t, substr(object, length(split_part(object, ':', 1)) + 2) AS i
    ), owner AS (
        SELECT CASE
            WHEN o.t = 'platform/tenant' THEN o.i
            WHEN o.t IN ('platform/role', 'platform/permission') THEN left(o.i, 36)
            ELSE (SELECT r.subject_id FROM relationships r
                  WHERE r.resource_type = o.t AND r.resource_id = o.i AND r.relation = 'tenant'
                    AND r.subject_type = 'platform/tenant' AND r.subject_relation = ''
                  LIMIT 1)
        END AS id
        FROM o
    )
    SELECT CASE WHEN id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN id::uuid END FROM owner;
$$;

-- The decision logs the admin reads: every one for platform operators, a tenant's own
-- in a tenant's transaction (enforced here, whatever the handler asks).
CREATE VIEW arbiter_admin.decision_logs WITH (security_barrier) AS
    SELECT d.decision_id, d.evaluated_at, d.resource, d.permission, d.subject, d.decision, d.policy_version, d.latency_ms, d.trace_id, d.method
    FROM public.arbiter_decision_logs d
    WHERE arbiter_admin.platform_scope() OR arbiter_admin.object_tenant(d.resource) = arbiter_admin.current_tenant();
CREATE INDEX IF NOT EXISTS arbiter_decision_logs_subject_time ON public.arbiter_decision_logs (subject, evaluated_at);
CREATE INDEX IF NOT EXISTS arbiter_decision_logs_resource_time ON public.arbiter_decision_logs (resource, evaluated_at);

-- What an enforcement point did with a decision (seed `pep_logs`): its name (the seed's
-- pep_id), the decision it enforced, when, the outcome and the policy version it saw.
-- No foreign key: decision logs are sampled, so a report may name a decision that was
-- not logged; reads join the two.
CREATE TABLE arbiter_admin.pep_logs (
    id uuid PRIMARY KEY,
    tenant_id uuid REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    decision_id text NOT NULL CHECK (length(decision_id) BETWEEN 1 AND 256),
    pep text NOT NULL CHECK (length(pep) BETWEEN 1 AND 200),
    enforcement_time timestamptz NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('allowed', 'denied', 'error')),
    policy_version bigint CHECK (policy_version >= 0),
    reported_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pep_logs_decision ON arbiter_admin.pep_logs (decision_id);
CREATE INDEX pep_logs_tenant ON arbiter_admin.pep_logs (tenant_id, id);

ALTER TABLE arbiter_admin.pep_logs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.pep_logs USING (arbiter_admin.platform_scope() OR tenant_id = arbiter_admin.current_tenant());

GRANT SELECT, INSERT ON arbiter_admin.pep_logs TO arbiter_admin_app;
GRANT SELECT ON arbiter_admin.decision_logs TO arbiter_admin_app;
