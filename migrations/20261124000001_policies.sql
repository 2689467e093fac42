-- The Cedar side of decisions in Postgres mode: the policy model (policies, attribute
-- definitions, security labels), the policies one row each for SQL readers, and each
-- object's attribute values and labels. Changes are logged in arbiter_changelog like
-- relationship changes, so replicas pick them up in revision order.

-- The whole model as Arbiter encodes it (JSON text, kept byte for byte), and the
-- revision that wrote it.
CREATE TABLE arbiter_policy_model (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    model text NOT NULL,
    revision bigint NOT NULL
);

-- The policies of the model in force, one row each (a read-only view for people and
-- reports; Arbiter reads the model above).
CREATE TABLE arbiter_policies (
    policy_id text PRIMARY KEY,
    policy_text text NOT NULL,
    revision bigint NOT NULL
);

-- One object's attribute values and security labels (JSON text:
-- {"values": {...}, "labels": [...]}).
CREATE TABLE arbiter_attributes (
    object_type text NOT NULL,
    object_id text NOT NULL,
    attributes text NOT NULL,
    revision bigint NOT NULL,
    PRIMARY KEY (object_type, object_id)
);

-- Changelog rows for them: 'policies' carries the model in payload; 'attributes' names
-- the object in resource_type/resource_id and carries its attributes in payload (NULL
-- when they were deleted).
ALTER TABLE arbiter_changelog ADD COLUMN payload text;
ALTER TABLE arbiter_changelog DROP CONSTRAINT arbiter_changelog_operation_check;
ALTER TABLE arbiter_changelog DROP CONSTRAINT arbiter_changelog_check;
ALTER TABLE arbiter_changelog ADD CONSTRAINT arbiter_changelog_operation_check
    CHECK (operation IN ('touch', 'delete', 'schema', 'policies', 'attributes'));
ALTER TABLE arbiter_changelog ADD CONSTRAINT arbiter_changelog_row_check CHECK (
    (operation = 'schema' AND schema_text IS NOT NULL)
    OR (operation = 'policies' AND payload IS NOT NULL)
    OR (operation = 'attributes' AND resource_type IS NOT NULL AND resource_id IS NOT NULL)
    OR (operation IN ('touch', 'delete') AND resource_type IS NOT NULL AND resource_id IS NOT NULL
        AND relation IS NOT NULL AND subject_type IS NOT NULL AND subject_id IS NOT NULL
        AND subject_relation IS NOT NULL)
);
