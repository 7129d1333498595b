//! The agents' hook protocols: what Claude Code and Codex send a hook command on stdin, and how
//! the command must answer (exit code, stdout, stderr) for each verdict. See
//! `../shared/protocols/agent-hooks.md`.
//!
//! [`parse`] turns the stdin JSON into a [`HookEvent`] (events we do not gate answer `None`);
//! [`answer`] turns a [`Verdict`] into the agent's own answer:
//!
//! | verdict | Claude Code | Codex |
//! |---|---|---|
//! | allow | exit 0 (context as `additionalContext`) | exit 0 (the same JSON) |
//! | deny | exit 2, the reason on stderr (blocks the tool, erases the prompt, makes a stop continue) | PreToolUse: `permissionDecision: deny`; other events `decision: block`; exit 2 with the reason on stderr too |
//! | ask | PreToolUse: `permissionDecision: ask`; elsewhere there is nobody to ask: a block that says approval is needed | the same |
//! | rewrite | PreToolUse: `updatedInput`, with `permissionDecision` `allow` only when the agent already bypasses permissions, else `ask` (a rewrite never grants what the user would be asked for); a prompt cannot be rewritten in place: it is blocked and the reason carries the rewritten prompt to resubmit | the same |

use super::Agent;
use serde::Deserialize;
use serde_json::{Value, json};

/// The events Tether's policies see (the WIT package's `event-kind`; `as_str` is its name
/// there and in the decision log, `hook_name` the agents').
pub use tether_durable::policy::HookEvent as EventKind;

/// What the event carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Prompt(String),
    ToolCall {
        tool_name: String,
        tool_input: Value,
    },
    ToolResult {
        tool_name: String,
        tool_input: Value,
        tool_response: Value,
    },
    SessionStart {
        source: String,
    },
    Stop,
}

/// One hook call, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct HookEvent {
    pub agent: Agent,
    /// The agent's own session id.
    pub session_id: String,
    pub cwd: String,
    pub permission_mode: Option<String>,
    /// The agent's id for the tool call a tool event is about (Claude Code and Codex send it).
    pub tool_use_id: Option<String>,
    pub payload: Payload,
}

impl HookEvent {
    /// Which event this is (its payload says).
    pub fn kind(&self) -> EventKind {
        match self.payload {
            Payload::Prompt(_) => EventKind::UserPromptSubmit,
            Payload::ToolCall { .. } => EventKind::PreToolUse,
            Payload::ToolResult { .. } => EventKind::PostToolUse,
            Payload::SessionStart { .. } => EventKind::SessionStart,
            Payload::Stop => EventKind::Stop,
        }
    }
}

/// A policy verdict, combined over every policy that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(String),
    Ask(String),
    /// The new prompt, or the new tool input as a JSON document.
    Rewrite(String),
}

/// What the hook command prints and exits with.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
pub struct Answer {
    pub exit_code: u8,
    pub stdout: String,
    pub stderr: String,
}

/// Why the stdin could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the hook input is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the hook input lacks `{0}`")]
    Missing(&'static str),
}

/// The most bytes of hook input read (a tool response can be large; the rest is not needed to
/// judge it).
pub const MAX_INPUT: usize = 8 * 1024 * 1024;

#[derive(Deserialize)]
struct Raw {
    hook_event_name: Option<String>,
    session_id: Option<String>,
    cwd: Option<String>,
    permission_mode: Option<String>,
    prompt: Option<String>,
    tool_name: Option<String>,
    tool_input: Option<Value>,
    tool_response: Option<Value>,
    tool_use_id: Option<String>,
    source: Option<String>,
}

/// Parses the hook's stdin. `Ok(None)` for events Tether does not gate (Notification,
/// PreCompact, subagent events, ...).
pub fn parse(agent: Agent, input: &[u8]) -> Result<Option<HookEvent>, ProtocolError> {
    let raw: Raw = serde_json::from_slice(input)?;
    let name = raw
        .hook_event_name
        .ok_or(ProtocolError::Missing("hook_event_name"))?;
    let Some(kind) = EventKind::ALL.into_iter().find(|k| k.hook_name() == name) else {
        return Ok(None);
    };
    let tool = |name: Option<String>| name.ok_or(ProtocolError::Missing("tool_name"));
    let payload = match kind {
        EventKind::UserPromptSubmit => {
            Payload::Prompt(raw.prompt.ok_or(ProtocolError::Missing("prompt"))?)
        }
        EventKind::PreToolUse => Payload::ToolCall {
            tool_name: tool(raw.tool_name)?,
            tool_input: raw.tool_input.unwrap_or(Value::Null),
        },
        EventKind::PostToolUse => Payload::ToolResult {
            tool_name: tool(raw.tool_name)?,
            tool_input: raw.tool_input.unwrap_or(Value::Null),
            tool_response: raw.tool_response.unwrap_or(Value::Null),
        },
        EventKind::SessionStart => Payload::SessionStart {
            source: raw.source.unwrap_or_default(),
        },
        EventKind::Stop => Payload::Stop,
    };
    Ok(Some(HookEvent {
        agent,
        session_id: raw.session_id.unwrap_or_default(),
        cwd: raw.cwd.unwrap_or_default(),
        permission_mode: raw.permission_mode,
        tool_use_id: raw.tool_use_id,
        payload,
    }))
}

