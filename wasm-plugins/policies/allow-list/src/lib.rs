//! `allow-list`: a guardrail policy that lets through only the tools and shell commands a JSON
//! config names, and gives everything else a default verdict.
//!
//! Config: `{"tools": ["Read", "Grep", "mcp__github__*"], "commands": ["git status", "cargo test"],
//! "default": "deny" | "ask" | "allow"}` (default `deny`; both lists default to empty).
//!
//! - A non-shell tool is allowed when its name is in `tools` (a pattern ending in `*` matches by
//!   prefix, `*` alone matches every tool).
//! - Shell tools (Claude Code `Bash`, Codex `shell`/`exec_command`/`local_shell`) are judged by
//!   `commands`, whether or not they are listed in `tools`: the command line is split on `&&`,
//!   `||`, `;`, `&`, `|` and newlines, and every part must start with an allowed prefix, compared
//!   word by word (`cargo test` allows `cargo test --all`, not `cargo testify`). A part holding a
//!   command substitution (`$(...)`, backticks, `<(...)`) never matches.
//!
//! The logic is plain Rust ([`judge`]), tested natively; the component glue at the bottom is
//! compiled for wasm32 only.

use policy_support::{Config, is_shell_tool, shell_command, simple_commands, words};

/// Bindings for the `policy` world of `wit/guardrail.wit`.
// The generated lowering of `event` has many parameters; nothing to fix by hand.
#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "policy",
        additional_derives: [PartialEq, Eq],
    });
}

pub use bindings::tether::guardrail::types::{Decision, Payload};
pub use bindings::{Event, EventKind, Outcome};

/// The events this policy judges.
pub const EVENTS: [EventKind; 1] = [EventKind::PreToolUse];

/// The verdict for anything not on the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    Deny,
    Ask,
    Allow,
}

/// The policy's settings, read from its JSON config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub tools: Vec<String>,
    /// Allowed command prefixes, each already split into words.
    pub commands: Vec<Vec<String>>,
    pub default: Fallback,
}

impl Settings {
    pub fn from_json(json: &str) -> Result<Self, String> {
        let config = Config::parse(json)?;
        let default = match config.string("default")?.as_deref() {
            None | Some("deny") => Fallback::Deny,
            Some("ask") => Fallback::Ask,
            Some("allow") => Fallback::Allow,
            Some(other) => {
                return Err(format!("unknown default `{other}`: use deny, ask or allow"));
            }
        };
        let commands = config.strings("commands")?.unwrap_or_default();
        let commands = commands
            .iter()
            .map(|prefix| words(prefix))
            .filter(|prefix| !prefix.is_empty())
            .collect();
        Ok(Self {
            tools: config.strings("tools")?.unwrap_or_default(),
            commands,
            default,
        })
    }

    fn allows_tool(&self, tool_name: &str) -> bool {
        self.tools
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => tool_name.starts_with(prefix),
                None => tool_name == pattern,
            })
    }

    fn allows_command(&self, command: &str) -> bool {
        let substitutes = ["$(", "`", "<(", ">("]
            .iter()
            .any(|pattern| command.contains(pattern));
        let command = words(command);
        !substitutes
            && self
                .commands
                .iter()
                .any(|prefix| command.starts_with(prefix))
    }

    fn otherwise(&self, reason: String) -> Decision {
        match self.default {
            Fallback::Deny => Decision::Deny(reason),
            Fallback::Ask => Decision::Ask(reason),
            Fallback::Allow => Decision::Allow,
        }
    }
}

/// The policy: judges one event under `settings`.
pub fn judge(settings: &Settings, event: &Event) -> Outcome {
    let Payload::PreToolUse(call) = &event.payload else {
        return outcome(Decision::Allow);
    };
    if !is_shell_tool(&call.tool_name) {
        if settings.allows_tool(&call.tool_name) {
            return outcome(Decision::Allow);
        }
        return outcome(settings.otherwise(format!(
            "allow-list: tool `{}` is not on the allow list",
            call.tool_name
        )));
    }
    let Some(line) = shell_command(&call.tool_name, &call.tool_input) else {
        return outcome(settings.otherwise(format!(
            "allow-list: cannot read the command of this `{}` call",
            call.tool_name
        )));
    };
    let refused: Vec<&str> = simple_commands(&line)
        .into_iter()
        .filter(|part| !settings.allows_command(part))
        .collect();
    if refused.is_empty() {
        return outcome(Decision::Allow);
    }
    outcome(settings.otherwise(format!(
        "allow-list: command not on the allow list: `{}`",
        refused.join("`, `")
    )))
}

fn outcome(verdict: Decision) -> Outcome {
    Outcome {
        verdict,
        context: None,
    }
}

policy_support::policy_component!(AllowList, "allow-list");

#[cfg(test)]
mod tests {
    use super::bindings::tether::guardrail::types::{Session, ToolCall};
    use super::*;
    use serde_json::{Value, json};

