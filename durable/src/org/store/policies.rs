//! Guardrail policies (the org's components, their settings and order) and the decisions its
//! machines report.

use super::sessions::clip;
use super::{Store, decode_cursor, page_limit, paginate};
use crate::error::StoreError;
use crate::policy::{
    self, Accepted, Decision, DecisionPage, DecisionQuery, DecisionReport, Failure, HookEvent,
    NewPolicy, PolicyList, PolicyMeta, PolicyWasm, PutAnswer, UpdatePolicy, Verdict,
};
use crate::sql::{Sql, SqlValue};
use crate::time::rfc3339;
use crate::{ids, validate};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

#[derive(Deserialize)]
struct PolicyRow {
    name: String,
    sha256: String,
    size: i64,
    config: String,
    failure: Failure,
    position: i64,
    created_by: String,
    created_at: i64,
    updated_at: i64,
}

impl From<PolicyRow> for PolicyMeta {
    fn from(r: PolicyRow) -> Self {
        Self {
            name: r.name,
            sha256: r.sha256,
            size: u64::try_from(r.size).unwrap_or(0),
            config: serde_json::from_str(&r.config).unwrap_or_default(),
            failure: r.failure,
            position: r.position,
            created_by: r.created_by,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

/// Every column but the binary, which only the download reads.
const POLICY_SELECT: &str = "SELECT name, sha256, size, config, failure, position, created_by,
    created_at, updated_at FROM org_policies";

#[derive(Deserialize)]
struct DecisionRow {
    id: i64,
    host_id: String,
    seq: i64,
    session_id: Option<String>,
    agent: String,
    event: HookEvent,
    policy: String,
    decision: Verdict,
    reason: Option<String>,
    duration_us: i64,
    at: i64,
    received_at: i64,
}

impl From<DecisionRow> for Decision {
    fn from(r: DecisionRow) -> Self {
        Self {
            host_id: r.host_id,
            seq: u64::try_from(r.seq).unwrap_or(0),
            session_id: r.session_id,
            agent: r.agent,
            event: r.event,
            policy: r.policy,
            decision: r.decision,
            reason: r.reason,
            duration_us: u64::try_from(r.duration_us).unwrap_or(0),
            at: rfc3339(r.at),
            received_at: rfc3339(r.received_at),
        }
    }
}

fn not_found() -> StoreError {
    StoreError::NotFound { what: "policy" }
}

fn config_text(field: &str, config: &Map<String, Value>) -> Result<String, StoreError> {
    let text = serde_json::to_string(config)?;
    if text.len() > policy::MAX_CONFIG_BYTES {
        return Err(StoreError::invalid(
            field,
            format!("at most {} bytes as JSON", policy::MAX_CONFIG_BYTES),
        ));
    }
    Ok(text)
}

fn check_position(position: i64) -> Result<i64, StoreError> {
    if (0..=policy::MAX_POSITION).contains(&position) {
        Ok(position)
    } else {
        Err(StoreError::invalid(
            "position",
            format!("0 to {}", policy::MAX_POSITION),
        ))
    }
}

fn bad_cursor() -> StoreError {
    StoreError::BadRequest {
        field: "cursor".into(),
        message: "is not a cursor this API issued".into(),
    }
}

/// The row of one reported decision, checked. Structural nonsense (an unknown event, a
/// negative time, an empty agent) is refused; a long reason is cut, never refused, since the
/// machine would retry a refused report forever.
fn decision_params(
    host_id: &str,
    i: usize,
    d: DecisionReport,
    now: i64,
) -> Result<Vec<SqlValue>, StoreError> {
    let field = |name: &str| format!("decisions[{i}].{name}");
    let int = |name: &str, v: u64| {
        i64::try_from(v).map_err(|_| StoreError::invalid(field(name), "is too large"))
    };
    let seq = int("seq", d.seq)?;
    let duration_us = int("duration_us", d.duration_us)?;
    if d.at < 0 {
        return Err(StoreError::invalid(
            field("at"),
            "must be Unix milliseconds",
        ));
    }
    let session_id = d
        .session_id
        .filter(|s| !s.trim().is_empty())
        .map(|s| validate::line(&field("session_id"), &s, policy::SESSION_ID_MAX))
        .transpose()?;
    let agent = validate::line(&field("agent"), &d.agent, policy::AGENT_MAX)?;
    let name = validate::line(&field("policy"), &d.policy, policy::REPORTED_POLICY_MAX)?;
    Ok(vec![
        host_id.into(),
        seq.into(),
        session_id.into(),
        agent.into(),
        d.event.as_str().into(),
        name.into(),
        d.decision.as_str().into(),
        clip(d.reason, policy::REASON_MAX).into(),
        duration_us.into(),
        // A clock ahead of the edge's would keep its decisions on top of every list.
        d.at.min(now).into(),
        now.into(),
    ])
}

impl<S: Sql> Store<'_, S> {
    pub(super) fn list_policies(&self) -> Result<PolicyList, StoreError> {
        let rows: Vec<PolicyRow> = self
            .sql
            .query(&format!("{POLICY_SELECT} ORDER BY position, name"), &[])?;
        Ok(PolicyList {
            policies: rows.into_iter().map(Into::into).collect(),
        })
    }

    fn find_policy(&self, name: &str) -> Result<Option<PolicyMeta>, StoreError> {
        // A name no policy can have is simply not there.
        if !policy::valid_name(name) {
            return Ok(None);
        }
        Ok(self
            .sql
            .query_one::<PolicyRow>(&format!("{POLICY_SELECT} WHERE name = ?"), &[name.into()])?
            .map(Into::into))
    }

    pub(super) fn policy(&self, name: &str) -> Result<PolicyMeta, StoreError> {
        self.find_policy(name)?.ok_or_else(not_found)
    }

    pub(super) fn put_policy(
        &self,
        p: NewPolicy,
        actor: &str,
        now: i64,
    ) -> Result<PutAnswer, StoreError> {
        if !policy::valid_name(&p.name) {
            return Err(StoreError::invalid(
                "name",
                "1 to 63 of a-z, 0-9 and '-', starting with a letter or digit",
            ));
        }
        let wasm = STANDARD
            .decode(p.wasm_base64.as_bytes())
            .map_err(|_| StoreError::invalid("wasm_base64", "is not standard base64"))?;
        // The Worker has checked the binary and hashed it; the store still keeps its own
        // promise that everything it hands the machines is a component within the cap.
        policy::check_binary(&wasm)
            .map_err(|e| StoreError::invalid("wasm_base64", e.to_string()))?;
        if !policy::valid_sha256(&p.sha256) {
            return Err(StoreError::invalid(
                "sha256",
                "must be a lowercase hex SHA-256",
            ));
        }
        let config = config_text("config", &p.config)?;
        let position = p.position.map(check_position).transpose()?;
        let current = self.find_policy(&p.name)?;
        let position = match (position, &current) {
            (Some(at), _) => at,
            (None, Some(c)) => c.position,
            (None, None) => self
                .count(
                    "SELECT coalesce(max(position) + 1, 0) AS n FROM org_policies",
                    &[],
                )?
                .min(policy::MAX_POSITION),
        };
        if current.is_none() {
            validate::cap(
                self.count("SELECT count(*) AS n FROM org_policies", &[])?,
                policy::MAX_POLICIES,
                "policies per org",
            )?;
        }
        self.sql.execute(
            "INSERT INTO org_policies (name, sha256, size, wasm, config, failure, position,
                 created_by, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size,
                 wasm = excluded.wasm, config = excluded.config, failure = excluded.failure,
                 position = excluded.position, updated_at = excluded.updated_at",
            &[
                p.name.as_str().into(),
                p.sha256.into(),
                i64::try_from(wasm.len()).unwrap_or(i64::MAX).into(),
                wasm.into(),
                config.into(),
                p.failure.as_str().into(),
                position.into(),
                actor.into(),
                now.into(),
                now.into(),
            ],
        )?;
        Ok(PutAnswer {
            created: current.is_none(),
            policy: self.policy(&p.name)?,
        })
    }

    pub(super) fn update_policy(
        &self,
        name: &str,
        patch: UpdatePolicy,
        now: i64,
    ) -> Result<PolicyMeta, StoreError> {
        let mut p = self.policy(name)?;
        if let Some(config) = patch.config {
            p.config = config;
        }
        let config = config_text("config", &p.config)?;
        let failure = patch.failure.unwrap_or(p.failure);
        let position = patch.position.map(check_position).transpose()?;
        self.sql.execute(
            "UPDATE org_policies SET config = ?, failure = ?, position = ?, updated_at = ?
             WHERE name = ?",
            &[
                config.into(),
                failure.as_str().into(),
                position.unwrap_or(p.position).into(),
                now.into(),
                name.into(),
            ],
        )?;
        self.policy(name)
    }

    pub(super) fn delete_policy(&self, name: &str) -> Result<(), StoreError> {
        self.policy(name)?;
        self.sql
            .execute("DELETE FROM org_policies WHERE name = ?", &[name.into()])?;
        Ok(())
    }

    /// The binary, read as one blob value (never decoded as a row of JSON numbers).
    pub(super) fn policy_wasm(
        &self,
        name: &str,
        expected: Option<&str>,
    ) -> Result<PolicyWasm, StoreError> {
        if !policy::valid_name(name) {
            return Err(not_found());
        }
        let mut found = None;
        self.sql.for_each_row(
            "SELECT sha256, wasm FROM org_policies WHERE name = ?",
            &[name.into()],
            &mut |row| {
                let mut values = row.into_iter();
                if let (Some(SqlValue::Text(sha256)), Some(wasm)) =
                    (values.next(), values.next().and_then(SqlValue::into_bytes))
                {
                    found = Some((sha256, wasm));
                }
                false
            },
        )?;
        let (sha256, wasm) = found.ok_or_else(not_found)?;
        if let Some(expected) = expected
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(StoreError::Conflict {
                code: "policy_changed",
                message: format!(
                    "policy {name:?} changed (its binary is now {sha256}): read the list again"
                ),
            });
        }
        Ok(PolicyWasm {
            sha256,
            wasm_base64: STANDARD.encode(wasm),
        })
    }

    /// Records a host's decisions, each `(host, seq)` once, then drops the oldest past `keep`.
    pub(super) fn record_decisions(
        &self,
        host_id: &str,
        decisions: Vec<DecisionReport>,
        now: i64,
        keep: i64,
    ) -> Result<Accepted, StoreError> {
        ids::check(ids::HOST, "host_id", host_id)?;
        if decisions.is_empty() || decisions.len() > policy::MAX_REPORT {
            return Err(StoreError::invalid(
                "decisions",
                format!("1 to {} decisions per report", policy::MAX_REPORT),
            ));
        }
        let rows = decisions
            .into_iter()
            .enumerate()
            .map(|(i, d)| decision_params(host_id, i, d, now))
            .collect::<Result<Vec<_>, _>>()?;
        let mut accepted: i64 = 0;
        for params in rows {
            // RETURNING answers a row only for an insert that happened: the count of new rows
            // without trusting the engine's write counter (which also counts index writes).
            let inserted: Vec<IgnoredAny> = self.sql.query(
                "INSERT INTO policy_decisions (host_id, seq, session_id, agent, event, policy,
                     decision, reason, duration_us, at, received_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (host_id, seq) DO NOTHING
                 RETURNING id",
                &params,
            )?;
            accepted += i64::try_from(inserted.len()).unwrap_or(0);
        }
        if accepted > 0 {
            self.sql.execute(
                "UPDATE counters SET value = value + ? WHERE name = 'decision_count'",
                &[accepted.into()],
            )?;
            self.trim_decisions(keep)?;
        }
        Ok(Accepted {
            accepted: u64::try_from(accepted).unwrap_or(0),
        })
    }

    /// Deletes the oldest decisions past `keep`. The count is kept in `counters`: counting the
    /// table on every report would read every row.
    fn trim_decisions(&self, keep: i64) -> Result<(), StoreError> {
        let kept = self.count(
            "SELECT value AS n FROM counters WHERE name = 'decision_count'",
            &[],
        )?;
        if kept <= keep {
            return Ok(());
        }
        let gone: Vec<IgnoredAny> = self.sql.query(
            "DELETE FROM policy_decisions WHERE id IN
                 (SELECT id FROM policy_decisions ORDER BY at, id LIMIT ?)
             RETURNING id",
            &[(kept - keep).into()],
        )?;
        self.sql.execute(
            "UPDATE counters SET value = value - ? WHERE name = 'decision_count'",
            &[i64::try_from(gone.len()).unwrap_or(0).into()],
        )?;
        Ok(())
    }

    pub(super) fn list_decisions(&self, q: &DecisionQuery) -> Result<DecisionPage, StoreError> {
        let limit = page_limit(q.limit)?;
        let mut sql = String::from("SELECT * FROM policy_decisions WHERE 1 = 1");
        let mut params: Vec<SqlValue> = Vec::new();
        if let Some(h) = &q.host_id {
            ids::check(ids::HOST, "host_id", h)?;
            sql.push_str(" AND host_id = ?");
            params.push(h.into());
        }
        if let Some(s) = &q.session_id {
            sql.push_str(" AND session_id = ?");
            params.push(s.into());
        }
        if let Some(p) = &q.policy {
            sql.push_str(" AND policy = ?");
            params.push(p.into());
        }
        if let Some(d) = q.decision {
            sql.push_str(" AND decision = ?");
            params.push(d.as_str().into());
        }
        if let Some(c) = &q.cursor {
            let (at, id) = decode_cursor(c)?
                .split_once(':')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.parse::<i64>().ok()?)))
                .ok_or_else(bad_cursor)?;
            sql.push_str(" AND (at, id) < (?, ?)");
            params.push(at.into());
            params.push(id.into());
        }
        sql.push_str(" ORDER BY at DESC, id DESC LIMIT ?");
        params.push((limit + 1).into());
        let rows: Vec<DecisionRow> = self.sql.query(&sql, &params)?;
        let page = paginate(rows, limit, |r: &DecisionRow| format!("{}:{}", r.at, r.id));
        Ok(DecisionPage {
            decisions: page.data,
            next_cursor: page.next_cursor,
        })
    }
}
