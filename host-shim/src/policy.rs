//! The policy host: guardrail policies (WebAssembly components of the `tether:guardrail`
//! world, `wasm-plugins/wit/`) run by wasmtime, sandboxed.
//!
//! - No WASI: the linker defines only the two `host` functions (`log`, `config`), so a component
//!   that imports anything else (a WASI clock, files, sockets) is refused when it loads.
//! - Compiled once per content: wasmtime's own code cache (in `cache_dir`) keeps the machine
//!   code between runs, keyed by the component's bytes and the engine's settings; each loaded
//!   policy keeps an `InstancePre` (imports resolved once), and instances come from the pooling
//!   allocator.
//! - Every call gets a fresh `Store` with a CPU deadline (epoch interruption: a ticker thread
//!   advances the engine's epoch every [`TICK`] while calls run, and is parked otherwise) and a
//!   memory cap (`StoreLimits`); a call that traps, runs out of time or memory, or answers
//!   more than [`MAX_ANSWER`] bytes fails, and its policy's [`FailureMode`] decides (deny by
//!   default: fail closed).
//! - [`PolicyHost::decide`] runs the policies that want the event in order: the first deny
//!   wins, rewrites compose (the next policy sees the rewritten input), asks escalate, contexts
//!   are joined. Every policy's decision and duration is in the answer, for the log.
//!
//! Loading checks the component's SHA-256 when one is pinned (org policies are), so a
//! different binary is refused.

use crate::hooks::protocol::{HookEvent, Payload as HookPayload, Verdict};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder,
};

mod bindings {
    wasmtime::component::bindgen!({ path: "../wasm-plugins/wit", world: "policy" });
}

use bindings::tether::guardrail::{host, types};
use bindings::{Policy, PolicyPre};

/// How often the engine's epoch advances: the granularity of CPU deadlines.
pub const TICK: Duration = Duration::from_millis(2);
/// The most bytes of text a policy's answer may carry (reason, rewrite, context together).
pub const MAX_ANSWER: usize = 256 * 1024;
/// The most bytes of one log line kept, and log lines kept per call.
const MAX_LOG_LINE: usize = 1024;
const MAX_LOG_LINES: u32 = 32;
/// Policies instantiated at once (the pooling allocator's slots).
const POOL_SLOTS: u32 = 32;

/// What the sandbox allows one call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// CPU time before the call is stopped.
    pub deadline: Duration,
    /// Linear memory, in bytes.
    pub memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(100),
            memory: 16 * 1024 * 1024,
        }
    }
}

/// What a policy's failure (trap, timeout, memory, bad answer) means: deny (fail closed, the
/// default) or allow (fail open). The same type as the org's policies carry.
pub use tether_durable::policy::Failure as FailureMode;

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the policy's SHA-256 is {found}, not the pinned {expected}: refused")]
    Mismatch { expected: String, found: String },
    #[error("not a usable policy component: {0}")]
    Invalid(String),
}

/// A policy ready to run.
pub struct LoadedPolicy {
    pub name: String,
    pub sha256: String,
    /// The events it wants (empty: all).
    events: Vec<types::EventKind>,
    pre: PolicyPre<Guest>,
    config: Arc<str>,
    pub failure: FailureMode,
}

impl std::fmt::Debug for LoadedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPolicy")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// The store data of one call.
pub struct Guest {
    limits: StoreLimits,
    config: Arc<str>,
    policy: String,
    logged: u32,
}

impl types::Host for Guest {}

impl host::Host for Guest {
    fn log(&mut self, level: types::LogLevel, message: String) {
        self.logged += 1;
        if self.logged > MAX_LOG_LINES {
            return;
        }
        let line: String = message.chars().take(MAX_LOG_LINE).collect();
        let policy = &self.policy;
        match level {
            types::LogLevel::Error => tracing::error!(%policy, "{line}"),
            types::LogLevel::Warn => tracing::warn!(%policy, "{line}"),
            types::LogLevel::Info => tracing::info!(%policy, "{line}"),
            types::LogLevel::Debug => tracing::debug!(%policy, "{line}"),
            types::LogLevel::Trace => tracing::trace!(%policy, "{line}"),
        }
    }

