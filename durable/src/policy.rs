//! Guardrail policies an org ships to its machines, and the decisions the machines report back.
//! The Worker, the Org object, the OpenAPI document and the daemon all use these types.
//!
//! A policy is a WebAssembly component (the `tether:guardrail` world) stored in the org's
//! object under a name, with its config and failure mode; every paired machine of the org
//! lists the policies, downloads the binaries whose SHA-256 it does not have, and runs them
//! in `position` order. Each decision a machine takes is recorded locally under its own
//! sequence number and reported (`POST /v1/hosts/{id}/policy-decisions`); a report is
//! idempotent per `(host, seq)`, so a retried one never counts twice.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

/// Policies per org.
pub const MAX_POLICIES: i64 = 32;
/// A policy binary's most bytes. Its base64 (4/3 of this, 1 MiB) plus the config fits in the
/// Worker's largest request body.
pub const MAX_POLICY_BYTES: usize = 768 * 1024;
/// A policy config's most bytes, serialised as JSON.
pub const MAX_CONFIG_BYTES: usize = 16 * 1024;
/// Positions run from 0 to this.
pub const MAX_POSITION: i64 = 1000;
/// A policy name's most bytes (`[a-z0-9][a-z0-9-]{0,62}`).
pub const NAME_MAX: usize = 63;
/// Decisions per report.
pub const MAX_REPORT: usize = 500;
/// Decisions kept per org; past this the oldest go.
pub const MAX_DECISIONS: i64 = 100_000;
/// A reported policy name's most characters (a machine may run policies of its own, whose
/// names follow no org rule).
pub const REPORTED_POLICY_MAX: usize = 128;
/// A reported session id's most characters (a Tether session, or an agent's own id).
pub const SESSION_ID_MAX: usize = 128;
/// A reported agent name's most characters.
pub const AGENT_MAX: usize = 64;
/// The most characters kept of a reported reason.
pub const REASON_MAX: usize = 2_000;

/// The response header that carries a downloaded binary's SHA-256 (lowercase hex).
pub const SHA256_HEADER: &str = "x-tether-sha256";

/// The preamble of a WebAssembly component: magic, then version 0x0d and layer 1.
pub const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
/// The preamble of a core WebAssembly module (version 1, layer 0).
pub const CORE_MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// True for a policy name: 1 to 63 of `a-z`, `0-9` and `-`, not starting with `-`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    let allowed = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=NAME_MAX).contains(&b.len())
        && b.first().is_some_and(allowed)
        && b.iter().all(|c| allowed(c) || *c == b'-')
}

/// True for a lowercase hex SHA-256.
pub fn valid_sha256(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why a binary cannot be a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BinaryError {
    #[error("a policy binary is at most {MAX_POLICY_BYTES} bytes; this one is {size}")]
    TooLarge { size: usize },
    #[error(
        "this is a core WebAssembly module, not a component: run `wasm-tools component new` on it \
         (or build for wasm32-wasip2 / with cargo-component)"
    )]
    CoreModule,
    #[error("not a WebAssembly component (a component starts with 00 61 73 6d 0d 00 01 00)")]
    NotComponent,
}

/// Checks what can be checked of a policy binary without compiling it: its size and that it
/// is a component. The machines compile and link it (and refuse one that imports anything
/// but the guardrail's own interfaces).
pub fn check_binary(wasm: &[u8]) -> Result<(), BinaryError> {
    if wasm.len() > MAX_POLICY_BYTES {
        return Err(BinaryError::TooLarge { size: wasm.len() });
    }
    match wasm.get(..8) {
        Some(h) if h == COMPONENT_HEADER => Ok(()),
        Some(h) if h == CORE_MODULE_HEADER => Err(BinaryError::CoreModule),
        _ => Err(BinaryError::NotComponent),
    }
}

/// What a machine does when the policy itself fails (traps, times out, answers garbage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// Fail closed: the event is denied.
    #[default]
    Deny,
    /// Fail open: the policy is skipped.
    Allow,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Allow => "allow",
        }
    }
}

