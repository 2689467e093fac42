-- Admin server 2, the Cedar side: security labels and their hierarchy, object labels,
-- attribute definitions and values, subject and resource attributes, and Cedar policies
-- with versions. They reach the PDP as its policy model (arbiter_policy_model) and as
-- per-object attributes (arbiter_attributes), written by arbiter_write_model in the
-- same transaction and at the same revision as the relationship changes.

-- ---------------------------------------------------------------------------------
-- The write path for relationships, object attributes and the policy model at once.
--
--   SELECT arbiter_write_model(
--       '[{"op":"touch","resource":"doc:1","relation":"tenant","subject":"platform/tenant:T"}]'::jsonb,
--       '[{"object_type":"doc","object_id":"1","attributes":"{\"labels\":[\"secret\"]}"}]'::jsonb,
--       NULL,   -- or the whole policy model, Arbiter's JSON text
--       '{"writer":"arbiter-admin"}'::jsonb);
--
-- Takes the revision counter's lock and the next revision, as arbiter_write does.
-- `attributes` replaces each named object's values and labels whole (Arbiter's JSON text,
-- or null to delete them); `policy_model` replaces the model whole when not null.
-- Changelog rows: the relationships 1..n, then the attributes n+1.., and the model at -1.
-- Replicas validate what they apply (and count what they must reject), so callers check
-- first: the admin compiles the model and every object it touches with the PDP's own
-- compiler before it calls this.
CREATE FUNCTION arbiter_write_model(changes jsonb, attributes jsonb, policy_model text, metadata jsonb DEFAULT '{}'::jsonb)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    next_revision bigint;
    a jsonb;
    n integer;
BEGIN
    IF jsonb_typeof(attributes) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'arbiter_write_model: attributes must be a JSON array, got %', coalesce(jsonb_typeof(attributes), 'null')
            USING ERRCODE = '22023';
    END IF;
    IF policy_model IS NOT NULL AND jsonb_typeof(policy_model::jsonb -> 'policies') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'arbiter_write_model: the policy model has no "policies" array' USING ERRCODE = '22023';
    END IF;
    UPDATE arbiter_revision SET revision = revision + 1 RETURNING revision INTO next_revision;
    PERFORM arbiter_apply(next_revision, changes, NULL, metadata);
    n := jsonb_array_length(changes);
    FOR a IN SELECT * FROM jsonb_array_elements(attributes) LOOP
        n := n + 1;
        IF coalesce(a->>'object_type', '') = '' OR coalesce(a->>'object_id', '') = ''
            OR jsonb_typeof(a->'attributes') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'arbiter_write_model: attribute change % needs "object_type", "object_id" and "attributes" (JSON text or null): %', n, a
                USING ERRCODE = '22023';
        END IF;
        IF jsonb_typeof(a->'attributes') = 'null' THEN
            DELETE FROM arbiter_attributes WHERE object_type = a->>'object_type' AND object_id = a->>'object_id';
        ELSE
            INSERT INTO arbiter_attributes (object_type, object_id, attributes, revision)
            VALUES (a->>'object_type', a->>'object_id', a->>'attributes', next_revision)
            ON CONFLICT (object_type, object_id) DO UPDATE SET attributes = EXCLUDED.attributes, revision = EXCLUDED.revision;
        END IF;
        INSERT INTO arbiter_changelog (revision, seq, operation, resource_type, resource_id, payload, metadata)
        VALUES (next_revision, n, 'attributes', a->>'object_type', a->>'object_id', a->>'attributes', coalesce(metadata, '{}'::jsonb));
    END LOOP;
    IF policy_model IS NOT NULL THEN
        INSERT INTO arbiter_policy_model (singleton, model, revision) VALUES (true, policy_model, next_revision)
        ON CONFLICT (singleton) DO UPDATE SET model = EXCLUDED.model, revision = EXCLUDED.revision;
        DELETE FROM arbiter_policies;
        INSERT INTO arbiter_policies (policy_id, policy_text, revision)
        SELECT p->>'id', p->>'text', next_revision FROM jsonb_array_elements(policy_model::jsonb -> 'policies') AS p;
        INSERT INTO arbiter_changelog (revision, seq, operation, payload, metadata)
        VALUES (next_revision, -1, 'policies', policy_model, coalesce(metadata, '{}'::jsonb));
    END IF;
    RETURN next_revision;
