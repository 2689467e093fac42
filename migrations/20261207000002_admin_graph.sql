-- Admin server 2, generic graph nodes and edges: a thin view and write path over
-- relationships. A node is an application object `type:object_id` claimed for its
-- tenant; an edge is one relationship between two nodes of the tenant. Properties stay
-- here; the PDP sees the relationships (docs/platform.md).

CREATE TABLE arbiter_admin.graph_nodes (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    type text NOT NULL CHECK (length(type) BETWEEN 1 AND 128),
    object_id text NOT NULL CHECK (length(object_id) BETWEEN 1 AND 1024),
    properties jsonb NOT NULL DEFAULT '{}',
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT graph_nodes_object UNIQUE (tenant_id, type, object_id)
);

CREATE TABLE arbiter_admin.graph_edges (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    from_node_id uuid NOT NULL REFERENCES arbiter_admin.graph_nodes (id) ON DELETE CASCADE,
    to_node_id uuid NOT NULL REFERENCES arbiter_admin.graph_nodes (id) ON DELETE CASCADE,
    relation_type text NOT NULL CHECK (length(relation_type) BETWEEN 1 AND 64),
    properties jsonb NOT NULL DEFAULT '{}',
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT graph_edges_one_per_relation UNIQUE (from_node_id, relation_type, to_node_id)
);
CREATE INDEX graph_edges_to ON arbiter_admin.graph_edges (to_node_id);

ALTER TABLE arbiter_admin.graph_nodes ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.graph_nodes USING (arbiter_admin.visible(tenant_id));
ALTER TABLE arbiter_admin.graph_edges ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.graph_edges USING (arbiter_admin.visible(tenant_id));

GRANT SELECT, INSERT, UPDATE, DELETE ON arbiter_admin.graph_nodes, arbiter_admin.graph_edges TO arbiter_admin_app;
