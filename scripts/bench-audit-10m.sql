-- Adds 10M audit records to a tenant for the audit-query benchmark (BENCHMARKS.md):
-- 1,000 actors over 30 days from 2026-11-01, so one actor's day holds about 333.
--   psql URL -v tenant=TENANT_ID -f scripts/bench-audit-10m.sql
\timing on
INSERT INTO arbiter_admin.audit_records (occurred_at, tenant_id, actor, effective_actor, action, target_type, target_id, request_id, client_ip)
SELECT timestamptz '2026-11-01T00:00:00Z' + g * interval '259 milliseconds', :'tenant'::uuid,
       'api_key:actor-' || (g % 1000), 'api_key:actor-' || (g % 1000),
       (ARRAY['user.update', 'group.member.add', 'acl_entry.create', 'role.update'])[1 + g % 4], 'user', g::text, 'bench-' || g, '10.0.0.1'
FROM generate_series(1, 10000000) g;
ANALYZE arbiter_admin.audit_records;
SELECT count(*) FROM arbiter_admin.audit_records;