/// A policy as listed: everything but the binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PolicyMeta {
    pub name: String,
    /// Lowercase hex SHA-256 of the binary.
    pub sha256: String,
    /// The binary's bytes.
    pub size: u64,
    /// Handed to the policy as is (a JSON object).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: Map<String, Value>,
    pub failure: Failure,
    /// Machines run policies by position, then name.
    pub position: i64,
    /// The member who created the policy (replacing it keeps its creator and creation time).
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

/// The org's policies, in the order machines run them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PolicyList {
    pub policies: Vec<PolicyMeta>,
}

/// Uploads a policy under the path's name, creating it or replacing it whole.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutPolicy {
    /// The component, standard base64, at most 768 KiB decoded.
    pub wasm_base64: String,
    /// When given, the SHA-256 (hex) the decoded binary must have: a check that it arrived whole.
    pub sha256: Option<String>,
    /// A JSON object of at most 16 KiB. Default `{}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub config: Option<Map<String, Value>>,
    /// Default `deny`.
    pub failure: Option<Failure>,
    /// 0 to 1000. Default: a replaced policy keeps its place, a new one goes after the last.
    pub position: Option<i64>,
}

/// Changes a policy's settings; the binary stays.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    /// Replaces the whole config.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub config: Option<Map<String, Value>>,
    pub failure: Option<Failure>,
    pub position: Option<i64>,
}

/// A policy to store, its binary already checked by the Worker (which also computed the hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewPolicy {
    pub name: String,
    /// Standard base64 (the org call travels as JSON).
    pub wasm_base64: String,
    pub sha256: String,
    pub config: Map<String, Value>,
    pub failure: Failure,
    pub position: Option<i64>,
}

/// The Org object's answer to an upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutAnswer {
    /// False when an existing policy was replaced.
    pub created: bool,
    pub policy: PolicyMeta,
}

/// The Org object's answer to a download: the Worker serves the bytes raw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyWasm {
    pub sha256: String,
    pub wasm_base64: String,
}

/// `GET /v1/policies/{name}/wasm`: `sha256` is the hash the caller expects (from the list it
/// read); a different current one answers 409 `policy_changed` instead of the bytes.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct WasmQuery {
    pub sha256: Option<String>,
}

/// The agent hook event a decision was taken on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum HookEvent {
    UserPromptSubmit,
    PreToolUse,
    PostToolUse,
    SessionStart,
    Stop,
}

impl HookEvent {
    pub const ALL: [HookEvent; 5] = [
        Self::UserPromptSubmit,
        Self::PreToolUse,
        Self::PostToolUse,
        Self::SessionStart,
        Self::Stop,
    ];

    /// The agents' own name for the event (Claude Code's and Codex's `hook_event_name`).
    pub fn hook_name(self) -> &'static str {
        match self {
            Self::UserPromptSubmit => "UserPromptSubmit",
            Self::PreToolUse => "PreToolUse",
            Self::PostToolUse => "PostToolUse",
            Self::SessionStart => "SessionStart",
            Self::Stop => "Stop",
        }
    }

    /// Whether denying the event protects anything, so a policy's failure mode may deny it: a
    /// prompt or a tool call can be stopped; a tool that already ran, a session that started,
    /// or an agent that wants to stop cannot (denying a stop only makes the agent go on, and a
    /// policy that keeps failing would keep it going forever).
    pub fn can_deny(self) -> bool {
        matches!(self, Self::UserPromptSubmit | Self::PreToolUse)
    }

    /// The name in the WIT package, the API and the decision log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserPromptSubmit => "user-prompt-submit",
            Self::PreToolUse => "pre-tool-use",
            Self::PostToolUse => "post-tool-use",
            Self::SessionStart => "session-start",
            Self::Stop => "stop",
        }
    }
}

/// What one policy decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
    /// Ask the person at the agent.
    Ask,
    /// Let it through changed.
    Rewrite,
    /// The policy itself failed; its failure mode applied (`reason` says why).
    Failed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Ask => "ask",
            Self::Rewrite => "rewrite",
            Self::Failed => "failed",
        }
    }
}