END;
$$;

-- ---------------------------------------------------------------------------------
-- Security labels (platform-wide: Cedar policies name them, `arbiter::Label::"secret"`).

CREATE TABLE arbiter_admin.security_labels (
    id uuid PRIMARY KEY,
    name text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    level integer NOT NULL CHECK (level BETWEEN 0 AND 1000000),
    description text NOT NULL DEFAULT '',
    created_by text NOT NULL,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT security_labels_name_key UNIQUE (name)
);

-- A parent dominates its child: in Cedar the child label is `in` the parent.
CREATE TABLE arbiter_admin.label_hierarchy (
    parent_label_id uuid NOT NULL REFERENCES arbiter_admin.security_labels (id) ON DELETE CASCADE,
    child_label_id uuid NOT NULL REFERENCES arbiter_admin.security_labels (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (parent_label_id, child_label_id),
    CHECK (parent_label_id <> child_label_id)
);
CREATE INDEX label_hierarchy_child ON arbiter_admin.label_hierarchy (child_label_id);

-- A label on an object of a tenant (an application object the tenant holds).
CREATE TABLE arbiter_admin.object_labels (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    object_type text NOT NULL CHECK (length(object_type) BETWEEN 1 AND 128),
    object_id text NOT NULL CHECK (length(object_id) BETWEEN 1 AND 1024),
    label_id uuid NOT NULL REFERENCES arbiter_admin.security_labels (id) ON DELETE CASCADE,
    assigned_by text NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT object_labels_once UNIQUE (tenant_id, object_type, object_id, label_id)
);
CREATE INDEX object_labels_label ON arbiter_admin.object_labels (label_id);
CREATE INDEX object_labels_object ON arbiter_admin.object_labels (object_type, object_id);

-- ---------------------------------------------------------------------------------
-- Attributes (platform-wide definitions: a Cedar attribute of one schema type).

CREATE TABLE arbiter_admin.attributes (
    id uuid PRIMARY KEY,
    object_type text NOT NULL CHECK (length(object_type) BETWEEN 1 AND 128),
    name text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    description text NOT NULL DEFAULT '',
    -- string, long, bool, decimal, ip, or set<one of them>; fixed once written.
    data_type text NOT NULL CHECK (length(data_type) BETWEEN 1 AND 64),
    created_by text NOT NULL,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT attributes_type_name_key UNIQUE (object_type, name)
);

-- The values an attribute may take (for a set, the values of its elements). The seed's
-- value_string / value_number / value_boolean / value_json are one typed JSON value.
CREATE TABLE arbiter_admin.attribute_values (
    id uuid PRIMARY KEY,
    attr_id uuid NOT NULL REFERENCES arbiter_admin.attributes (id) ON DELETE RESTRICT,
    value jsonb NOT NULL,
    description text NOT NULL DEFAULT '',
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT attribute_values_attr_value_key UNIQUE (attr_id, value)
);

-- A value held by a user (a member of the tenant) or a group of the tenant. A person is
-- one identity across tenants: a single-valued attribute has one value per subject in
-- all, a set is the union of what every tenant assigned.
CREATE TABLE arbiter_admin.subject_attributes (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    subject_type text NOT NULL CHECK (subject_type IN ('user', 'group')),
    subject_id uuid NOT NULL,
    attr_id uuid NOT NULL REFERENCES arbiter_admin.attributes (id) ON DELETE RESTRICT,
    value_id uuid NOT NULL REFERENCES arbiter_admin.attribute_values (id) ON DELETE RESTRICT,
    single boolean NOT NULL,
    assigned_by text NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subject_attributes_once UNIQUE (tenant_id, subject_type, subject_id, value_id)
);
CREATE UNIQUE INDEX subject_attributes_one_value ON arbiter_admin.subject_attributes (subject_type, subject_id, attr_id) WHERE single;
CREATE INDEX subject_attributes_value ON arbiter_admin.subject_attributes (value_id);

-- A value held by an application object the tenant holds.
CREATE TABLE arbiter_admin.resource_attributes (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    resource_type text NOT NULL CHECK (length(resource_type) BETWEEN 1 AND 128),
    resource_id text NOT NULL CHECK (length(resource_id) BETWEEN 1 AND 1024),
    attr_id uuid NOT NULL REFERENCES arbiter_admin.attributes (id) ON DELETE RESTRICT,
    value_id uuid NOT NULL REFERENCES arbiter_admin.attribute_values (id) ON DELETE RESTRICT,
    single boolean NOT NULL,
    assigned_by text NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT resource_attributes_once UNIQUE (tenant_id, resource_type, resource_id, value_id)
);
CREATE UNIQUE INDEX resource_attributes_one_value ON arbiter_admin.resource_attributes (resource_type, resource_id, attr_id) WHERE single;
CREATE INDEX resource_attributes_value ON arbiter_admin.resource_attributes (value_id);

-- One object's values and labels as the PDP stores them ({"values": {...}, "labels":
-- [...]}), from every tenant's rows (a person is one identity), or NULL when it has
-- none. It reads across tenants, so it runs as its owner; it returns only what the PDP
-- is given anyway.
CREATE FUNCTION arbiter_admin.object_attributes(o_type text, o_id text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = arbiter_admin, pg_temp AS $$
    WITH held AS (
        SELECT attr_id, value_id, single FROM resource_attributes WHERE resource_type = o_type AND resource_id = o_id
        UNION
        SELECT attr_id, value_id, single FROM subject_attributes
        WHERE o_type IN ('platform/user', 'platform/group') AND subject_type = substr(o_type, 10) AND subject_id::text = o_id
    ),
    vals AS (
        SELECT a.name, CASE WHEN bool_and(h.single) THEN min(v.value::text)::jsonb
                            ELSE jsonb_agg(DISTINCT v.value) END AS value
        FROM held h JOIN attributes a ON a.id = h.attr_id JOIN attribute_values v ON v.id = h.value_id
        GROUP BY a.name
    ),
    labs AS (
        SELECT DISTINCT l.name FROM object_labels o JOIN security_labels l ON l.id = o.label_id
        WHERE o.object_type = o_type AND o.object_id = o_id
    ),
    doc AS (
        SELECT (SELECT jsonb_object_agg(name, value) FROM vals) AS values,
               (SELECT jsonb_agg(name ORDER BY name) FROM labs) AS labels
    )
    SELECT CASE WHEN values IS NULL AND labels IS NULL THEN NULL
                ELSE jsonb_strip_nulls(jsonb_build_object('values', values, 'labels', labels)) END
    FROM doc
$$;

-- ---------------------------------------------------------------------------------
-- Cedar policies: a named policy with metadata, and its versions. At most one version is
-- active; the active versions of the policies in the admin's environment are the
-- policy model's `admin.` policies.

CREATE TABLE arbiter_admin.policies (
    id uuid PRIMARY KEY,
    name text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    environment text NOT NULL CHECK (environment ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    description text NOT NULL DEFAULT '',
    -- The seed's policy_metadata, one to one: owner and tags.
    owner_user_id uuid REFERENCES arbiter_admin.users (id) ON DELETE SET NULL,
    tags text[] NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 32),
    created_by text NOT NULL,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT policies_environment_name_key UNIQUE (environment, name)
);

-- Every version ever written, kept: draft -> active -> retired.
CREATE TABLE arbiter_admin.policy_versions (
    -- Time-ordered (UUIDv7): the list's cursor; the number is what routes name.
    id uuid NOT NULL UNIQUE,
    policy_id uuid NOT NULL REFERENCES arbiter_admin.policies (id) ON DELETE CASCADE,
    number integer NOT NULL CHECK (number >= 1),
    definition text NOT NULL CHECK (length(definition) BETWEEN 1 AND 65536),
    status text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'active', 'retired')),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    activated_by text,
    retired_at timestamptz,
    -- The revision the activation or retirement reached the PDP at.
    revision bigint,
    PRIMARY KEY (policy_id, number)
);
CREATE UNIQUE INDEX policy_versions_one_active ON arbiter_admin.policy_versions (policy_id) WHERE status = 'active';