    fn config(&mut self) -> String {
        self.config.to_string()
    }
}

/// One instance kept for many calls: cheaper than a fresh one per event (the benchmark compares
/// both), but state may leak between events and a trap or timeout ends it.
pub struct Warm<'a> {
    host: &'a PolicyHost,
    store: Store<Guest>,
    instance: Policy,
}

impl Warm<'_> {
    /// Judges `event`: the decision's name, or why the call failed.
    pub fn evaluate(&mut self, event: &HookEvent) -> Result<&'static str, String> {
        let _ticking = self.host.ticker.call();
        self.store.set_epoch_deadline(self.host.deadline_ticks());
        let outcome = self
            .instance
            .call_evaluate(&mut self.store, &to_wit(event))
            .map_err(|e| describe_trap(&e, &self.host.limits))?;
        Ok(match outcome.verdict {
            types::Decision::Allow => "allow",
            types::Decision::Deny(_) => "deny",
            types::Decision::Ask(_) => "ask",
            types::Decision::Rewrite(_) => "rewrite",
        })
    }
}

/// One policy's part in a decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub policy: String,
    /// `allow`, `deny`, `ask`, `rewrite`, or `failed` (then `reason` says why and the failure
    /// mode applied).
    pub decision: &'static str,
    pub reason: Option<String>,
    pub duration_us: u64,
}

/// The combined answer for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combined {
    pub verdict: Verdict,
    pub context: Option<String>,
    pub decisions: Vec<Decision>,
}

/// The engine, linker and epoch ticker shared by every policy.
pub struct PolicyHost {
    engine: Engine,
    linker: Linker<Guest>,
    limits: Limits,
    ticker: Ticker,
}

/// The thread that advances the engine's epoch: it ticks only while calls run and sleeps
/// (parked) otherwise, so an idle daemon pays nothing for its deadlines.
struct Ticker {
    thread: std::thread::Thread,
    running: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Ticker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let running = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (calls, flag) = (running.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if calls.load(Ordering::Acquire) == 0 {
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            thread: handle.thread().clone(),
            running,
            stop,
        })
    }

    /// Keeps the epoch moving until the guard drops.
    fn call(&self) -> CallGuard<'_> {
        self.running.fetch_add(1, Ordering::AcqRel);
        self.thread.unpark();
        CallGuard(self)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.unpark();
    }
}

struct CallGuard<'a>(&'a Ticker);

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

fn err(e: impl std::fmt::Display) -> LoadError {
    LoadError::Invalid(e.to_string())
}

