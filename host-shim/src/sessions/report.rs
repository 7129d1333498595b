//! The reporter: sends each session's newest status to the edge until it is acknowledged
//! (`POST /v1/hosts/{host}/sessions/{id}/status`, host token). Woken by every status change,
//! and every few seconds to retry what failed.

use super::Sessions;
use super::store::LocalSession;
use std::time::Duration;
use tether_durable::session::SessionUpdate;
use tracing::{debug, warn};

const RETRY_EVERY: Duration = Duration::from_secs(3);

/// Runs for the daemon's lifetime.
pub async fn run(sessions: &Sessions) {
    loop {
        once(sessions).await;
        tokio::select! {
            () = sessions.report_now.notified() => {}
            () = tokio::time::sleep(RETRY_EVERY) => {}
        }
    }
}

/// Sends every unacknowledged status once; stops at the first failure (the rest waits for
/// the next round).
pub async fn once(sessions: &Sessions) {
    let pending = match sessions.state.unreported_sessions().await {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "reading unreported sessions failed");
            return;
        }
    };
    for s in pending {
        match send(sessions, &s).await {
            Ok(()) => {
                if let Err(e) = sessions.state.mark_reported(&s.id, s.version).await {
                    warn!(session = %s.id, error = %e, "recording a report failed");
                }
            }
            Err(e) => {
                debug!(session = %s.id, error = %e, "reporting a status failed; will retry");
                return;
            }
        }
    }
}

async fn send(sessions: &Sessions, s: &LocalSession) -> Result<(), String> {
    let token = sessions.auth.token().await.map_err(|e| e.to_string())?;
    let update = SessionUpdate {
        status: s.status,
        reason: s.reason.clone(),
        exit_code: s.exit_code.and_then(|c| i32::try_from(c).ok()),
        branch: s.branch.clone(),
        worktree: s.worktree.clone(),
        at_ms: s.ended_at.or(s.started_at).unwrap_or(s.created_at),
    };
    let url = format!(
        "{}/v1/hosts/{}/sessions/{}/status",
        sessions.auth.server, sessions.auth.host_id, s.id
    );
    let res = sessions
        .http
        .post(url)
        .bearer_auth(token)
        .json(&update)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match res.status().as_u16() {
        200 => Ok(()),
        // The edge knows better (the session ended there, or is gone): nothing to retry.
        404 | 409 => {
            let body = res.text().await.unwrap_or_default();
            warn!(session = %s.id, %body, "the edge did not take a status report");
            Ok(())
        }
        401 => {
            sessions.auth.invalidate();
            Err("the host token was refused".into())
        }
        status => Err(format!("HTTP {status}")),
    }
}
