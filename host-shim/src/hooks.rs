//! Agent hooks: how Claude Code and Codex call `tether hook` and what it answers
//! ([`protocol`]), the command itself ([`client`]), and the managed entries in their config
//! files that make them call it ([`install`]).

pub mod client;
pub mod install;
pub mod protocol;

/// A coding agent whose hooks Tether speaks and manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Agent {
    /// Claude Code: `~/.claude/settings.json`.
    ClaudeCode,
    /// OpenAI's Codex CLI: `~/.codex/hooks.json`.
    Codex,
}

impl Agent {
    /// Every agent, in the order the hook commands report them.
    pub const ALL: [Agent; 2] = [Agent::ClaudeCode, Agent::Codex];

    /// The agent's name on the command line: the value of `tether hook --agent`.
    pub fn id(self) -> &'static str {
        match self {
            Agent::ClaudeCode => "claude-code",
            Agent::Codex => "codex",
        }
    }

    /// The agent named `name` (`claude` is accepted for Claude Code).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "claude" => Some(Self::ClaudeCode),
            _ => Self::ALL.into_iter().find(|a| a.id() == name),
        }
    }
}

impl std::fmt::Display for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Agent::ClaudeCode => "Claude Code",
            Agent::Codex => "Codex",
        })
    }
}
