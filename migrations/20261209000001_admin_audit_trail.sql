-- Admin server 3, the audit trail as a product: log streams with retention, per-service
-- audit configs, events reported by other services, refused calls in the security
-- stream, and alert rules whose alerts go out by webhook.

-- Where records go and how long they stay (seed `log_streams`). Three are built in:
-- `changes` (every mutating call), `security` (refused calls) and `events` (what other
-- services report). A stream without retention_days keeps its records.
CREATE TABLE arbiter_admin.log_streams (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    retention_days integer CHECK (retention_days BETWEEN 1 AND 36500),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    built_in boolean NOT NULL DEFAULT false,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO arbiter_admin.log_streams (id, name, retention_days, description, built_in) VALUES
    ('00000000-0000-7000-8000-000000000001', 'changes', NULL, 'Every mutating call of the admin API', true),
    ('00000000-0000-7000-8000-000000000002', 'security', 365, 'Calls refused for want of a key or a permission', true),
    ('00000000-0000-7000-8000-000000000003', 'events', 90, 'Events other services report', true);

-- Which of a service's events are kept, where, and for how long (seed `audit_configs`).
-- enabled_events holds patterns: an event type (`login.failed`), a prefix
-- (`login.*`), or `*`. A service without a config has all its events kept. The admin's
-- own changes are kept whatever its config says: every change is audited.
CREATE TABLE arbiter_admin.audit_configs (
    id uuid PRIMARY KEY,
    service_name text NOT NULL UNIQUE CHECK (service_name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    enabled_events text[] NOT NULL CHECK (cardinality(enabled_events) <= 100),
    retention_days integer CHECK (retention_days BETWEEN 1 AND 36500),
    stream text NOT NULL DEFAULT 'events' REFERENCES arbiter_admin.log_streams (name),
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The trail gains the seed's service, severity and payload, and its stream. Existing
-- records are the admin's changes.
ALTER TABLE arbiter_admin.audit_records
    ADD COLUMN stream text NOT NULL DEFAULT 'changes' REFERENCES arbiter_admin.log_streams (name),
    ADD COLUMN service_name text NOT NULL DEFAULT 'admin',
    ADD COLUMN severity text NOT NULL DEFAULT 'low' CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    ADD COLUMN payload jsonb;

-- A query is by time, newest first, with one of these in front; (occurred_at, id) is
-- the trail's order and its cursor.
DROP INDEX arbiter_admin.audit_records_tenant_time;
DROP INDEX arbiter_admin.audit_records_actor_time;
CREATE INDEX audit_records_time ON arbiter_admin.audit_records (occurred_at, id);
CREATE INDEX audit_records_tenant_time ON arbiter_admin.audit_records (tenant_id, occurred_at, id);
CREATE INDEX audit_records_actor_time ON arbiter_admin.audit_records (actor, occurred_at, id);
CREATE INDEX audit_records_effective_actor_time ON arbiter_admin.audit_records (effective_actor, occurred_at, id);
CREATE INDEX audit_records_request ON arbiter_admin.audit_records (request_id);
CREATE INDEX audit_records_stream_time ON arbiter_admin.audit_records (stream, occurred_at);
CREATE INDEX audit_records_service_time ON arbiter_admin.audit_records (service_name, occurred_at);

-- The retention sweep (a background job): records older than their stream's or their
-- service's retention_days (the shorter wins) go, at most `batch` per call. The app
-- role may not delete records; this function, run as its owner, is the one way.
CREATE FUNCTION arbiter_admin.sweep_audit_records(batch integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = arbiter_admin, pg_temp AS $$
DECLARE
    gone bigint := 0;
    n bigint;
    s record;
BEGIN
    FOR s IN SELECT name, retention_days FROM log_streams WHERE retention_days IS NOT NULL LOOP
        DELETE FROM audit_records WHERE id IN (
            SELECT id FROM audit_records
            WHERE stream = s.name AND occurred_at < now() - make_interval(days => s.retention_days)
            LIMIT greatest(batch - gone, 0));
        GET DIAGNOSTICS n = ROW_COUNT;
        gone := gone + n;
    END LOOP;
    FOR s IN SELECT service_name, retention_days FROM audit_configs WHERE retention_days IS NOT NULL LOOP
        DELETE FROM audit_records WHERE id IN (
            SELECT id FROM audit_records
            WHERE service_name = s.service_name AND occurred_at < now() - make_interval(days => s.retention_days)
            LIMIT greatest(batch - gone, 0));
        GET DIAGNOSTICS n = ROW_COUNT;
        gone := gone + n;
    END LOOP;
    RETURN gone;
END;
$$;

-- Alert rules over the trail (seed `audit_alerts` are what they raise). A rule matches
-- records whose action fits `event_pattern` (and, when set, whose severity is at least
-- `min_severity`); it raises an alert when one actor has `threshold` matching records
-- within `window_seconds`. A tenant's rule sees that tenant's records; a platform rule
-- (tenant_id NULL) sees every record. The webhook's signing secret is encrypted with
-- the key-encryption key.
CREATE TABLE arbiter_admin.alert_rules (
    id uuid PRIMARY KEY,
    tenant_id uuid REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    event_pattern text NOT NULL CHECK (event_pattern ~ '^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$'),
    min_severity text NOT NULL DEFAULT 'low' CHECK (min_severity IN ('low', 'medium', 'high', 'critical')),
    threshold integer NOT NULL DEFAULT 1 CHECK (threshold BETWEEN 1 AND 100000),
    window_seconds integer NOT NULL DEFAULT 60 CHECK (window_seconds BETWEEN 1 AND 86400),
    webhook_url text CHECK (length(webhook_url) <= 2000),
    sealed_webhook_secret bytea,
    enabled boolean NOT NULL DEFAULT true,
    created_by text NOT NULL,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_rules_tenant ON arbiter_admin.alert_rules (tenant_id, id);

-- An alert: the rule, the record that tripped it, and its state. The rule's name is
-- kept, so an alert outlives its rule.
CREATE TABLE arbiter_admin.audit_alerts (
    id uuid PRIMARY KEY,
    rule_id uuid REFERENCES arbiter_admin.alert_rules (id) ON DELETE SET NULL,
    tenant_id uuid,
    record_id bigint NOT NULL,
    alert_type text NOT NULL,
    actor text NOT NULL,
    -- Matching records by the actor within the window when it was raised.
    count integer NOT NULL,
    resolved boolean NOT NULL DEFAULT false,
    resolved_at timestamptz,
    resolved_by text,
    resolution text,
    -- Delivery to the rule's webhook: none (no webhook), pending, delivered, failed.
    webhook_status text NOT NULL DEFAULT 'none' CHECK (webhook_status IN ('none', 'pending', 'delivered', 'failed')),
    webhook_attempts integer NOT NULL DEFAULT 0,
    webhook_next_at timestamptz,
    webhook_error text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_alerts_tenant ON arbiter_admin.audit_alerts (tenant_id, id);
CREATE INDEX audit_alerts_open ON arbiter_admin.audit_alerts (rule_id, actor) WHERE NOT resolved;
CREATE INDEX audit_alerts_webhook_due ON arbiter_admin.audit_alerts (webhook_next_at) WHERE webhook_status = 'pending';

-- Records waiting for the alert job, queued by the insert that wrote them (so none is
-- missed whatever order transactions commit in). Only while some rule is enabled.
CREATE TABLE arbiter_admin.alert_queue (
    record_id bigint PRIMARY KEY
);

CREATE FUNCTION arbiter_admin.queue_for_alerts() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = arbiter_admin, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM alert_rules WHERE enabled) THEN
        INSERT INTO alert_queue (record_id) VALUES (NEW.id);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_records_alerts AFTER INSERT ON arbiter_admin.audit_records
    FOR EACH ROW EXECUTE FUNCTION arbiter_admin.queue_for_alerts();

ALTER TABLE arbiter_admin.alert_rules ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.alert_rules USING (arbiter_admin.platform_scope() OR tenant_id = arbiter_admin.current_tenant());
ALTER TABLE arbiter_admin.audit_alerts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.audit_alerts USING (arbiter_admin.platform_scope() OR tenant_id = arbiter_admin.current_tenant());
-- Streams and configs are the platform's: every scope reads them, operators write them.
ALTER TABLE arbiter_admin.log_streams ENABLE ROW LEVEL SECURITY;
CREATE POLICY read_all ON arbiter_admin.log_streams FOR SELECT USING (true);
CREATE POLICY platform_writes ON arbiter_admin.log_streams USING (arbiter_admin.platform_scope());
ALTER TABLE arbiter_admin.audit_configs ENABLE ROW LEVEL SECURITY;
CREATE POLICY read_all ON arbiter_admin.audit_configs FOR SELECT USING (true);
CREATE POLICY platform_writes ON arbiter_admin.audit_configs USING (arbiter_admin.platform_scope());
ALTER TABLE arbiter_admin.alert_queue ENABLE ROW LEVEL SECURITY;
CREATE POLICY platform_rows ON arbiter_admin.alert_queue USING (arbiter_admin.platform_scope());

GRANT SELECT, INSERT, UPDATE, DELETE ON arbiter_admin.log_streams, arbiter_admin.audit_configs, arbiter_admin.alert_rules,
    arbiter_admin.audit_alerts, arbiter_admin.alert_queue TO arbiter_admin_app;
GRANT EXECUTE ON FUNCTION arbiter_admin.sweep_audit_records(integer) TO arbiter_admin_app;