impl PolicyHost {
    /// An engine with the sandbox's settings; `cache_dir` keeps compiled code between runs.
    pub fn new(limits: Limits, cache_dir: Option<&std::path::Path>) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let memory = u64::try_from(limits.memory).map_err(err)?;
        // Small reservations: a policy's memory cannot grow past the cap anyway.
        config.memory_reservation(memory);
        config.memory_guard_size(64 * 1024);
        config.memory_reservation_for_growth(0);
        config.max_wasm_stack(512 * 1024);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS * 4)
            .total_memories(POOL_SLOTS * 2)
            .total_tables(POOL_SLOTS * 4)
            .max_memory_size(limits.memory);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = cache_dir {
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(wasmtime::Cache::new(cache).map_err(err)?));
        }
        let engine = Engine::new(&config).map_err(err)?;
        let mut linker = Linker::new(&engine);
        Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |g| g).map_err(err)?;
        let ticker = Ticker::start(engine.clone()).map_err(err)?;
        Ok(Self {
            engine,
            linker,
            limits,
            ticker,
        })
    }

    fn store(&self, config: Arc<str>, policy: &str) -> Store<Guest> {
        let mut store = Store::new(
            &self.engine,
            Guest {
                limits: StoreLimitsBuilder::new()
                    .memory_size(self.limits.memory)
                    .instances(4)
                    .tables(8)
                    .memories(2)
                    .trap_on_grow_failure(true)
                    .build(),
                config,
                policy: policy.to_owned(),
                logged: 0,
            },
        );
        store.limiter(|g| &mut g.limits);
        store.set_epoch_deadline(self.deadline_ticks());
        store.epoch_deadline_trap();
        store
    }

    /// The CPU deadline in epoch ticks (one more, for the tick already under way).
    fn deadline_ticks(&self) -> u64 {
        let ticks = self.limits.deadline.as_nanos() / TICK.as_nanos() + 1;
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    /// Loads a component (`bytes`), checking it against `pinned` (a hex SHA-256) when given,
    /// and asks it its name and events (under the same limits as any call).
    pub fn load(
        &self,
        bytes: &[u8],
        config: &str,
        failure: FailureMode,
        pinned: Option<&str>,
    ) -> Result<LoadedPolicy, LoadError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        if let Some(expected) = pinned
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(LoadError::Mismatch {
                expected: expected.to_owned(),
                found: sha256,
            });
        }
        let component = Component::new(&self.engine, bytes).map_err(err)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(PolicyPre::new)
            .map_err(|e| {
                LoadError::Invalid(format!(
                    "{e:#} (a policy may import only tether:guardrail/host: no WASI)"
                ))
            })?;
        let config: Arc<str> = Arc::from(config);
        let _ticking = self.ticker.call();
        let mut store = self.store(config.clone(), "loading");
        let instance = pre.instantiate(&mut store).map_err(err)?;
        let name = instance.call_name(&mut store).map_err(err)?;
        let events = instance.call_events(&mut store).map_err(err)?;
        if name.is_empty() || name.len() > 64 {
            return Err(LoadError::Invalid(
                "a policy's name is 1 to 64 bytes".into(),
            ));
        }
        Ok(LoadedPolicy {
            name,
            sha256,
            events,
            pre,
            config,
            failure,
        })
    }

    /// An instance of `policy` to reuse across events.
    pub fn warm(&self, policy: &LoadedPolicy) -> Result<Warm<'_>, String> {
        let mut store = self.store(policy.config.clone(), &policy.name);
        let instance = policy
            .pre
            .instantiate(&mut store)
            .map_err(|e| format!("{e:#}"))?;
        Ok(Warm {
            host: self,
            store,
            instance,
        })
    }

    /// One policy on one event, in a fresh instance: its outcome, or why it failed.
    pub fn evaluate(
        &self,
        policy: &LoadedPolicy,
        event: &types::Event,
    ) -> Result<types::Outcome, String> {
        let _ticking = self.ticker.call();
        let mut store = self.store(policy.config.clone(), &policy.name);
        let instance = policy
            .pre
            .instantiate(&mut store)
            .map_err(|e| format!("{e:#}"))?;
        let outcome = instance
            .call_evaluate(&mut store, event)
            .map_err(|e| describe_trap(&e, &self.limits))?;
        let size = match &outcome.verdict {
            types::Decision::Allow => 0,
            types::Decision::Deny(s) | types::Decision::Ask(s) | types::Decision::Rewrite(s) => {
                s.len()
            }
        } + outcome.context.as_ref().map_or(0, String::len);
        if size > MAX_ANSWER {
            return Err(format!("its answer is {size} bytes, over {MAX_ANSWER}"));
        }
        Ok(outcome)
    }

    /// Runs `policies` (in order) on `event`: first deny wins, rewrites compose, asks
    /// escalate, contexts are joined.
    pub fn decide(&self, policies: &[LoadedPolicy], event: &HookEvent) -> Combined {
        self.decide_wit(policies, to_wit(event))
    }

    fn decide_wit(&self, policies: &[LoadedPolicy], mut event: types::Event) -> Combined {
        let kind = kind_of(&event.payload);
        let mut decisions = Vec::new();
        let mut asks: Vec<String> = Vec::new();
        let mut contexts: Vec<String> = Vec::new();
        let mut rewritten: Option<String> = None;
        for policy in policies {
            if !policy.events.is_empty() && !policy.events.contains(&kind) {
                continue;
            }
            let started = Instant::now();
            let result = self.evaluate(policy, &event);
            let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let record = |decision: &'static str, reason: Option<String>| Decision {
                policy: policy.name.clone(),
                decision,
                reason,
                duration_us,
            };
            let outcome = match result {
                Ok(o) => o,
                Err(why) => {
                    decisions.push(record("failed", Some(why.clone())));
                    match policy.failure {
                        FailureMode::Deny if can_deny(kind) => {
                            return Combined {
                                verdict: Verdict::Deny(format!(
                                    "policy {} failed ({why}); its failure mode denies",
                                    policy.name
                                )),
                                context: joined(&contexts),
                                decisions,
                            };
                        }
                        // Failing open, or on an event where a deny protects nothing.
                        _ => continue,
                    }
                }
            };
            if let Some(c) = outcome.context {
                contexts.push(c);
            }
            match outcome.verdict {
                types::Decision::Allow => decisions.push(record("allow", None)),
                types::Decision::Deny(reason) => {
                    decisions.push(record("deny", Some(reason.clone())));
                    return Combined {
                        verdict: Verdict::Deny(reason),
                        context: joined(&contexts),
                        decisions,
                    };
                }
                types::Decision::Ask(reason) => {
                    decisions.push(record("ask", Some(reason.clone())));
                    asks.push(reason);
                }
                types::Decision::Rewrite(new) => {
                    if rewrite(&mut event.payload, &new) {
                        decisions.push(record("rewrite", None));
                        rewritten = Some(new);
                    } else {
                        // Not applicable to this event: no objection.
                        decisions.push(record("allow", None));
                    }
                }
            }
        }
        let verdict = if !asks.is_empty() {
            Verdict::Ask(asks.join("; "))
        } else if let Some(new) = rewritten {
            Verdict::Rewrite(new)
        } else {
            Verdict::Allow
        };
        Combined {
            verdict,
            context: joined(&contexts),
            decisions,
        }
    }
}

