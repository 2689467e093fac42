-- arbiter_write_bulk, faster on millions of rows. The relationships and the changelog
-- are written from one pass over the changes in the relationships' key order (no
-- temporary table), so the primary key's index takes the new rows page by page instead
-- of at a random page each. A caller that has sorted its changes itself and left no
-- repeats says so (`sorted`): the function then reads them as given (a repeated change
-- fails the write, "cannot affect row a second time", and nothing is written);
-- otherwise the function sorts them and drops repeats, with 256 MB for the sort. The
-- check for incomplete changes runs before the revision counter's lock is taken.
DROP FUNCTION arbiter_write_bulk(jsonb);

CREATE FUNCTION arbiter_write_bulk(metadata jsonb DEFAULT '{}'::jsonb, sorted boolean DEFAULT false)
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
            DO UPDATE SET expires_at = NULL, created_revision = EXCLUDED.created_revision
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
            DO UPDATE SET expires_at = NULL, created_revision = EXCLUDED.created_revision
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

GRANT EXECUTE ON FUNCTION arbiter_write_bulk(jsonb, boolean) TO arbiter_admin_app;
