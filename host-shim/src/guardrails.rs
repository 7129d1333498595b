//! The daemon's guardrails: the policy set it enforces, kept current, judging the events of
//! the sessions it runs, and the log of every decision.
//!
//! - The set is the org's policies (uploaded through the API, downloaded by [`org::sync`] and
//!   pinned by SHA-256), in the org's order, then the machine's own (`[[policies]]` in
//!   config.toml). [`Guardrails::reload`] rebuilds it when either changed; the daemon calls
//!   it every `policy_sync_secs`, and `tether policy add|remove` ask for it at once through
//!   the control socket.
//! - [`Guardrails::judge`] runs the set on one event (on a blocking thread: policies are CPU
//!   work with a deadline), records every policy's decision in the state database and wakes
//!   the reporter, which sends the log to the org ([`report`]).

pub mod org;
pub mod report;
pub mod store;

use crate::config::Config;
use crate::hooks::protocol::{EventKind, HookEvent};
use crate::host_auth::HostAuth;
use crate::paths::Paths;
use crate::policy::{Combined, Limits, Policies, PolicySource};
use crate::state::State;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// The daemon's policy set and decision log.
pub struct Guardrails {
    paths: Paths,
    limits: Limits,
    state: Arc<State>,
    current: RwLock<Arc<Policies>>,
    /// What the current set was loaded from: a reload with the same sources is skipped.
    loaded_from: Mutex<Option<Vec<PolicySource>>>,
    /// Reloads one at a time.
    reloading: tokio::sync::Mutex<()>,
    pub(crate) report_now: Notify,
}

impl Guardrails {
    /// Loads the set from the org's cached policies and config.toml.
    pub async fn load(
        paths: Paths,
        state: Arc<State>,
        limits: Limits,
    ) -> Result<Self, crate::Error> {
        let guardrails = Self {
            paths,
            limits,
            state,
            current: RwLock::new(Arc::new(Policies::none())),
            loaded_from: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
            report_now: Notify::new(),
        };
        guardrails.reload().await?;
        Ok(guardrails)
    }

    /// The folder of the org's downloaded policies and their manifest.
    pub fn org_dir(paths: &Paths) -> PathBuf {
        paths.state_dir.join("policies")
    }

    /// Compiled code, kept between runs.
    fn cache_dir(&self) -> PathBuf {
        self.paths.state_dir.join("policy-cache")
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<Policies> {
        self.current
            .read()
            .map_or_else(|p| p.into_inner().clone(), |c| c.clone())
    }

    /// Every policy to load now, in order: the org's, then the machine's.
    pub fn sources(paths: &Paths) -> Result<Vec<PolicySource>, crate::Error> {
        let mut sources = org::cached_sources(&Self::org_dir(paths));
        let config = Config::load(&paths.config_file())?;
        sources.extend(config.policies.iter().map(|p| p.source()));
        Ok(sources)
    }

    /// Rebuilds the set when its sources changed, or some could not be loaded last time (a
    /// file's content is checked at load by its pinned SHA-256). Answers the names in force.
    pub async fn reload(&self) -> Result<Vec<String>, crate::Error> {
        let _one = self.reloading.lock().await;
        let sources = Self::sources(&self.paths)?;
        let unchanged = self
            .loaded_from
            .lock()
            .is_ok_and(|l| l.as_ref() == Some(&sources));
        if unchanged && self.current().is_complete() {
            return Ok(self.current().names());
        }
        let cache = self.cache_dir();
        crate::paths::ensure_private_dir(&cache)?;
        let (limits, list) = (self.limits, sources.clone());
        let policies =
            tokio::task::spawn_blocking(move || Policies::load(&list, limits, Some(&cache)))
                .await
                .map_err(|e| crate::Error::InvalidConfig(format!("loading policies: {e}")))?
                .map_err(|e| crate::Error::InvalidConfig(e.to_string()))?;
        let names = policies.names();
        if !sources.is_empty() || !self.current().is_empty() {
            info!(policies = ?names, "guardrail policies loaded");
        }
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(policies);
        }
        if let Ok(mut l) = self.loaded_from.lock() {
            *l = Some(sources);
        }
        Ok(names)
    }

