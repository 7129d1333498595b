//! The local log of guardrail decisions (table `policy_decisions`), and what of it the org
//! has (`kv.decisions_reported`, the last id acknowledged).

use crate::Error;
use crate::hooks::protocol::EventKind;
use crate::policy::Decision;
use crate::state::{State, col_int as int, col_text as text, now_ms};
use libsql::Value;
use tether_durable::policy::{DecisionReport, Verdict};

/// The most characters of a reason kept.
pub const MAX_REASON: usize = 2000;
/// Reported decisions kept locally beyond this many are deleted, oldest first.
pub const KEEP_REPORTED: i64 = 50_000;

const REPORTED_KEY: &str = "decisions_reported";

impl State {
    /// Records every policy's decision on one event.
    pub async fn record_decisions(
        &self,
        session_id: Option<&str>,
        agent: &str,
        event: &str,
        decisions: &[Decision],
    ) -> Result<(), Error> {
        let at = now_ms();
        for d in decisions {
            self.conn()
                .execute(
                    "INSERT INTO policy_decisions (at, session_id, agent, event, policy, decision,
                         reason, duration_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    libsql::params![
                        at,
                        session_id,
                        agent,
                        event,
                        d.policy.as_str(),
                        d.decision,
                        d.reason
                            .as_deref()
                            .map(|r| r.chars().take(MAX_REASON).collect::<String>()),
                        i64::try_from(d.duration_us).unwrap_or(i64::MAX)
                    ],
                )
                .await
                .map_err(self.err("recording a policy decision"))?;
        }
        Ok(())
    }

    /// Up to `limit` decisions the org does not have yet, oldest first, as reported (`seq` is
    /// the local id: the org ignores one it already has).
    pub async fn unreported_decisions(&self, limit: u32) -> Result<Vec<DecisionReport>, Error> {
        let after = self.reported_decisions().await?;
        let rows = self
            .rows(
                "SELECT id, session_id, agent, event, policy, decision, reason, duration_us, at
                 FROM policy_decisions WHERE id > ?1 ORDER BY id LIMIT ?2",
                libsql::params![after, limit],
                "reading policy decisions",
            )
            .await?;
        Ok(rows.iter().filter_map(|cols| to_decision(cols)).collect())
    }

    /// The last decision id the org acknowledged.
    pub async fn reported_decisions(&self) -> Result<i64, Error> {
        Ok(self
            .get(REPORTED_KEY)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// The org has every decision up to `seq`; reported ones past [`KEEP_REPORTED`] go.
    pub async fn mark_decisions_reported(&self, seq: u64) -> Result<(), Error> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.set(REPORTED_KEY, &seq.to_string()).await?;
        self.conn()
            .execute(
                "DELETE FROM policy_decisions WHERE id <= ?1 - ?2",
                libsql::params![seq, KEEP_REPORTED],
            )
            .await
            .map(drop)
            .map_err(self.err("pruning policy decisions"))
    }
}

fn to_decision(cols: &[Value]) -> Option<DecisionReport> {
    let [
        id,
        session,
        agent,
        event,
        policy,
        decision,
        reason,
        duration,
        at,
    ] = cols
    else {
        return None;
    };
    let event = text(event)?;
    let decision = serde_json::Value::String(text(decision)?);
    Some(DecisionReport {
        seq: u64::try_from(int(id)?).ok()?,
        session_id: text(session),
        // Decisions logged before agents were recorded were all dispatch gates.
        agent: text(agent).unwrap_or_else(|| "unknown".into()),
        event: EventKind::ALL.into_iter().find(|k| k.as_str() == event)?,
        policy: text(policy)?,
        decision: serde_json::from_value::<Verdict>(decision).ok()?,
        reason: text(reason),
        duration_us: u64::try_from(int(duration)?).ok()?,
        at: int(at)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn decision(policy: &str, decision: &'static str) -> Decision {
        Decision {
            policy: policy.into(),
            decision,
            reason: Some("x".repeat(MAX_REASON + 10)),
            duration_us: 42,
        }
    }

    #[tokio::test]
    async fn decisions_are_logged_then_reported_once() {
        let state = State::open_in_memory().await.unwrap();
        state
            .record_decisions(
                Some("ses_1"),
                "claude-code",
                "pre-tool-use",
                &[decision("a", "allow"), decision("b", "deny")],
            )
            .await
            .unwrap();
        state
            .record_decisions(None, "codex", "stop", &[decision("a", "failed")])
            .await
            .unwrap();
        let all = state.unreported_decisions(10).await.unwrap();
        assert_eq!(
            all.iter()
                .map(|d| (d.policy.as_str(), d.decision.as_str(), d.event.as_str()))
                .collect::<Vec<_>>(),
            [
                ("a", "allow", "pre-tool-use"),
                ("b", "deny", "pre-tool-use"),
                ("a", "failed", "stop")
            ]
        );
        assert_eq!(all[0].session_id.as_deref(), Some("ses_1"));
        assert_eq!(all[2].agent, "codex");
        assert_eq!(
            all[1].reason.as_ref().map(|r| r.chars().count()),
            Some(MAX_REASON)
        );

        let first_two = state.unreported_decisions(2).await.unwrap();
        state
            .mark_decisions_reported(first_two[1].seq)
            .await
            .unwrap();
        let rest = state.unreported_decisions(10).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].seq, all[2].seq);
    }
}
