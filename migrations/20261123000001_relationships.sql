-- Arbiter's source of truth in Postgres: relationships, the changelog that replicas
-- tail, the schema, and the single-row revision counter that orders every write.
--
-- Ordering. Every write transaction (Arbiter's own, and other applications' through
-- arbiter_write below) first locks the one row of arbiter_revision and increments it,
-- holding the lock until commit. So writes commit one at a time, in revision order:
-- when a reader sees revision R committed, every revision below R committed before it.
-- A replica that has applied everything up to R can never later find a change below R.

CREATE TABLE arbiter_revision (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    revision bigint NOT NULL CHECK (revision >= 0)
);
INSERT INTO arbiter_revision (singleton, revision) VALUES (true, 0);

-- The changelog is pruned after a retention window; this records the newest revision
-- pruned, so a replica whose snapshot is older knows it cannot replay and must reload.
CREATE TABLE arbiter_changelog_horizon (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through bigint NOT NULL
);
INSERT INTO arbiter_changelog_horizon (singleton, pruned_through) VALUES (true, 0);

-- The current schema (schema language text) and the revision that wrote it.
CREATE TABLE arbiter_schema (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    schema_text text NOT NULL,
    revision bigint NOT NULL
);

-- One row per relationship `resource_type:resource_id#relation@subject_type:subject_id[#subject_relation]`.
-- subject_relation is '' for a subject that is an object itself. Caveat name and context
-- are kept for compatibility with SpiceDB data (Arbiter refuses caveated writes today).
CREATE TABLE relationships (
    resource_type text NOT NULL,
    resource_id text NOT NULL,
    relation text NOT NULL,
    subject_type text NOT NULL,
    subject_id text NOT NULL,
    subject_relation text NOT NULL DEFAULT '',
    caveat_name text,
    caveat_context jsonb,
    expires_at timestamptz,
    created_revision bigint NOT NULL,
    PRIMARY KEY (resource_type, resource_id, relation, subject_type, subject_id, subject_relation)
);
-- Reads and lookups by subject (the primary key serves reads by resource).
CREATE INDEX relationships_by_subject
    ON relationships (subject_type, subject_id, subject_relation, resource_type, relation);
-- The expiration sweep.
CREATE INDEX relationships_expiring ON relationships (expires_at) WHERE expires_at IS NOT NULL;