    /// Keeps the set current for the daemon's lifetime: every `every`, syncs the org's
    /// policies (kept as they are when the server cannot be reached) and reloads when they or
    /// config.toml changed.
    pub async fn keep_current(&self, auth: &HostAuth, http: &reqwest::Client, every: Duration) {
        let dir = Self::org_dir(&self.paths);
        let mut last_error = None;
        loop {
            let error = org::sync(http, auth, &dir, !self.current().is_complete())
                .await
                .err()
                .map(|e| e.to_string());
            if error.is_some() && error != last_error {
                warn!(
                    error = error.as_deref().unwrap_or_default(),
                    "syncing the org's policies failed; the cached ones stay in force"
                );
            }
            last_error = error;
            if let Err(e) = self.reload().await {
                warn!(error = %e, "reloading the policies failed; the loaded ones stay in force");
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Runs the set on one agent hook event of session `session_id`, and records the
    /// decisions.
    pub async fn judge(&self, session_id: &str, event: HookEvent) -> Combined {
        let policies = self.current();
        let kind = event.kind();
        let agent = event.agent.id();
        let combined = run_blocking(move || policies.decide(&event), kind).await;
        self.record(Some(session_id), agent, kind, &combined).await;
        combined
    }

    /// The user-prompt-submit judgement of a prompt dispatched to session `session_id` of
    /// `agent` (a preset name), before the agent starts in `cwd`; recorded.
    pub async fn gate_prompt(
        &self,
        session_id: &str,
        cwd: &str,
        agent: &str,
        prompt: &str,
    ) -> Combined {
        let policies = self.current();
        let (id, cwd, preset, text) = (
            session_id.to_owned(),
            cwd.to_owned(),
            agent.to_owned(),
            prompt.to_owned(),
        );
        let combined = run_blocking(
            move || policies.gate_prompt(&id, &cwd, &preset, &text),
            EventKind::UserPromptSubmit,
        )
        .await;
        self.record(
            Some(session_id),
            agent,
            EventKind::UserPromptSubmit,
            &combined,
        )
        .await;
        combined
    }

    async fn record(&self, session_id: Option<&str>, agent: &str, kind: EventKind, c: &Combined) {
        if c.decisions.is_empty() {
            return;
        }
        match self
            .state
            .record_decisions(session_id, agent, kind.as_str(), &c.decisions)
            .await
        {
            Ok(()) => self.report_now.notify_one(),
            Err(e) => warn!(error = %e, "recording policy decisions failed"),
        }
    }
}

/// Runs a judgement on a blocking thread. A judgement that panicked (a bug, never a policy's
/// doing: their failures are values) denies what can be denied.
async fn run_blocking(
    judge: impl FnOnce() -> Combined + Send + 'static,
    kind: EventKind,
) -> Combined {
    tokio::task::spawn_blocking(judge)
        .await
        .unwrap_or_else(|e| {
            warn!(error = %e, "the policy check failed");
            Combined {
                verdict: if kind.can_deny() {
                    crate::hooks::protocol::Verdict::Deny(format!("the policy check failed: {e}"))
                } else {
                    crate::hooks::protocol::Verdict::Allow
                },
                context: None,
                decisions: Vec::new(),
            }
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::hooks::protocol::Verdict;

    fn dist(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../wasm-plugins/dist")
                .join(name),
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_org_policy_whose_binary_changed_on_disk_is_refused_and_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("config"), dir.path().join("state"));
        let org_dir = Guardrails::org_dir(&paths);
        std::fs::create_dir_all(&org_dir).unwrap();
        let good = dist("allow-list.wasm");
        let sha = org::sha256_hex(&good);
        let manifest = serde_json::json!([{
            "name": "allow-list", "sha256": sha, "size": good.len(), "config": {},
            "failure": "deny", "position": 0, "created_by": "mem_1",
            "created_at": "2026-11-22T00:00:00Z", "updated_at": "2026-11-22T00:00:00Z"
        }]);
        std::fs::write(org_dir.join(org::MANIFEST), manifest.to_string()).unwrap();
        let file = org_dir.join(format!("{sha}.wasm"));
        // Another component under the pinned name: refused, and the org's fail-closed policy
        // then denies what it could deny.
        std::fs::write(&file, dist("secret-guard.wasm")).unwrap();
        let state = Arc::new(State::open_in_memory().await.unwrap());
        let guardrails = Guardrails::load(paths, state, Limits::default())
            .await
            .unwrap();
        assert!(guardrails.current().names().is_empty());
        let c = guardrails
            .gate_prompt("ses_1", "/w", "claude", "hello")
            .await;
        assert!(
            matches!(&c.verdict, Verdict::Deny(why) if why.contains("org:allow-list") && why.contains("SHA-256")),
            "{c:?}"
        );
        // The right binary back (as the next sync puts it): loaded on the next reload.
        std::fs::write(&file, &good).unwrap();
        assert_eq!(guardrails.reload().await.unwrap(), ["allow-list"]);
    }
}
