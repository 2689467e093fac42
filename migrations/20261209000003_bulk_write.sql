-- The set-based write path for bulk provisioning: the caller fills the temporary table
-- `arbiter_bulk_changes` (resource_type, resource_id, relation, subject_type,
-- subject_id, subject_relation) in its transaction, and this function touches every
-- row's relationship at one new revision, logged in the changelog like arbiter_write's
-- (a row given twice is written once). It takes the revision counter's lock as
-- arbiter_write does.
CREATE FUNCTION arbiter_write_bulk(metadata jsonb DEFAULT '{}'::jsonb)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    next_revision bigint;
BEGIN
    UPDATE arbiter_revision SET revision = revision + 1 RETURNING revision INTO next_revision;
    CREATE TEMP TABLE arbiter_bulk_distinct ON COMMIT DROP AS
        SELECT DISTINCT resource_type, resource_id, relation, subject_type, subject_id, coalesce(subject_relation, '') AS subject_relation
        FROM arbiter_bulk_changes;
    IF EXISTS (SELECT 1 FROM arbiter_bulk_distinct
               WHERE coalesce(resource_type, '') = '' OR coalesce(resource_id, '') = '' OR coalesce(relation, '') = ''
                  OR coalesce(subject_type, '') = '' OR coalesce(subject_id, '') = '') THEN
        RAISE EXCEPTION 'arbiter_write_bulk: a change lacks a part of its relationship' USING ERRCODE = '22023';
    END IF;
    INSERT INTO relationships (resource_type, resource_id, relation, subject_type, subject_id, subject_relation, expires_at, created_revision)
    SELECT resource_type, resource_id, relation, subject_type, subject_id, subject_relation, NULL, next_revision FROM arbiter_bulk_distinct
    ON CONFLICT (resource_type, resource_id, relation, subject_type, subject_id, subject_relation)
    DO UPDATE SET expires_at = NULL, created_revision = EXCLUDED.created_revision;
    INSERT INTO arbiter_changelog (revision, seq, operation, resource_type, resource_id, relation, subject_type, subject_id,
                                   subject_relation, expires_at, metadata)
    SELECT next_revision, row_number() OVER (), 'touch', resource_type, resource_id, relation, subject_type, subject_id,
           subject_relation, NULL, coalesce(metadata, '{}'::jsonb)
    FROM arbiter_bulk_distinct;
    DROP TABLE arbiter_bulk_distinct;
    PERFORM pg_notify('arbiter_changes', next_revision::text);
    RETURN next_revision;
END;
$$;

GRANT EXECUTE ON FUNCTION arbiter_write_bulk(jsonb) TO arbiter_admin_app;