fn joined(parts: &[String]) -> Option<String> {
    (!parts.is_empty()).then(|| parts.join("\n"))
}

/// A failed call's cause in words: out of time, out of memory, or the guest's own trap.
fn describe_trap(e: &wasmtime::Error, limits: &Limits) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => format!(
            "it ran past its CPU deadline of {} ms",
            limits.deadline.as_millis()
        ),
        Some(trap) => format!("it trapped: {trap}"),
        // The limiter refuses a memory.grow past the cap with this error.
        None if format!("{e:#}").contains("growing memory") => {
            format!("it went over its memory cap of {} bytes", limits.memory)
        }
        None => format!("{e:#}"),
    }
}

/// Applies a rewrite to the event's input; false when the event has none to rewrite.
fn rewrite(payload: &mut types::Payload, new: &str) -> bool {
    match payload {
        types::Payload::UserPromptSubmit(prompt) => {
            *prompt = new.to_owned();
            true
        }
        types::Payload::PreToolUse(call) => {
            call.tool_input = new.to_owned();
            true
        }
        _ => false,
    }
}

/// [`EventKind::can_deny`](crate::hooks::protocol::EventKind::can_deny), in the WIT's terms.
fn can_deny(kind: types::EventKind) -> bool {
    matches!(
        kind,
        types::EventKind::UserPromptSubmit | types::EventKind::PreToolUse
    )
}