    const CONFIG: &str = r#"{
        "tools": ["Read", "Grep", "mcp__github__*"],
        "commands": ["git status", "git diff", "cargo test", "ls", "grep"],
        "default": "deny"
    }"#;

    fn tool(name: &str, input: Value) -> Event {
        Event {
            session: Session {
                id: "s1".to_owned(),
                cwd: "/w/repo".to_owned(),
                agent: "codex".to_owned(),
                permission_mode: None,
            },
            payload: Payload::PreToolUse(ToolCall {
                tool_name: name.to_owned(),
                tool_input: input.to_string(),
            }),
        }
    }

    fn verdict(config: &str, event: &Event) -> Decision {
        judge(&Settings::from_json(config).unwrap(), event).verdict
    }

    fn bash(command: &str) -> Decision {
        verdict(CONFIG, &tool("Bash", json!({ "command": command })))
    }

    #[test]
    fn allows_listed_tools_and_denies_others() {
        assert_eq!(verdict(CONFIG, &tool("Read", json!({}))), Decision::Allow);
        assert_eq!(
            verdict(CONFIG, &tool("mcp__github__create_issue", json!({}))),
            Decision::Allow
        );
        let Decision::Deny(reason) = verdict(CONFIG, &tool("Write", json!({}))) else {
            panic!("Write must be denied")
        };
        assert!(reason.contains("`Write`"), "{reason}");
        assert!(matches!(
            verdict(CONFIG, &tool("ReadFile", json!({}))),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn unlisted_tools_get_the_configured_default() {
        let ask = r#"{"tools": ["Read"], "default": "ask"}"#;
        assert!(matches!(
            verdict(ask, &tool("Write", json!({}))),
            Decision::Ask(_)
        ));
        let allow = r#"{"tools": [], "default": "allow"}"#;
        assert_eq!(verdict(allow, &tool("Write", json!({}))), Decision::Allow);
        assert!(matches!(
            verdict("{}", &tool("Read", json!({}))),
            Decision::Deny(_)
        ));
        let every = r#"{"tools": ["*"]}"#;
        assert_eq!(
            verdict(every, &tool("Anything", json!({}))),
            Decision::Allow
        );
    }

    #[test]
    fn allows_commands_matching_a_prefix_word_by_word() {
        for command in [
            "git status",
            "git status --short",
            "cargo test -p tether",
            "ls -la && git diff HEAD",
            "git diff | grep fn; ls",
            "  cargo   test  ",
        ] {
            assert_eq!(bash(command), Decision::Allow, "{command}");
        }
    }

    #[test]
    fn every_part_of_a_command_line_must_be_allowed() {
        for command in [
            "git push",
            "cargo testify",
            "cargo",
            "git status && rm -rf build",
            "ls; curl https://x",
            "git diff | sh",
            "ls || make",
            "ls & make",
            "ls\nmake",
            "git status $(rm -rf ~)",
            "ls `whoami`",
        ] {
            assert!(matches!(bash(command), Decision::Deny(_)), "{command}");
        }
        let Decision::Deny(reason) = bash("git status && rm -rf build") else {
            panic!()
        };
        assert!(
            reason.contains("`rm -rf build`") && !reason.contains("git status"),
            "{reason}"
        );
    }

    #[test]
    fn quoted_separators_do_not_split_commands() {
        assert_eq!(bash("grep 'a && b; c | d' src"), Decision::Allow);
    }

    #[test]
    fn shell_tools_are_judged_by_commands_for_codex_too() {
        let codex = |argv: Value| verdict(CONFIG, &tool("shell", json!({ "command": argv })));
        assert_eq!(
            codex(json!(["bash", "-lc", "git status && cargo test"])),
            Decision::Allow
        );
        assert_eq!(codex(json!(["git", "status"])), Decision::Allow);
        assert!(matches!(
            codex(json!(["bash", "-lc", "make install"])),
            Decision::Deny(_)
        ));
        let unreadable = verdict(CONFIG, &tool("Bash", json!({ "script": "ls" })));
        assert!(matches!(unreadable, Decision::Deny(_)));
    }

    #[test]
    fn other_events_are_allowed() {
        let mut event = tool("Write", json!({}));
        event.payload = Payload::UserPromptSubmit("anything".to_owned());
        assert_eq!(verdict(CONFIG, &event), Decision::Allow);
        event.payload = Payload::Stop;
        assert_eq!(verdict(CONFIG, &event), Decision::Allow);
    }

    #[test]
    fn reads_its_config_and_rejects_bad_ones() {
        let settings = Settings::from_json(CONFIG).unwrap();
        assert_eq!(settings.default, Fallback::Deny);
        assert_eq!(settings.commands.first().unwrap(), &["git", "status"]);
        assert!(Settings::from_json(r#"{"default": "maybe"}"#).is_err());
        assert!(Settings::from_json(r#"{"tools": "Read"}"#).is_err());
    }
}
