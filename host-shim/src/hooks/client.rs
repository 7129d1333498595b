//! `tether hook`, the command agents call: the answer to one hook event.
//!
//! - Outside a session Tether launched (no `TETHER_SESSION_ID`), it allows at once and asks
//!   nobody: the user's own agents are not Tether's business.
//! - Events Tether does not judge are allowed at once, too.
//! - Otherwise the daemon's policies decide, through the control socket.
//! - When the daemon cannot be asked (not running, not answering within [`WAIT`]), the failure
//!   mode decides, without loading any policy: if any configured policy (the org's cached ones
//!   or the machine's) fails closed, prompts and tool calls are denied with the reason;
//!   otherwise everything is allowed.

use super::Agent;
use super::protocol::{self, Answer, Verdict};
use crate::control::{self, Request};
use crate::guardrails::Guardrails;
use crate::paths::Paths;
use crate::policy::FailureMode;
use std::time::Duration;

/// How long the daemon may stay silent: it answers at once, or while a member is asked (a chat
/// session's approval) writes a space every 5 s; silence this long means it hangs.
pub const WAIT: Duration = Duration::from_secs(20);

/// The answer to the hook event `input` from `agent`, for the session `session` (the value of
/// `TETHER_SESSION_ID`, if any).
pub fn answer(paths: &Paths, agent: Agent, session: Option<&str>, input: &[u8]) -> Answer {
    let Some(session) = session.filter(|s| !s.is_empty()) else {
        return Answer::default();
    };
    if input.len() > protocol::MAX_INPUT {
        // Too large to judge, and to tell what it is: blocked in both agents' protocols when
        // a policy fails closed, so size is no way around the policies.
        let why = format!("the event is over {} bytes", protocol::MAX_INPUT);
        return match failure_verdict(paths, true, &why) {
            Verdict::Deny(reason) => Answer {
                exit_code: 2,
                stdout: String::new(),
                stderr: format!("{reason}\n"),
            },
            _ => Answer::default(),
        };
    }
    let event = match protocol::parse(agent, input) {
        Ok(Some(event)) => event,
        Ok(None) => return Answer::default(),
        Err(e) => {
            return Answer {
                exit_code: 1,
                stdout: String::new(),
                stderr: format!("tether hook: {e}\n"),
            };
        }
    };
    let request = Request::Hook {
        agent: agent.id().to_owned(),
        session: session.to_owned(),
        input: String::from_utf8_lossy(input).into_owned(),
    };
    match control::call::<Answer>(&paths.control_socket(), &request, WAIT) {
        Ok(answer) => answer,
        Err(e) => {
            let why = format!(
                "{e}; start it with `tether up` (or `tether service install`) and try again"
            );
            let verdict = failure_verdict(paths, event.kind().can_deny(), &why);
            protocol::answer(&event, &verdict, None)
        }
    }
}

/// What the failure mode says when the policies cannot be asked, because of `why`.
fn failure_verdict(paths: &Paths, can_deny: bool, why: &str) -> Verdict {
    if !can_deny {
        return Verdict::Allow;
    }
    let closed = match Guardrails::sources(paths) {
        Ok(sources) => sources
            .into_iter()
            .find(|s| s.failure == FailureMode::Deny)
            .map(|s| format!("policy {} fails closed", s.origin)),
        Err(e) => Some(format!("the policy configuration is unreadable ({e})")),
    };
    match closed {
        Some(what) => Verdict::Deny(format!(
            "Tether's guardrails could not check this, and {what}: {why}."
        )),
        None => Verdict::Allow,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::Config;
    use crate::policy::PolicyEntry;
    use serde_json::json;

    fn paths(dir: &std::path::Path) -> Paths {
        Paths::new(dir.join("config"), dir.join("state"))
    }

    fn event(name: &str) -> Vec<u8> {
        json!({"session_id": "s", "cwd": "/w", "hook_event_name": name, "prompt": "hi",
               "tool_name": "Bash", "tool_input": {"command": "ls"}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn without_a_daemon_the_failure_mode_answers() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        // Not a Tether session: allowed, nobody asked.
        let a = answer(&paths, Agent::ClaudeCode, None, &event("PreToolUse"));
        assert_eq!(a, Answer::default());
        // No policy configured: nothing to fail closed.
        let a = answer(
            &paths,
            Agent::ClaudeCode,
            Some("ses_1"),
            &event("PreToolUse"),
        );
        assert_eq!(a.exit_code, 0);

        let config = Config {
            policies: vec![PolicyEntry {
                path: dir.path().join("guard.wasm"),
                config: None,
                failure: FailureMode::Deny,
                sha256: None,
            }],
            ..Config::default()
        };
        config.save(&paths.config_file()).unwrap();
        let a = answer(
            &paths,
            Agent::ClaudeCode,
            Some("ses_1"),
            &event("PreToolUse"),
        );
        assert_eq!(a.exit_code, 2, "{a:?}");
        assert!(
            a.stdout.contains("daemon is not running") && a.stdout.contains("guard.wasm"),
            "{a:?}"
        );
        let a = answer(
            &paths,
            Agent::ClaudeCode,
            Some("ses_1"),
            &event("UserPromptSubmit"),
        );
        assert!(
            a.exit_code == 2 && a.stderr.contains("fails closed"),
            "{a:?}"
        );
        // A stop is never held up by a missing daemon.
        let a = answer(&paths, Agent::ClaudeCode, Some("ses_1"), &event("Stop"));
        assert_eq!(a.exit_code, 0);
        // Garbage is reported without blocking.
        let a = answer(&paths, Agent::ClaudeCode, Some("ses_1"), b"{");
        assert_eq!(a.exit_code, 1);

        // Failing open: allowed.
        let mut open = config;
        open.policies[0].failure = FailureMode::Allow;
        open.save(&paths.config_file()).unwrap();
        let a = answer(&paths, Agent::Codex, Some("ses_1"), &event("PreToolUse"));
        assert_eq!(a.exit_code, 0);
    }
}
