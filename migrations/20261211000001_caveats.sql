-- Caveated relationships (SpiceDB's conditional relationships) in the source of truth.
--
-- `relationships` has had `caveat_name` and `caveat_context` from the start; this adds
-- them to the changelog, so replicas and Watch see a caveat, and teaches the write
-- functions to take and keep it. The change JSON gains two optional members, so every
-- existing caller keeps working unchanged:
--
--   {"op":"touch","resource":"doc:1","relation":"viewer","subject":"user:bob",
--    "caveat":"in_office_hours","caveat_context":{"tz":"Europe/Berlin"}}
--
-- A touch replaces the whole relationship: touching it without a caveat removes the
-- caveat it had. Whether the schema allows that caveat on that relation, and whether the
-- context's keys and types fit its parameters, is checked by Arbiter before it writes and
-- by every replica as it applies (as for the rest of the schema).

ALTER TABLE arbiter_changelog ADD COLUMN caveat_name text;
ALTER TABLE arbiter_changelog ADD COLUMN caveat_context jsonb;
ALTER TABLE relationships ADD CONSTRAINT relationships_caveat_context_object
    CHECK (caveat_context IS NULL OR (caveat_name IS NOT NULL AND jsonb_typeof(caveat_context) = 'object'));

CREATE OR REPLACE FUNCTION arbiter_apply(at_revision bigint, changes jsonb, new_schema text, metadata jsonb)
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
    cav text;
    ctx jsonb;
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
        IF jsonb_typeof(change->'caveat') NOT IN ('string', 'null') OR change->>'caveat' = '' THEN
            RAISE EXCEPTION 'arbiter_write: change % has a caveat that is not a caveat name: %', n, change->'caveat'
                USING ERRCODE = '22023';
        END IF;
        cav := change->>'caveat';
        ctx := CASE WHEN jsonb_typeof(change->'caveat_context') = 'null' THEN NULL ELSE change->'caveat_context' END;
        IF ctx IS NOT NULL AND (cav IS NULL OR jsonb_typeof(ctx) <> 'object') THEN
            RAISE EXCEPTION 'arbiter_write: change % has a caveat_context that is not a JSON object beside a caveat name', n
                USING ERRCODE = '22023';
        END IF;
        exp := (change->>'expires_at')::timestamptz;
        IF op = 'touch' THEN
            INSERT INTO relationships (resource_type, resource_id, relation, subject_type, subject_id,
                                       subject_relation, caveat_name, caveat_context, expires_at, created_revision)
            VALUES (res[1], res[2], change->>'relation', sub_object[1], sub_object[2],
                    coalesce(sub[2], ''), cav, ctx, exp, at_revision)
            ON CONFLICT (resource_type, resource_id, relation, subject_type, subject_id, subject_relation)
            DO UPDATE SET caveat_name = EXCLUDED.caveat_name, caveat_context = EXCLUDED.caveat_context,
                          expires_at = EXCLUDED.expires_at, created_revision = EXCLUDED.created_revision;
        ELSE
            DELETE FROM relationships
            WHERE resource_type = res[1] AND resource_id = res[2] AND relation = change->>'relation'
              AND subject_type = sub_object[1] AND subject_id = sub_object[2]
              AND subject_relation = coalesce(sub[2], '');
        END IF;
        INSERT INTO arbiter_changelog (revision, seq, operation, resource_type, resource_id, relation,
                                       subject_type, subject_id, subject_relation, caveat_name, caveat_context,
                                       expires_at, metadata)
        VALUES (at_revision, n, op, res[1], res[2], change->>'relation', sub_object[1], sub_object[2],
                coalesce(sub[2], ''), cav, ctx, exp, coalesce(metadata, '{}'::jsonb));
    END LOOP;
    PERFORM pg_notify('arbiter_changes', at_revision::text);
END;
$$;

-- The bulk path writes uncaveated touches; a touch replaces the whole relationship, so
-- one over a caveated relationship drops its caveat (as arbiter_apply's does).
CREATE OR REPLACE FUNCTION arbiter_write_bulk(metadata jsonb DEFAULT '{}'::jsonb, sorted boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
SET work_mem = '256MB'
AS $$
DECLARE
    next_revision bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM arbiter_bulk_changes
               WHERE coalesce(resource_type, '') = '' OR coalesce(resource_id, '') = '' OR coalesce(relation, '') = ''
                  OR coalesce(subject_type, '') = '' OR coalesce(subject_id, '') = '') THEN
        RAISE EXCEPTION 'arbiter_write_bulk: a change lacks a part of its relationship' USING ERRCODE = '22023';
    END IF;
    UPDATE arbiter_revision SET revision = revision + 1 RETURNING revision INTO next_revision;
    IF sorted THEN
        WITH written AS (
            INSERT INTO relationships (resource_type, resource_id, relation, subject_type, subject_id, subject_relation, expires_at, created_revision)
            SELECT resource_type, resource_id, relation, subject_type, subject_id, coalesce(subject_relation, ''), NULL, next_revision
            FROM arbiter_bulk_changes
            ON CONFLICT (resource_type, resource_id, relation, subject_type, subject_id, subject_relation)
            DO UPDATE SET caveat_name = NULL, caveat_context = NULL, expires_at = NULL, created_revision = EXCLUDED.created_revision
        )
        INSERT INTO arbiter_changelog (revision, seq, operation, resource_type, resource_id, relation, subject_type, subject_id,
                                       subject_relation, expires_at, metadata)
        SELECT next_revision, row_number() OVER (), 'touch', resource_type, resource_id, relation, subject_type, subject_id,
               coalesce(subject_relation, ''), NULL, coalesce(metadata, '{}'::jsonb)
        FROM arbiter_bulk_changes;
    ELSE
        WITH changes AS MATERIALIZED (
            SELECT DISTINCT resource_type, resource_id, relation, subject_type, subject_id, coalesce(subject_relation, '') AS subject_relation
            FROM arbiter_bulk_changes
            ORDER BY 1, 2, 3, 4, 5, 6
        ), written AS (
            INSERT INTO relationships (resource_type, resource_id, relation, subject_type, subject_id, subject_relation, expires_at, created_revision)
            SELECT resource_type, resource_id, relation, subject_type, subject_id, subject_relation, NULL, next_revision FROM changes
            ON CONFLICT (resource_type, resource_id, relation, subject_type, subject_id, subject_relation)
            DO UPDATE SET caveat_name = NULL, caveat_context = NULL, expires_at = NULL, created_revision = EXCLUDED.created_revision
        )
        INSERT INTO arbiter_changelog (revision, seq, operation, resource_type, resource_id, relation, subject_type, subject_id,
                                       subject_relation, expires_at, metadata)
        SELECT next_revision, row_number() OVER (), 'touch', resource_type, resource_id, relation, subject_type, subject_id,
               subject_relation, NULL, coalesce(metadata, '{}'::jsonb)
        FROM changes;
    END IF;
    PERFORM pg_notify('arbiter_changes', next_revision::text);
    RETURN next_revision;
END;
$$;