-- Platform-wide: the platform scope sees them (operators); no tenant rows.
ALTER TABLE arbiter_admin.security_labels ENABLE ROW LEVEL SECURITY;
CREATE POLICY platform_rows ON arbiter_admin.security_labels USING (arbiter_admin.platform_scope());
ALTER TABLE arbiter_admin.label_hierarchy ENABLE ROW LEVEL SECURITY;
CREATE POLICY platform_rows ON arbiter_admin.label_hierarchy USING (arbiter_admin.platform_scope());
ALTER TABLE arbiter_admin.attributes ENABLE ROW LEVEL SECURITY;
CREATE POLICY platform_rows ON arbiter_admin.attributes USING (arbiter_admin.platform_scope());
ALTER TABLE arbiter_admin.attribute_values ENABLE ROW LEVEL SECURITY;
CREATE POLICY platform_rows ON arbiter_admin.attribute_values USING (arbiter_admin.platform_scope());
ALTER TABLE arbiter_admin.policies ENABLE ROW LEVEL SECURITY;
CREATE POLICY platform_rows ON arbiter_admin.policies USING (arbiter_admin.platform_scope());
ALTER TABLE arbiter_admin.policy_versions ENABLE ROW LEVEL SECURITY;
CREATE POLICY platform_rows ON arbiter_admin.policy_versions USING (arbiter_admin.platform_scope());
-- Tenants read the catalogue (labels, definitions, values) they assign from.
CREATE POLICY tenant_reads ON arbiter_admin.security_labels FOR SELECT USING (arbiter_admin.current_tenant() IS NOT NULL);
CREATE POLICY tenant_reads ON arbiter_admin.attributes FOR SELECT USING (arbiter_admin.current_tenant() IS NOT NULL);
CREATE POLICY tenant_reads ON arbiter_admin.attribute_values FOR SELECT USING (arbiter_admin.current_tenant() IS NOT NULL);

ALTER TABLE arbiter_admin.object_labels ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.object_labels USING (arbiter_admin.visible(tenant_id));
ALTER TABLE arbiter_admin.subject_attributes ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.subject_attributes USING (arbiter_admin.visible(tenant_id));
ALTER TABLE arbiter_admin.resource_attributes ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.resource_attributes USING (arbiter_admin.visible(tenant_id));

GRANT SELECT, INSERT, UPDATE, DELETE ON arbiter_admin.security_labels, arbiter_admin.label_hierarchy, arbiter_admin.object_labels,
    arbiter_admin.attributes, arbiter_admin.attribute_values, arbiter_admin.subject_attributes, arbiter_admin.resource_attributes,
    arbiter_admin.policies, arbiter_admin.policy_versions TO arbiter_admin_app;
GRANT EXECUTE ON FUNCTION arbiter_admin.object_attributes(text, text) TO arbiter_admin_app;
GRANT EXECUTE ON FUNCTION arbiter_write_model(jsonb, jsonb, text, jsonb) TO arbiter_admin_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON arbiter_attributes, arbiter_policy_model, arbiter_policies TO arbiter_admin_app;