fn kind_of(payload: &types::Payload) -> types::EventKind {
    match payload {
        types::Payload::UserPromptSubmit(_) => types::EventKind::UserPromptSubmit,
        types::Payload::PreToolUse(_) => types::EventKind::PreToolUse,
        types::Payload::PostToolUse(_) => types::EventKind::PostToolUse,
        types::Payload::SessionStart(_) => types::EventKind::SessionStart,
        types::Payload::Stop => types::EventKind::Stop,
    }
}

/// The hook event in the WIT's terms.
pub fn to_wit(e: &HookEvent) -> types::Event {
    let payload = match &e.payload {
        HookPayload::Prompt(p) => types::Payload::UserPromptSubmit(p.clone()),
        HookPayload::ToolCall {
            tool_name,
            tool_input,
        } => types::Payload::PreToolUse(types::ToolCall {
            tool_name: tool_name.clone(),
            tool_input: tool_input.to_string(),
        }),
        HookPayload::ToolResult {
            tool_name,
            tool_input,
            tool_response,
        } => types::Payload::PostToolUse(types::ToolResult {
            tool_name: tool_name.clone(),
            tool_input: tool_input.to_string(),
            tool_response: tool_response.to_string(),
        }),
        HookPayload::SessionStart { source } => types::Payload::SessionStart(source.clone()),
        HookPayload::Stop => types::Payload::Stop,
    };
    types::Event {
        session: types::Session {
            id: e.session_id.clone(),
            cwd: e.cwd.clone(),
            agent: e.agent.id().to_owned(),
            permission_mode: e.permission_mode.clone(),
        },
        payload,
    }
}

/// One policy in the machine's config (`[[policies]]` in config.toml), in evaluation order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEntry {
    /// The component file.
    pub path: std::path::PathBuf,
    /// Its configuration (handed to it as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<toml::Table>,
    /// What its failures mean (default: deny).
    #[serde(default)]
    pub failure: FailureMode,
    /// The SHA-256 it was added with: a different file at the path is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl PolicyEntry {
    /// Its configuration as the JSON the policy reads.
    pub fn config_json(&self) -> String {
        self.config
            .as_ref()
            .and_then(|t| serde_json::to_string(t).ok())
            .unwrap_or_else(|| "{}".into())
    }

    /// The policy to load for this entry.
    pub fn source(&self) -> PolicySource {
        PolicySource {
            origin: self.path.display().to_string(),
            path: self.path.clone(),
            config: self.config_json(),
            failure: self.failure,
            sha256: self.sha256.clone(),
        }
    }
}

/// A policy to load: the org's (downloaded, pinned) or the machine's own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicySource {
    /// Where it comes from, for messages: `org:NAME` or the file's path.
    pub origin: String,
    /// The component file.
    pub path: std::path::PathBuf,
    /// Its configuration, a JSON object.
    pub config: String,
    pub failure: FailureMode,
    /// The SHA-256 the file must have.
    pub sha256: Option<String>,
}

/// The machine's policies, loaded, ready to judge events.
pub struct Policies {
    /// None when no policy is configured: no engine is built.
    host: Option<PolicyHost>,
    loaded: Vec<LoadedPolicy>,
    /// A fail-closed policy that could not be loaded: every event it could deny is denied
    /// with this.
    broken: Option<String>,
    /// Every source loaded.
    complete: bool,
}

impl Policies {
    /// No policies: everything is allowed.
    pub fn none() -> Self {
        Self {
            host: None,
            loaded: Vec::new(),
            broken: None,
            complete: true,
        }
    }