/// One decision as a machine reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DecisionReport {
    /// The machine's own id of the decision, unique per host: a repeated one is ignored.
    pub seq: u64,
    /// The session (a Tether session id or the agent's own), when there is one.
    #[serde(default)]
    pub session_id: Option<String>,
    pub agent: String,
    pub event: HookEvent,
    pub policy: String,
    pub decision: Verdict,
    /// Kept to its first 2000 characters.
    #[serde(default)]
    pub reason: Option<String>,
    pub duration_us: u64,
    /// When it was decided (Unix ms, the machine's clock; a time ahead of the edge's is taken
    /// as the edge's now).
    pub at: i64,
}

/// `POST /v1/hosts/{id}/policy-decisions`: 1 to 500 decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DecisionBatch {
    pub decisions: Vec<DecisionReport>,
}

/// The answer to a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Accepted {
    /// Decisions recorded now (repeats of recorded ones do not count).
    pub accepted: u64,
}

/// A recorded decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Decision {
    pub host_id: String,
    pub seq: u64,
    pub session_id: Option<String>,
    pub agent: String,
    pub event: HookEvent,
    pub policy: String,
    pub decision: Verdict,
    pub reason: Option<String>,
    pub duration_us: u64,
    /// When the machine decided.
    pub at: String,
    /// When the edge recorded it.
    pub received_at: String,
}

/// Filters and paging for listing decisions (newest first).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct DecisionQuery {
    pub host_id: Option<String>,
    pub session_id: Option<String>,
    pub policy: Option<String>,
    pub decision: Option<Verdict>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 200, default 50.
    pub limit: Option<u32>,
}

/// One page of decisions: follow `next_cursor` until it is `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DecisionPage {
    pub decisions: Vec<Decision>,
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_pattern() {
        for ok in ["a", "0", "secret-guard", "a-", &"x".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "A",
            "a_b",
            "a.b",
            "a b",
            "é",
            &"x".repeat(64),
            "../x",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn only_components_within_the_cap_pass() {
        let mut component = COMPONENT_HEADER.to_vec();
        assert_eq!(check_binary(&component), Ok(()));
        component.resize(MAX_POLICY_BYTES, 0);
        assert_eq!(check_binary(&component), Ok(()));
        component.push(0);
        assert_eq!(
            check_binary(&component),
            Err(BinaryError::TooLarge {
                size: MAX_POLICY_BYTES + 1
            })
        );
        assert_eq!(
            check_binary(&CORE_MODULE_HEADER),
            Err(BinaryError::CoreModule)
        );
        assert!(
            BinaryError::CoreModule
                .to_string()
                .contains("wasm-tools component new")
        );
        let bad: [&[u8]; 3] = [b"", b"\0asm", b"#!/bin/sh\nrm -rf /\n"];
        for bad in bad {
            assert_eq!(check_binary(bad), Err(BinaryError::NotComponent), "{bad:?}");
        }
    }

    #[test]
    fn wire_names_match_the_daemons() {
        let d: DecisionReport = serde_json::from_value(serde_json::json!({
            "seq": 7, "session_id": null, "agent": "claude", "event": "pre-tool-use",
            "policy": "command-guard", "decision": "rewrite", "reason": null,
            "duration_us": 12, "at": 1
        }))
        .unwrap();
        assert_eq!(
            (d.event.as_str(), d.decision.as_str()),
            ("pre-tool-use", "rewrite")
        );
        for e in [
            HookEvent::UserPromptSubmit,
            HookEvent::PreToolUse,
            HookEvent::PostToolUse,
            HookEvent::SessionStart,
            HookEvent::Stop,
        ] {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
        for v in [
            Verdict::Allow,
            Verdict::Deny,
            Verdict::Ask,
            Verdict::Rewrite,
            Verdict::Failed,
        ] {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
        assert!(
            serde_json::from_value::<HookEvent>(serde_json::json!("PreToolUse")).is_err(),
            "the daemon's names, not Claude Code's"
        );
        assert!(serde_json::from_value::<UpdatePolicy>(serde_json::json!({"wasm": 1})).is_err());
    }
}
