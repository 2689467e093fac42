-- Decision logs (`arbiter serve --decision-log postgres`): sampled Check decisions,
-- written in batches off the Check path. policy_version is the revision the decision
-- was made at (relationships, schema and policies share revisions).
CREATE TABLE arbiter_decision_logs (
    decision_id text PRIMARY KEY,
    evaluated_at timestamptz NOT NULL,
    resource text NOT NULL,
    permission text NOT NULL,
    subject text NOT NULL,
    decision text NOT NULL CHECK (decision IN ('allowed', 'denied')),
    policy_version bigint NOT NULL,
    latency_ms double precision NOT NULL,
    trace_id text,
    method text NOT NULL
);
CREATE INDEX arbiter_decision_logs_evaluated_at ON arbiter_decision_logs (evaluated_at);