    /// Loads `sources` in order. One that cannot be loaded (missing, changed, not a policy)
    /// is logged; if it fails closed, every event it could deny is denied until it is fixed.
    pub fn load(
        sources: &[PolicySource],
        limits: Limits,
        cache_dir: Option<&std::path::Path>,
    ) -> Result<Self, LoadError> {
        if sources.is_empty() {
            return Ok(Self::none());
        }
        let host = PolicyHost::new(limits, cache_dir)?;
        let mut loaded = Vec::new();
        let mut broken = None;
        for source in sources {
            let result = std::fs::read(&source.path)
                .map_err(|e| LoadError::Invalid(format!("{}: {e}", source.path.display())))
                .and_then(|bytes| {
                    host.load(
                        &bytes,
                        &source.config,
                        source.failure,
                        source.sha256.as_deref(),
                    )
                });
            match result {
                Ok(p) => loaded.push(p),
                Err(e) => {
                    let why = format!("policy {} could not be loaded: {e}", source.origin);
                    tracing::error!("{why}");
                    if source.failure == FailureMode::Deny {
                        broken.get_or_insert(why);
                    }
                }
            }
        }
        Ok(Self {
            host: Some(host),
            complete: loaded.len() == sources.len(),
            loaded,
            broken,
        })
    }