/// The answer once a member allowed what a policy asked about: for a tool call an explicit
/// allow (so the agent does not ask its own user again), otherwise a plain allow; with the
/// policies' context either way.
pub fn approved(event: &HookEvent, reason: &str, context: Option<&str>) -> Answer {
    let kind = event.kind();
    if kind != EventKind::PreToolUse {
        return answer(event, &Verdict::Allow, context);
    }
    let mut fields = json!({"permissionDecision": "allow", "permissionDecisionReason": reason});
    if let (Some(c), Some(o)) = (context, fields.as_object_mut()) {
        o.insert("additionalContext".into(), Value::String(c.to_owned()));
    }
    Answer {
        exit_code: 0,
        stdout: json_out(&specific(kind, fields)),
        stderr: String::new(),
    }
}

fn json_out(value: &Value) -> String {
    format!("{value}\n")
}

fn specific(kind: EventKind, fields: Value) -> Value {
    let mut out = json!({ "hookEventName": kind.hook_name() });
    if let (Some(o), Value::Object(f)) = (out.as_object_mut(), fields) {
        o.extend(f);
    }
    json!({ "hookSpecificOutput": out })
}

/// The agent's answer to `verdict` (with `context` for the agent) on `event`.
pub fn answer(event: &HookEvent, verdict: &Verdict, context: Option<&str>) -> Answer {
    let kind = event.kind();
    let with_context = |mut fields: Value| {
        if let (Some(c), Some(o)) = (context, fields.as_object_mut()) {
            o.insert("additionalContext".into(), Value::String(c.to_owned()));
        }
        fields
    };
    let ok = |stdout: String| Answer {
        exit_code: 0,
        stdout,
        stderr: String::new(),
    };
    let block = |reason: &str| {
        let stdout = match (event.agent, kind) {
            (_, EventKind::PreToolUse) => json_out(&specific(
                kind,
                with_context(json!({
                    "permissionDecision": "deny",
                    "permissionDecisionReason": reason,
                })),
            )),
            (Agent::Codex, _) => json_out(&json!({ "decision": "block", "reason": reason })),
            // Claude Code reads the reason from stderr with exit 2.
            (Agent::ClaudeCode, _) => String::new(),
        };
        Answer {
            exit_code: 2,
            stdout,
            stderr: format!("{reason}\n"),
        }
    };
    match verdict {
        Verdict::Deny(reason) => block(reason),
        Verdict::Allow => match context {
            Some(_) => ok(json_out(&specific(kind, with_context(json!({}))))),
            None => ok(String::new()),
        },
        Verdict::Ask(reason) if kind == EventKind::PreToolUse => ok(json_out(&specific(
            kind,
            with_context(json!({
                "permissionDecision": "ask",
                "permissionDecisionReason": reason,
            })),
        ))),
        Verdict::Ask(reason) => block(&format!("needs approval: {reason}")),
        Verdict::Rewrite(new) if kind == EventKind::PreToolUse => {
            let Ok(input) = serde_json::from_str::<Value>(new) else {
                return block("a policy rewrote the tool input into something that is not JSON");
            };
            // A rewrite never grants a permission the user would otherwise be asked for.
            let bypassing = event.permission_mode.as_deref() == Some("bypassPermissions");
            ok(json_out(&specific(
                kind,
                with_context(json!({
                    "permissionDecision": if bypassing { "allow" } else { "ask" },
                    "permissionDecisionReason": "a Tether policy changed the input",
                    "updatedInput": input,
                })),
            )))
        }
        Verdict::Rewrite(new) if kind == EventKind::UserPromptSubmit => block(&format!(
            "a Tether policy changed this prompt; submit this instead:\n{new}"
        )),
        // Nothing to rewrite on the other events.
        Verdict::Rewrite(_) => ok(String::new()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn event(agent: Agent, body: Value) -> HookEvent {
        parse(agent, body.to_string().as_bytes()).unwrap().unwrap()
    }

    fn pre_tool(agent: Agent, mode: &str) -> HookEvent {
        event(
            agent,
            json!({"session_id": "s", "transcript_path": "/t", "cwd": "/wt", "permission_mode": mode,
                   "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "ls"},
                   "tool_use_id": "t1"}),
        )
    }

    #[test]
    fn parses_the_events_it_gates_and_skips_the_rest() {
        let e = event(
            Agent::ClaudeCode,
            json!({"session_id": "s1", "cwd": "/wt", "hook_event_name": "UserPromptSubmit", "prompt": "hi"}),
        );
        assert_eq!(
            (e.kind(), e.payload, e.cwd.as_str()),
            (
                EventKind::UserPromptSubmit,
                Payload::Prompt("hi".into()),
                "/wt"
            )
        );
        let e = pre_tool(Agent::Codex, "default");
        assert!(
            matches!(e.payload, Payload::ToolCall { ref tool_name, .. } if tool_name == "Bash")
        );
        let skipped = json!({"hook_event_name": "Notification", "message": "x"}).to_string();
        assert!(
            parse(Agent::ClaudeCode, skipped.as_bytes())
                .unwrap()
                .is_none()
        );
        assert!(parse(Agent::ClaudeCode, b"not json").is_err());
        let no_prompt = json!({"hook_event_name": "UserPromptSubmit"}).to_string();
        assert!(matches!(
            parse(Agent::ClaudeCode, no_prompt.as_bytes()),
            Err(ProtocolError::Missing("prompt"))
        ));
    }

    #[test]
    fn deny_blocks_with_exit_2_and_the_reason_on_stderr() {
        let prompt = event(
            Agent::ClaudeCode,
            json!({"hook_event_name": "UserPromptSubmit", "prompt": "my key is AKIA..."}),
        );
        let a = answer(&prompt, &Verdict::Deny("a cloud key".into()), None);
        assert_eq!(
            (a.exit_code, a.stdout.as_str(), a.stderr.as_str()),
            (2, "", "a cloud key\n")
        );
        let a = answer(
            &pre_tool(Agent::ClaudeCode, "default"),
            &Verdict::Deny("no rm -rf".into()),
            None,
        );
        let out: Value = serde_json::from_str(&a.stdout).unwrap();
        assert_eq!(a.exit_code, 2);
        assert_eq!(out["hookSpecificOutput"]["permissionDecision"], "deny");
        assert_eq!(
            out["hookSpecificOutput"]["permissionDecisionReason"],
            "no rm -rf"
        );
        let stop = event(Agent::Codex, json!({"hook_event_name": "Stop"}));
        let a = answer(&stop, &Verdict::Deny("tests fail".into()), None);
        let out: Value = serde_json::from_str(&a.stdout).unwrap();
        assert_eq!((out["decision"].as_str(), a.exit_code), (Some("block"), 2));
    }

    #[test]
    fn ask_and_rewrite_never_grant_more_than_the_user_would() {
        let e = pre_tool(Agent::ClaudeCode, "default");
        let a = answer(&e, &Verdict::Ask("force push".into()), Some("use a branch"));
        let out: Value = serde_json::from_str(&a.stdout).unwrap();
        assert_eq!(a.exit_code, 0);
        assert_eq!(out["hookSpecificOutput"]["permissionDecision"], "ask");
        assert_eq!(
            out["hookSpecificOutput"]["additionalContext"],
            "use a branch"
        );

        let a = answer(
            &e,
            &Verdict::Rewrite(r#"{"command":"ls -la"}"#.into()),
            None,
        );
        let out: Value = serde_json::from_str(&a.stdout).unwrap();
        assert_eq!(out["hookSpecificOutput"]["permissionDecision"], "ask");
        assert_eq!(
            out["hookSpecificOutput"]["updatedInput"]["command"],
            "ls -la"
        );
        let yolo = pre_tool(Agent::ClaudeCode, "bypassPermissions");
        let a = answer(&yolo, &Verdict::Rewrite(r#"{"command":"ls"}"#.into()), None);
        let out: Value = serde_json::from_str(&a.stdout).unwrap();
        assert_eq!(out["hookSpecificOutput"]["permissionDecision"], "allow");
        assert_eq!(
            answer(&e, &Verdict::Rewrite("not json".into()), None).exit_code,
            2
        );

        // Prompts cannot be rewritten in place, nor asked about: blocked with the reason.
        let p = event(
            Agent::ClaudeCode,
            json!({"hook_event_name": "UserPromptSubmit", "prompt": "x"}),
        );
        let a = answer(&p, &Verdict::Rewrite("[REDACTED] x".into()), None);
        assert!(a.exit_code == 2 && a.stderr.contains("[REDACTED] x"));
        assert_eq!(answer(&p, &Verdict::Ask("why".into()), None).exit_code, 2);
        // Allow with context says so; plain allow prints nothing.
        let a = answer(&p, &Verdict::Allow, Some("be careful"));
        let out: Value = serde_json::from_str(&a.stdout).unwrap();
        assert_eq!(out["hookSpecificOutput"]["additionalContext"], "be careful");
        assert_eq!(answer(&p, &Verdict::Allow, None).stdout, "");
    }
}
