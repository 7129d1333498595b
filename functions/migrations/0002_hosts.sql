-- Machines: the host registry, the pairing codes that add hosts to it, the approval attempts
-- that rate-limit code guessing, and the one-use nonces a host signs to get a host token.
-- Times are milliseconds since the Unix epoch.

CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    os TEXT NOT NULL,
    arch TEXT NOT NULL,
    -- The host's Ed25519 public key: 32 bytes, base64url without padding.
    public_key TEXT NOT NULL,
    -- The agent CLIs found on the machine: a JSON array of {"name", "version"}.
    agents TEXT NOT NULL,
    -- The member who approved the pairing; kept (no foreign key) if they leave.
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX hosts_org ON hosts (org_id, id);
-- One live host per key. A revoked host's key may be paired again, through a new approval.
CREATE UNIQUE INDEX hosts_live_public_key ON hosts (public_key) WHERE revoked_at IS NULL;

CREATE TABLE pairing_codes (
    -- 8 characters of the unambiguous alphabet, upper-case, without the dash.
    code TEXT PRIMARY KEY,
    -- SHA-256 (hex) of the poll token; the token itself is never stored.
    poll_hash TEXT NOT NULL,
    public_key TEXT NOT NULL,
    name TEXT NOT NULL,
    os TEXT NOT NULL,
    arch TEXT NOT NULL,
    agents TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- Pending: the code's expiry. Approved: how long the daemon may still poll for the answer.
    expires_at INTEGER NOT NULL,
    -- Set together, once, by the approval.
    org_id TEXT REFERENCES orgs (id) ON DELETE CASCADE,
    host_id TEXT REFERENCES hosts (id) ON DELETE CASCADE,
    approved_by TEXT
);
CREATE INDEX pairing_codes_expires ON pairing_codes (expires_at);

-- Failed approvals (unknown, expired or used codes) per API key, for the guessing limit.
CREATE TABLE pairing_attempts (
    key_id TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX pairing_attempts_key ON pairing_attempts (key_id, at);
CREATE INDEX pairing_attempts_at ON pairing_attempts (at);

CREATE TABLE host_nonces (
    nonce TEXT PRIMARY KEY,
    host_id TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE INDEX host_nonces_host ON host_nonces (host_id, expires_at);
CREATE INDEX host_nonces_expires ON host_nonces (expires_at);
