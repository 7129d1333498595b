//! The index of when each org has an automation due, for the cron (the automations themselves
//! live in the org's object).

use crate::backend::Db;
use crate::error::ApiError;
use serde::Deserialize;
use tether_durable::automation::ScheduleState;

/// Orgs one tick looks at; the rest are still due on the next tick.
pub const ORGS_PER_TICK: i64 = 50;

/// Records an org's schedule, unless a newer version is already recorded.
pub async fn record(db: &impl Db, org_id: &str, state: ScheduleState) -> Result<(), ApiError> {
    db.execute(
        "INSERT INTO automation_schedules (org_id, next_due, version) VALUES (?, ?, ?)
         ON CONFLICT (org_id) DO UPDATE SET next_due = excluded.next_due,
             version = excluded.version
         WHERE excluded.version > automation_schedules.version",
        &[
            org_id.into(),
            state.next_due_ms.into(),
            state.version.into(),
        ],
    )
    .await?;
    Ok(())
}

/// The orgs with something due at `at`, earliest first.
pub async fn due(db: &impl Db, at: i64) -> Result<Vec<String>, ApiError> {
    #[derive(Deserialize)]
    struct Row {
        org_id: String,
    }
    let rows: Vec<Row> = db
        .query(
            "SELECT s.org_id FROM automation_schedules s JOIN orgs o ON o.id = s.org_id
             WHERE s.next_due IS NOT NULL AND s.next_due <= ? ORDER BY s.next_due LIMIT ?",
            &[at.into(), ORGS_PER_TICK.into()],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.org_id).collect())
}
