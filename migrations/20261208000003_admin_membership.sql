-- Admin server 2, joining a tenant and leaving it: invitations and invite codes, join
-- requests, and the outbox that carries messages (an invitation's link) to the
-- product's own mailer.

-- An invitation to a tenant: sent to `email` through the outbox, or, without an email,
-- an invite code handed out by whoever made it. The secret is kept only as a keyed hash;
-- it expires, and is used at most `max_uses` times (once for an emailed invitation).
CREATE TABLE arbiter_admin.invitations (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    email text CHECK (email IS NULL OR (length(email) <= 1000 AND email LIKE '%_@_%')),
    secret_hash bytea NOT NULL,
    pepper_version integer NOT NULL,
    -- A role the person is given on joining (the tenant's or a global one).
    role_id uuid REFERENCES arbiter_admin.roles (id) ON DELETE SET NULL,
    invited_by text NOT NULL,
    max_uses integer NOT NULL DEFAULT 1 CHECK (max_uses BETWEEN 1 AND 1000),
    uses integer NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    used_by uuid REFERENCES arbiter_admin.users (id) ON DELETE SET NULL,
    cancelled_at timestamptz,
    cancelled_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (email IS NULL OR max_uses = 1)
);
CREATE INDEX invitations_tenant ON arbiter_admin.invitations (tenant_id, id);
CREATE INDEX invitations_email ON arbiter_admin.invitations (email);

-- A person's request to join a tenant, approved or rejected by its managers.
CREATE TABLE arbiter_admin.tenant_requests (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    email text NOT NULL CHECK (length(email) <= 1000 AND email LIKE '%_@_%'),
    reason text NOT NULL DEFAULT '' CHECK (length(reason) <= 2000),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    responded_at timestamptz,
    responded_by text,
    response_reason text,
    -- The user the approval made a member.
    user_id uuid REFERENCES arbiter_admin.users (id) ON DELETE SET NULL
);
CREATE UNIQUE INDEX tenant_requests_one_pending ON arbiter_admin.tenant_requests (tenant_id, email) WHERE status = 'pending';
CREATE INDEX tenant_requests_tenant ON arbiter_admin.tenant_requests (tenant_id, id);

-- Messages for the product's mailer, in order (UUIDv7). A message's secret part (an
-- invitation's link) is encrypted with the key-encryption key and erased once the
-- message is marked delivered.
CREATE TABLE arbiter_admin.outbox (
    id uuid PRIMARY KEY,
    tenant_id uuid REFERENCES arbiter_admin.tenants (id) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('invitation')),
    recipient text NOT NULL,
    -- What the mailer needs besides the secret (tenant, inviter, expiry).
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- nonce || AES-256-GCM ciphertext of the secret; NULL once delivered.
    sealed_secret bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX outbox_pending ON arbiter_admin.outbox (id) WHERE delivered_at IS NULL;

ALTER TABLE arbiter_admin.invitations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.invitations USING (arbiter_admin.visible(tenant_id));
ALTER TABLE arbiter_admin.tenant_requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.tenant_requests USING (arbiter_admin.visible(tenant_id));
ALTER TABLE arbiter_admin.outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON arbiter_admin.outbox USING (arbiter_admin.platform_scope() OR tenant_id = arbiter_admin.current_tenant());

GRANT SELECT, INSERT, UPDATE, DELETE ON arbiter_admin.invitations, arbiter_admin.tenant_requests, arbiter_admin.outbox TO arbiter_admin_app;
