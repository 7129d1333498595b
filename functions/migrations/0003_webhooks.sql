-- Webhooks: per-org configurations that turn GitHub, Slack and Linear events into tasks, and
-- the delivery ids already acted on. Here, not in the org's object, because a delivery arrives
-- with nothing but the webhook id in its URL. Times are milliseconds since the Unix epoch.

CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    provider TEXT NOT NULL CHECK (provider IN ('github', 'slack', 'linear')),
    name TEXT NOT NULL,
    -- The HMAC key deliveries are signed with. Kept as is (a signature check needs the key);
    -- shown only when created or rotated.
    secret TEXT NOT NULL,
    project_id TEXT NOT NULL,
    mention TEXT NOT NULL,
    label TEXT,
    -- With an agent, every new task also starts a session on `host` (an id, or 'any').
    agent TEXT,
    host TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    disabled_at INTEGER
);
CREATE INDEX webhooks_org ON webhooks (org_id, id);

-- Recorded before acting, so a retried or concurrent delivery creates nothing twice; kept for
-- 7 days (providers retry for less).
CREATE TABLE webhook_deliveries (
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    delivery_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (webhook_id, delivery_id)
);
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);