-- Every change, in revision order: replicas replay it, Watch streams it.
-- operation: 'touch' and 'delete' carry a relationship; 'schema' carries schema_text.
CREATE TABLE arbiter_changelog (
    revision bigint NOT NULL,
    seq integer NOT NULL,
    operation text NOT NULL CHECK (operation IN ('touch', 'delete', 'schema')),
    resource_type text,
    resource_id text,
    relation text,
    subject_type text,
    subject_id text,
    subject_relation text,
    expires_at timestamptz,
    schema_text text,
    -- The wall clock when the row was written (close to the commit; now() would be the
    -- transaction's start).
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Who wrote it: {"writer": "arbiter"} or what a direct writer passes in.
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (revision, seq),
    CHECK (
        (operation = 'schema' AND schema_text IS NOT NULL)
        OR (operation <> 'schema' AND resource_type IS NOT NULL AND resource_id IS NOT NULL
            AND relation IS NOT NULL AND subject_type IS NOT NULL AND subject_id IS NOT NULL
            AND subject_relation IS NOT NULL)
    )
);
CREATE INDEX arbiter_changelog_committed_at ON arbiter_changelog (committed_at);

-- Applies one revision's changes and optional new schema at `at_revision`: relationship
-- rows, schema row, changelog rows, and a NOTIFY. It does not touch the counter: callers
-- (arbiter_write, arbiter_write_schema, Arbiter's store) hold the counter's row lock and
-- set it. Not for direct use.
CREATE FUNCTION arbiter_apply(at_revision bigint, changes jsonb, new_schema text, metadata jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    change jsonb;
    n integer := 0;
    op text;
    res text[];
    sub text[];
    sub_object text[];
    exp timestamptz;
BEGIN
    IF jsonb_typeof(changes) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'arbiter_write: changes must be a JSON array, got %', coalesce(jsonb_typeof(changes), 'null')
            USING ERRCODE = '22023';
    END IF;
    IF new_schema IS NOT NULL THEN
        INSERT INTO arbiter_schema (singleton, schema_text, revision) VALUES (true, new_schema, at_revision)
        ON CONFLICT (singleton) DO UPDATE SET schema_text = EXCLUDED.schema_text, revision = EXCLUDED.revision;
        INSERT INTO arbiter_changelog (revision, seq, operation, schema_text, metadata)
        VALUES (at_revision, 0, 'schema', new_schema, coalesce(metadata, '{}'::jsonb));
    END IF;
    FOR change IN SELECT * FROM jsonb_array_elements(changes) LOOP
        n := n + 1;
        op := change->>'op';
        IF op IS NULL OR op NOT IN ('touch', 'delete') THEN
            RAISE EXCEPTION 'arbiter_write: change % has op %, expected "touch" or "delete"', n, coalesce(op, 'null')
                USING ERRCODE = '22023';
        END IF;
        res := string_to_array(change->>'resource', ':');
        sub := string_to_array(change->>'subject', '#');
        sub_object := string_to_array(sub[1], ':');
        IF coalesce(array_length(res, 1), 0) <> 2 OR res[1] = '' OR res[2] = ''
            OR coalesce(change->>'relation', '') = ''
            OR coalesce(array_length(sub, 1), 0) NOT IN (1, 2)
            OR coalesce(array_length(sub_object, 1), 0) <> 2 OR sub_object[1] = '' OR sub_object[2] = '' THEN
            RAISE EXCEPTION 'arbiter_write: change % is not a relationship (resource "type:id", relation, and subject "type:id" or "type:id#relation" are required): %', n, change
                USING ERRCODE = '22023';
        END IF;
        exp := (change->>'expires_at')::timestamptz;
        IF op = 'touch' THEN
            INSERT INTO relationships (resource_type, resource_id, relation, subject_type, subject_id,
                                       subject_relation, expires_at, created_revision)
            VALUES (res[1], res[2], change->>'relation', sub_object[1], sub_object[2],
                    coalesce(sub[2], ''), exp, at_revision)
            ON CONFLICT (resource_type, resource_id, relation, subject_type, subject_id, subject_relation)
            DO UPDATE SET expires_at = EXCLUDED.expires_at, created_revision = EXCLUDED.created_revision;
        ELSE
            DELETE FROM relationships
            WHERE resource_type = res[1] AND resource_id = res[2] AND relation = change->>'relation'
              AND subject_type = sub_object[1] AND subject_id = sub_object[2]
              AND subject_relation = coalesce(sub[2], '');
        END IF;
        INSERT INTO arbiter_changelog (revision, seq, operation, resource_type, resource_id, relation,
                                       subject_type, subject_id, subject_relation, expires_at, metadata)
        VALUES (at_revision, n, op, res[1], res[2], change->>'relation', sub_object[1], sub_object[2],
                coalesce(sub[2], ''), exp, coalesce(metadata, '{}'::jsonb));
    END LOOP;
    PERFORM pg_notify('arbiter_changes', at_revision::text);
END;
$$;

-- The documented write path for other applications (and Arbiter's own):
--
--   SELECT arbiter_write('[{"op":"touch","resource":"doc:1","relation":"viewer","subject":"user:alice"},
--                          {"op":"delete","resource":"doc:2","relation":"viewer","subject":"group:eng#member"},
--                          {"op":"touch","resource":"doc:3","relation":"viewer","subject":"user:bob",
--                           "expires_at":"2027-01-01T00:00:00Z"}]'::jsonb,
--                        '{"writer":"billing-service"}'::jsonb);
--
-- Returns the new revision. All changes land at that one revision, atomically with the
-- caller's transaction. 'touch' inserts or replaces, 'delete' removes (a no-op if absent;
-- it is still logged). Shapes are checked here (every field present, ids non-empty);
-- the schema is checked by every replica as it applies, which counts and logs rejects.
CREATE FUNCTION arbiter_write(changes jsonb, metadata jsonb DEFAULT '{}'::jsonb)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    next_revision bigint;
BEGIN
    -- The ordering lock: held until this transaction ends.
    UPDATE arbiter_revision SET revision = revision + 1 RETURNING revision INTO next_revision;
    PERFORM arbiter_apply(next_revision, changes, NULL, metadata);
    RETURN next_revision;
END;
$$;

-- Writes a new schema at a new revision. Arbiter calls it after checking that no stored
-- relationship would be orphaned; a replica refuses to apply a schema that fails that
-- check (and keeps the old one), so direct callers get the same protection.
CREATE FUNCTION arbiter_write_schema(new_schema text, metadata jsonb DEFAULT '{}'::jsonb)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    next_revision bigint;
BEGIN
    UPDATE arbiter_revision SET revision = revision + 1 RETURNING revision INTO next_revision;
    PERFORM arbiter_apply(next_revision, '[]'::jsonb, new_schema, metadata);
    RETURN next_revision;
END;
$$;

-- Deletes every relationship that has expired, logged as deletions at one new revision
-- (no revision when nothing expired). Any replica may call it; the counter lock makes
-- concurrent calls take turns. Returns how many were deleted.
CREATE FUNCTION arbiter_sweep_expired()
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    next_revision bigint;
    n bigint;
BEGIN
    PERFORM 1 FROM arbiter_revision FOR UPDATE;
    IF NOT EXISTS (SELECT 1 FROM relationships WHERE expires_at <= now()) THEN
        RETURN 0;
    END IF;
    UPDATE arbiter_revision SET revision = revision + 1 RETURNING revision INTO next_revision;
    WITH gone AS (
        DELETE FROM relationships WHERE expires_at <= now()
        RETURNING resource_type, resource_id, relation, subject_type, subject_id, subject_relation, expires_at
    )
    INSERT INTO arbiter_changelog (revision, seq, operation, resource_type, resource_id, relation,
                                   subject_type, subject_id, subject_relation, expires_at, metadata)
    SELECT next_revision, row_number() OVER (), 'delete', resource_type, resource_id, relation,
           subject_type, subject_id, subject_relation, expires_at, '{"writer":"arbiter-sweep"}'::jsonb
    FROM gone;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM pg_notify('arbiter_changes', next_revision::text);
    RETURN n;
END;
$$;

-- Prunes changelog rows committed before `before`, always keeping the newest revision's,
-- and records the newest pruned revision as the horizon. Returns the horizon.
CREATE FUNCTION arbiter_prune_changelog(before timestamptz)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    newest bigint;
    cut bigint;
BEGIN
    SELECT max(revision) INTO newest FROM arbiter_changelog;
    SELECT max(revision) INTO cut FROM arbiter_changelog WHERE committed_at < before AND revision < newest;
    IF cut IS NOT NULL THEN
        DELETE FROM arbiter_changelog WHERE revision <= cut;
        UPDATE arbiter_changelog_horizon SET pruned_through = greatest(pruned_through, cut);
    END IF;
    RETURN (SELECT pruned_through FROM arbiter_changelog_horizon);
END;
$$;