    /// Whether every policy it was loaded from could be loaded.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty() && self.broken.is_none()
    }

    pub fn names(&self) -> Vec<String> {
        self.loaded.iter().map(|p| p.name.clone()).collect()
    }

    /// Every policy's judgement of `event`, combined.
    pub fn decide(&self, event: &HookEvent) -> Combined {
        self.decide_wit(to_wit(event))
    }

    /// The user-prompt-submit judgement of a prompt dispatched to session `session_id` of
    /// `agent` (a preset name), before the agent starts in `cwd`.
    pub fn gate_prompt(&self, session_id: &str, cwd: &str, agent: &str, prompt: &str) -> Combined {
        self.decide_wit(types::Event {
            session: types::Session {
                id: session_id.to_owned(),
                cwd: cwd.to_owned(),
                agent: agent.to_owned(),
                permission_mode: None,
            },
            payload: types::Payload::UserPromptSubmit(prompt.to_owned()),
        })
    }

    fn decide_wit(&self, event: types::Event) -> Combined {
        match &self.broken {
            Some(why) if can_deny(kind_of(&event.payload)) => Combined {
                verdict: Verdict::Deny(why.clone()),
                context: None,
                decisions: Vec::new(),
            },
            _ => match &self.host {
                Some(host) => host.decide_wit(&self.loaded, event),
                None => Combined {
                    verdict: Verdict::Allow,
                    context: None,
                    decisions: Vec::new(),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::hooks::Agent;
    use serde_json::json;
    use std::path::PathBuf;

    /// A component built by `bash wasm-plugins/build.sh` (tests/run.sh builds them first).
    fn component(name: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../wasm-plugins/dist")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build the policies first: bash wasm-plugins/build.sh",
                path.display()
            )
        })
    }

    fn host() -> PolicyHost {
        PolicyHost::new(Limits::default(), None).unwrap()
    }

    fn prompt(text: &str) -> HookEvent {
        HookEvent {
            agent: Agent::ClaudeCode,
            session_id: "s1".into(),
            cwd: "/w/repo".into(),
            permission_mode: None,
            tool_use_id: None,
            payload: HookPayload::Prompt(text.into()),
        }
    }

    fn bash(command: &str) -> HookEvent {
        HookEvent {
            payload: HookPayload::ToolCall {
                tool_name: "Bash".into(),
                tool_input: json!({ "command": command }),
            },
            ..prompt("")
        }
    }

    fn load(host: &PolicyHost, name: &str, config: &str) -> LoadedPolicy {
        host.load(&component(name), config, FailureMode::Deny, None)
            .unwrap()
    }

    #[test]
    fn example_policies_decide_and_compose() {
        let host = host();
        let secrets = load(&host, "secret-guard.wasm", r#"{"mode": "redact"}"#);
        let commands = load(&host, "command-guard.wasm", "{}");
        assert_eq!(
            (secrets.name.as_str(), commands.name.as_str()),
            ("secret-guard", "command-guard")
        );
        let both = [secrets, commands];

        let c = host.decide(&both, &bash("rm -rf ~/"));
        assert!(matches!(c.verdict, Verdict::Deny(_)), "{c:?}");
        assert_eq!(c.decisions.last().map(|d| d.decision), Some("deny"));

        // The secret is redacted, and the command guard then judges the rewritten input.
        let key = "AKIAIOSFODNN7EXAMPLE";
        let c = host.decide(&both, &bash(&format!("echo {key} > creds")));
        match &c.verdict {
            Verdict::Rewrite(input) => assert!(
                !input.contains(key) && input.contains("REDACTED"),
                "{input}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.decisions.iter().map(|d| d.decision).collect::<Vec<_>>(),
            ["rewrite", "allow"]
        );
        // The command guard does not care about prompts; only the secret guard runs.
        let c = host.decide(&both, &prompt("hello"));
        assert_eq!((c.verdict, c.decisions.len()), (Verdict::Allow, 1));
    }

    #[test]
    fn compiled_code_is_cached_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let host = PolicyHost::new(Limits::default(), Some(dir.path())).unwrap();
        let files = || walk(dir.path());
        assert_eq!(files(), 0);
        load(&host, "allow-list.wasm", "{}");
        // The cache is written in the background; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        while files() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(files() > 0, "nothing cached in {}", dir.path().display());
    }

    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
    }

    #[test]
    fn a_pinned_hash_must_match_and_wasi_is_refused() {
        let host = host();
        let bytes = component("allow-list.wasm");
        let good = hex::encode(Sha256::digest(&bytes));
        assert!(
            host.load(&bytes, "{}", FailureMode::Deny, Some(&good))
                .is_ok()
        );
        let bad = "0".repeat(64);
        assert!(matches!(
            host.load(&bytes, "{}", FailureMode::Deny, Some(&bad)),
            Err(LoadError::Mismatch { .. })
        ));
        let wasi = host.load(
            &component("test/hostile-wasi.wasm"),
            "{}",
            FailureMode::Deny,
            None,
        );
        assert!(
            matches!(&wasi, Err(LoadError::Invalid(m)) if m.contains("wasi")),
            "{wasi:?}"
        );
        assert!(
            host.load(b"not wasm", "{}", FailureMode::Deny, None)
                .is_err()
        );
    }

    #[test]
    fn hostile_policies_are_stopped_within_their_limits_and_the_failure_mode_applies() {
        let limits = Limits {
            deadline: Duration::from_millis(50),
            memory: 8 * 1024 * 1024,
        };
        let host = PolicyHost::new(limits, None).unwrap();
        for (behavior, expect) in [
            ("loop", "deadline"),
            ("grow", "memory cap"),
            ("huge", "over"),
            ("trap", "trapped"),
        ] {
            let config = format!(r#"{{"behavior": "{behavior}"}}"#);
            let closed = host
                .load(
                    &component("test/hostile.wasm"),
                    &config,
                    FailureMode::Deny,
                    None,
                )
                .unwrap();
            let started = Instant::now();
            let c = host.decide(std::slice::from_ref(&closed), &prompt("x"));
            let took = started.elapsed();
            let why = c
                .decisions
                .first()
                .and_then(|d| d.reason.clone())
                .unwrap_or_default();
            assert!(matches!(c.verdict, Verdict::Deny(_)), "{behavior}: {c:?}");
            assert!(why.contains(expect), "{behavior}: {why}");
            assert!(took < Duration::from_secs(2), "{behavior} took {took:?}");
            // Fail open lets it through; the host still serves the next call.
            let open = host
                .load(
                    &component("test/hostile.wasm"),
                    &config,
                    FailureMode::Allow,
                    None,
                )
                .unwrap();
            let c = host.decide(std::slice::from_ref(&open), &prompt("x"));
            assert_eq!(c.verdict, Verdict::Allow, "{behavior}");
        }
        let fine = host
            .load(
                &component("test/hostile.wasm"),
                "{}",
                FailureMode::Deny,
                None,
            )
            .unwrap();
        assert_eq!(host.decide(&[fine], &prompt("x")).verdict, Verdict::Allow);
    }
}
