-- The orgs with scheduled automations, and when each has something due next: the cron reads
-- this index instead of asking every org's object. The org's object owns the automations;
-- each change there answers its earliest next run with a version that grows with every
-- change, and a write here only wins over an older version. Times are Unix milliseconds.

CREATE TABLE automation_schedules (
    org_id TEXT PRIMARY KEY REFERENCES orgs (id) ON DELETE CASCADE,
    -- NULL: nothing scheduled (all paused, or no occurrences left).
    next_due INTEGER,
    version INTEGER NOT NULL
);
CREATE INDEX automation_schedules_due ON automation_schedules (next_due) WHERE next_due IS NOT NULL;
