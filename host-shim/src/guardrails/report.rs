//! The decision reporter: sends the local decision log to the org
//! (`POST /v1/hosts/{host}/policy-decisions`, host token) in batches, oldest first, woken by
//! every judgement and every few seconds to retry. Each decision carries its local id, which
//! the org uses to ignore one it already has, so a batch sent twice counts once.

use super::Guardrails;
use crate::host_auth::HostAuth;
use std::time::Duration;
use tether_durable::policy::DecisionBatch;
use tracing::{debug, warn};

const RETRY_EVERY: Duration = Duration::from_secs(5);
/// Decisions per request (the edge's cap).
const BATCH: u32 = 500;

/// Runs for the daemon's lifetime.
pub async fn run(guardrails: &Guardrails, auth: &HostAuth, http: &reqwest::Client) {
    loop {
        while let Ok(true) = once(guardrails, auth, http).await {}
        tokio::select! {
            () = guardrails.report_now.notified() => {}
            () = tokio::time::sleep(RETRY_EVERY) => {}
        }
    }
}

/// Sends one batch. Ok(true) when a full batch went (there may be more).
pub async fn once(
    guardrails: &Guardrails,
    auth: &HostAuth,
    http: &reqwest::Client,
) -> Result<bool, String> {
    let batch = guardrails
        .state
        .unreported_decisions(BATCH)
        .await
        .map_err(|e| e.to_string())?;
    let Some(last) = batch.last().map(|d| d.seq) else {
        return Ok(false);
    };
    let full = batch.len() == BATCH as usize;
    let token = auth.token().await.map_err(|e| e.to_string())?;
    let url = format!("{}/v1/hosts/{}/policy-decisions", auth.server, auth.host_id);
    let res = http
        .post(url)
        .bearer_auth(token)
        .json(&DecisionBatch { decisions: batch })
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    match status {
        200 => {}
        401 => {
            auth.invalidate();
            return Err("the host token was refused".into());
        }
        // Refused as malformed: retrying cannot help, and must not hold back later ones.
        400 | 413 | 422 => {
            let body = res.text().await.unwrap_or_default();
            warn!(%body, "the org refused a batch of policy decisions; skipping it");
        }
        _ => {
            debug!(status, "reporting policy decisions failed; will retry");
            return Err(format!("HTTP {status}"));
        }
    }
    guardrails
        .state
        .mark_decisions_reported(last)
        .await
        .map_err(|e| e.to_string())?;
    Ok(full)
}
