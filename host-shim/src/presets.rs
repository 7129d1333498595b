//! Agent presets: how to start each coding agent CLI and hand it the session's prompt.
//!
//! A [`Preset`] names a program, its fixed arguments, and how the prompt reaches it
//! ([`PromptTransport`]). The built-in ones ([`builtins`]) cover the agent CLIs `tether doctor`
//! probes; permission-skipping ("yolo") variants are separate presets with their own names
//! (`claude-yolo`, ...), never a flag, so choosing one is always explicit and shows in the
//! session's record.
//!
//! Custom presets live in the daemon's config file and replace a built-in of the same name:
//!
//! ```toml
//! [presets.claude-opus]
//! command = "claude"
//! args = ["--model", "opus"]
//! prompt = "argv"            # "argv" (default), "stdin" or "none"
//! prompt_args = []
//! mcp_args = ["--mcp-config", "{mcp_config}"]
//! env = { CLAUDE_CODE_USE_BEDROCK = "1" }
//! description = "Claude Code on Opus"
//! ```
//!
//! Every agent gets a local MCP server for its session ([`crate::mcp`]); `mcp_args` say how
//! the agent is told about it, with the placeholders of
//! [`SessionServer::expand`](crate::mcp::config::SessionServer::expand) (`{mcp_config}`: the
//! path of the session's `--mcp-config` file; `{mcp_command_toml}`, `{mcp_args_toml}`,
//! `{mcp_env_toml}`: the server as TOML values). The placeholders work in `args` too. Claude
//! Code takes the file (`--mcp-config`), Codex TOML overrides (`-c mcp_servers.tether.…`); the
//! other built-in agents read MCP servers from their own settings files only, with no per-run
//! flag that takes this one, so their presets pass none. Every agent also finds the file in
//! `TETHER_MCP_CONFIG`.
//!
//! [`Preset::launch`] turns a preset and a prompt into a [`Launch`]: a program and an argv
//! vector, never a shell string, so nothing in a prompt is ever interpreted by a shell.

use crate::mcp::config::SessionServer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The longest preset name.
pub const MAX_NAME_LEN: usize = 64;
/// The most arguments in `args`, and separately in `prompt_args` and `mcp_args`.
pub const MAX_ARGS: usize = 64;
/// The longest single argument, in bytes.
pub const MAX_ARG_LEN: usize = 4096;
/// The most environment variables a preset sets.
pub const MAX_ENV: usize = 64;

/// How a preset's prompt reaches the agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptTransport {
    /// As one argv element after `prompt_args`.
    #[default]
    Argv,
    /// Typed into the agent's terminal once it starts, then a carriage return.
    Stdin,
    /// The agent takes no prompt; one given is ignored.
    None,
}

/// The structured protocol a preset's agent speaks in a chat session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChatProtocol {
    /// Claude Code's stream-json in and out: one process for the whole conversation, user
    /// messages and permission answers on stdin, events on stdout.
    ClaudeStreamJson,
    /// Codex's `exec --json`: one process per turn, the next turn resumes the thread.
    CodexJson,
}

impl ChatProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClaudeStreamJson => "claude-stream-json",
            Self::CodexJson => "codex-json",
        }
    }
}

/// How a preset runs in a chat session: the protocol, and the arguments that switch the agent
/// into it (they come before the preset's own `args`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMode {
    pub protocol: ChatProtocol,
    #[serde(default)]
    pub args: Vec<String>,
}

/// One way to start an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preset {
    /// The name sessions ask for, e.g. `claude-yolo`.
    pub name: String,
    /// The program: a name looked up on `PATH`, or a path containing `/`.
    pub command: String,
    /// Arguments always passed, before any prompt.
    pub args: Vec<String>,
    /// How the prompt is passed.
    pub prompt: PromptTransport,
    /// With [`PromptTransport::Argv`], the arguments between `args` and the prompt (e.g. `--`
    /// or `--prompt`); only used when there is a prompt.
    pub prompt_args: Vec<String>,
    /// How the agent is given its session's MCP server: arguments after `args`, before any
    /// prompt, with placeholders (see the module documentation).
    pub mcp_args: Vec<String>,
    /// Environment variables set for the agent, on top of the daemon's.
    pub env: BTreeMap<String, String>,
    /// One line for listings.
    pub description: String,
    /// How it runs in a chat session; None: the agent has no structured mode Tether speaks.
    pub chat: Option<ChatMode>,
}

/// A preset as written in the config file: everything but `command` is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetConfig {
    /// The program (required).
    pub command: Option<String>,
    /// Fixed arguments; default none.
    #[serde(default)]
    pub args: Vec<String>,
    /// How the prompt is passed; default `argv`.
    #[serde(default)]
    pub prompt: PromptTransport,
    /// Arguments before the prompt; default none.
    #[serde(default)]
    pub prompt_args: Vec<String>,
    /// How the agent takes its MCP server (placeholders such as `{mcp_config}`); default none.
    #[serde(default)]
    pub mcp_args: Vec<String>,
    /// Extra environment variables; default none.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Default: "custom preset running <command>".
    pub description: Option<String>,
    /// `{ protocol = "claude-stream-json" | "codex-json", args = [...] }`; default none (no
    /// chat sessions).
    #[serde(default)]
    pub chat: Option<ChatMode>,
}

/// What starting a preset takes: the caller spawns `program` with exactly `args` (no shell),
/// adds `env`, and if `stdin` is set types it into the terminal followed by `\r`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The program to run (resolve it with [`find_program`]).
    pub program: String,
    /// The argv after the program name.
    pub args: Vec<String>,
    /// The prompt to type into the agent's terminal once it runs ([`PromptTransport::Stdin`]).
    pub stdin: Option<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
}

/// Why the config's presets were refused. Each names the preset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PresetError {
    /// `presets` is there but is not a table of tables.
    #[error("`presets` in the config must be a table of [presets.NAME] tables")]
    NotATable,

    /// A `[presets.NAME]` entry is not a table, or has a key of the wrong type or an unknown one.
    #[error("preset {name:?} in the config is not valid: {source}")]
    Parse {
        name: String,
        source: toml::de::Error,
    },

    /// A preset name outside `[a-z0-9._-]{1,64}`.
    #[error(
        "preset name {name:?} is not valid: use 1 to {MAX_NAME_LEN} characters of a-z, 0-9, '-', '_' and '.'"
    )]
    BadName { name: String },

    /// `command` is missing or blank.
    #[error("preset {preset:?} has no command: set `command = \"...\"`")]
    NoCommand { preset: String },

    /// More than [`MAX_ARGS`] in `args` or `prompt_args`.
    #[error("preset {preset:?} has {count} {field}; at most {MAX_ARGS} are allowed")]
    TooManyArgs {
        preset: String,
        field: &'static str,
        count: usize,
    },

    /// An argument longer than [`MAX_ARG_LEN`] bytes.
    #[error(
        "preset {preset:?}: {field} entry {index} is {len} bytes long; at most {MAX_ARG_LEN} are allowed"
    )]
    ArgTooLong {
        preset: String,
        field: &'static str,
        index: usize,
        len: usize,
    },

    /// A NUL byte cannot be passed to a program in its argv or environment.
    #[error("preset {preset:?}: {field} contains a NUL character")]
    Nul { preset: String, field: &'static str },

    /// More than [`MAX_ENV`] environment variables.
    #[error("preset {preset:?} sets {count} environment variables; at most {MAX_ENV} are allowed")]
    TooManyEnv { preset: String, count: usize },

    /// An environment variable name outside `[A-Za-z_][A-Za-z0-9_]*`.
    #[error(
        "preset {preset:?}: {var:?} is not a valid environment variable name (letters, digits and '_', not starting with a digit)"
    )]
    BadEnvName { preset: String, var: String },
}

/// Builds a built-in preset.
fn builtin(
    name: &str,
    args: &[&str],
    prompt: PromptTransport,
    prompt_args: &[&str],
    description: &str,
) -> Preset {
    let command = match name.strip_suffix("-yolo") {
        Some(base) => base,
        None => name,
    };
    Preset {
        name: name.to_owned(),
        command: command.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        prompt,
        prompt_args: prompt_args.iter().map(|a| (*a).to_owned()).collect(),
        mcp_args: builtin_mcp_args(command),
        env: BTreeMap::new(),
        description: description.to_owned(),
        chat: builtin_chat(name),
    }
}

/// The structured modes of the built-in agents (by preset name): Claude Code's stream-json
/// (with permission requests on the same pipes: `--permission-prompt-tool stdio`) and Codex's
/// `exec --json`. Codex's exec mode asks nobody before acting, so `codex` runs it in its
/// `workspace-write` sandbox (edits in the worktree, no network) and `codex-yolo` without.
/// Gemini CLI, opencode, Cursor Agent, Amp and Copilot CLI: none that Tether speaks, so they
/// run terminal sessions only (a custom preset can give a compatible agent a `chat` mode).
fn builtin_chat(name: &str) -> Option<ChatMode> {
    let (protocol, args): (ChatProtocol, &[&str]) = match name {
        "claude" | "claude-yolo" => (
            ChatProtocol::ClaudeStreamJson,
            &[
                "-p",
                "--output-format",
                "stream-json",
                "--input-format",
                "stream-json",
                "--verbose",
                "--include-partial-messages",
                "--permission-prompt-tool",
                "stdio",
            ],
        ),
        "codex" => (
            ChatProtocol::CodexJson,
            &[
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--sandbox",
                "workspace-write",
            ],
        ),
        "codex-yolo" => (
            ChatProtocol::CodexJson,
            &["exec", "--json", "--skip-git-repo-check"],
        ),
        _ => return None,
    };
    Some(ChatMode {
        protocol,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
    })
}

/// How each agent CLI takes an MCP server for one run: Claude Code reads `--mcp-config FILE`
/// (our file is in its format; the option is variadic, so `--` ends it before the prompt);
/// Codex has no such flag but takes `-c key=value` overrides of its config.toml, TOML-parsed,
/// and passes the environment it is given to the server (only an allow-list of its own
/// otherwise). Gemini CLI, opencode, Cursor Agent, Amp and Copilot CLI read MCP servers from
/// their settings files, with no per-run flag for this file: none.
fn builtin_mcp_args(command: &str) -> Vec<String> {
    let args: &[&str] = match command {
        "claude" => &["--mcp-config", "{mcp_config}", "--"],
        "codex" => &[
            "-c",
            "mcp_servers.tether.command={mcp_command_toml}",
            "-c",
            "mcp_servers.tether.args={mcp_args_toml}",
            "-c",
            "mcp_servers.tether.env={mcp_env_toml}",
        ],
        _ => &[],
    };
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// The presets every daemon knows, in listing order. Each `*-yolo` preset skips the agent's
/// permission prompts; they are separate names so that choosing one is always explicit.
pub fn builtins() -> Vec<Preset> {
    use PromptTransport::{Argv, Stdin};
    vec![
        builtin("claude", &[], Argv, &[], "Claude Code (asks before acting)"),
        builtin(
            "claude-yolo",
            &["--dangerously-skip-permissions"],
            Argv,
            &[],
            "Claude Code, skipping every permission prompt",
        ),
        builtin(
            "codex",
            &[],
            Argv,
            &["--"],
            "OpenAI Codex CLI (asks before acting)",
        ),
        builtin(
            "codex-yolo",
            &["--dangerously-bypass-approvals-and-sandbox"],
            Argv,
            &["--"],
            "OpenAI Codex CLI, without approvals or sandbox",
        ),
        builtin(
            "gemini",
            &[],
            Argv,
            &["--prompt-interactive"],
            "Gemini CLI (asks before acting)",
        ),
        builtin(
            "gemini-yolo",
            &["--yolo"],
            Argv,
            &["--prompt-interactive"],
            "Gemini CLI, approving every action",
        ),
        builtin("opencode", &[], Argv, &["--prompt"], "opencode"),
        builtin(
            "cursor-agent",
            &[],
            Argv,
            &[],
            "Cursor Agent CLI (asks before acting)",
        ),
        builtin(
            "cursor-agent-yolo",
            &["--force"],
            Argv,
            &[],
            "Cursor Agent CLI, allowing every command",
        ),
        builtin(
            "amp",
            &[],
            Stdin,
            &[],
            "Amp (prompt typed in; asks before acting)",
        ),
        builtin(
            "amp-yolo",
            &["--dangerously-allow-all"],
            Stdin,
            &[],
            "Amp, allowing every tool (prompt typed in)",
        ),
        builtin(
            "copilot",
            &[],
            Argv,
            &["-i"],
            "GitHub Copilot CLI (asks before acting)",
        ),
        builtin(
            "copilot-yolo",
            &["--allow-all-tools"],
            Argv,
            &["-i"],
            "GitHub Copilot CLI, allowing every tool",
        ),
    ]
}

/// Reads the custom presets from the config file's TOML (its `[presets.NAME]` tables), sorted
/// by name. No `presets` key means none. A custom preset named like a built-in replaces it
/// (see [`resolve`] and [`all`]).
pub fn load_custom(table: &toml::Table) -> Result<Vec<Preset>, PresetError> {
    let Some(presets) = table.get("presets") else {
        return Ok(Vec::new());
    };
    let presets = presets.as_table().ok_or(PresetError::NotATable)?;
    let mut out = Vec::with_capacity(presets.len());
    for (name, value) in presets {
        validate_name(name)?;
        let config: PresetConfig =
            value
                .clone()
                .try_into()
                .map_err(|source| PresetError::Parse {
                    name: name.clone(),
                    source,
                })?;
        out.push(from_config(name, config)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Checks a config entry and makes it a preset named `name`.
fn from_config(name: &str, config: PresetConfig) -> Result<Preset, PresetError> {
    let preset = || name.to_owned();
    let command = config
        .command
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| PresetError::NoCommand { preset: preset() })?;
    check_arg(name, "command", 0, &command)?;
    for (field, list) in [
        ("args", &config.args),
        ("prompt_args", &config.prompt_args),
        ("mcp_args", &config.mcp_args),
        (
            "chat.args",
            config.chat.as_ref().map_or(&Vec::new(), |c| &c.args),
        ),
    ] {
        if list.len() > MAX_ARGS {
            return Err(PresetError::TooManyArgs {
                preset: preset(),
                field,
                count: list.len(),
            });
        }
        for (index, arg) in list.iter().enumerate() {
            check_arg(name, field, index, arg)?;
        }
    }
    if config.env.len() > MAX_ENV {
        return Err(PresetError::TooManyEnv {
            preset: preset(),
            count: config.env.len(),
        });
    }
    for (var, value) in &config.env {
        if !valid_env_name(var) {
            return Err(PresetError::BadEnvName {
                preset: preset(),
                var: var.clone(),
            });
        }
        if value.contains('\0') {
            return Err(PresetError::Nul {
                preset: preset(),
                field: "env",
            });
        }
    }
    let description = config
        .description
        .unwrap_or_else(|| format!("custom preset running {command}"));
    Ok(Preset {
        name: name.to_owned(),
        command,
        args: config.args,
        prompt: config.prompt,
        prompt_args: config.prompt_args,
        mcp_args: config.mcp_args,
        env: config.env,
        description,
        chat: config.chat,
    })
}

fn validate_name(name: &str) -> Result<(), PresetError> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(PresetError::BadName {
            name: name.to_owned(),
        })
    }
}

fn check_arg(
    preset: &str,
    field: &'static str,
    index: usize,
    arg: &str,
) -> Result<(), PresetError> {
    if arg.len() > MAX_ARG_LEN {
        return Err(PresetError::ArgTooLong {
            preset: preset.to_owned(),
            field,
            index,
            len: arg.len(),
        });
    }
    if arg.contains('\0') {
        return Err(PresetError::Nul {
            preset: preset.to_owned(),
            field,
        });
    }
    Ok(())
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The preset called `name`: a custom one first, then a built-in.
pub fn resolve(name: &str, custom: &[Preset]) -> Option<Preset> {
    custom
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .or_else(|| builtins().into_iter().find(|p| p.name == name))
}

/// Every preset: the built-ins in their order (a custom one of the same name in its place),
/// then the other custom ones in the order given.
pub fn all(custom: &[Preset]) -> Vec<Preset> {
    let mut out: Vec<Preset> = builtins()
        .into_iter()
        .map(|b| match custom.iter().find(|c| c.name == b.name) {
            Some(c) => c.clone(),
            None => b,
        })
        .collect();
    let extra: Vec<Preset> = custom
        .iter()
        .filter(|c| !out.iter().any(|p| p.name == c.name))
        .cloned()
        .collect();
    out.extend(extra);
    out
}

impl Preset {
    /// What to run for a session with `prompt` and the local MCP server `mcp`: `args`, then
    /// `mcp_args`, their placeholders filled from `mcp`, then the prompt:
    ///
    /// - [`PromptTransport::Argv`]: `prompt_args`, then the prompt as ONE argv
    ///   element, verbatim (spaces, quotes, newlines, `$(...)` included: there is no shell). A
    ///   prompt starting with `-` is still one element, but the agent's option parser may take
    ///   it for an option; that is what `prompt_args` ending in `--` (codex) or an option that
    ///   takes the prompt as its value (`--prompt`, `-i`) are for. Presets whose prompt is a bare
    ///   positional (`claude`, `cursor-agent`) rely on the agent's parser for such prompts.
    /// - [`PromptTransport::Stdin`]: the prompt goes in [`Launch::stdin`], for the caller to
    ///   type into the terminal followed by a carriage return.
    /// - [`PromptTransport::None`]: the prompt is ignored.
    ///
    /// No prompt (or an empty or all-whitespace one) means no `prompt_args` either.
    pub fn launch(&self, prompt: Option<&str>, mcp: &SessionServer) -> Launch {
        let prompt = prompt.filter(|p| !p.trim().is_empty());
        let mut args: Vec<String> = self
            .args
            .iter()
            .chain(&self.mcp_args)
            .map(|a| mcp.expand(a))
            .collect();
        let mut stdin = None;
        match (self.prompt, prompt) {
            (PromptTransport::Argv, Some(p)) => {
                args.extend(self.prompt_args.iter().cloned());
                args.push(p.to_owned());
            }
            (PromptTransport::Stdin, Some(p)) => stdin = Some(p.to_owned()),
            (PromptTransport::None, _) | (_, None) => {}
        }
        Launch {
            program: self.command.clone(),
            args,
            stdin,
            env: self.env.clone(),
        }
    }
}

impl Preset {
    /// One chat turn's start (None: no chat mode): the chat arguments, the preset's `args`,
    /// the MCP arguments; then for Codex `resume <thread>` when it goes on and `-- <prompt>`.
    /// Claude Code takes its messages on stdin, so `prompt` is ignored for it.
    pub fn chat_launch(
        &self,
        prompt: Option<&str>,
        resume: Option<&str>,
        mcp: &SessionServer,
    ) -> Option<(ChatProtocol, Launch)> {
        let chat = self.chat.as_ref()?;
        let mut args: Vec<String> = chat
            .args
            .iter()
            .chain(&self.args)
            .chain(&self.mcp_args)
            .map(|a| mcp.expand(a))
            .collect();
        if chat.protocol == ChatProtocol::CodexJson {
            if let Some(thread) = resume {
                args.extend(crate::chat::codex::resume_args(thread));
            }
            if let Some(p) = prompt {
                args.extend(crate::chat::codex::prompt_args(p));
            }
        }
        Some((
            chat.protocol,
            Launch {
                program: self.command.clone(),
                args,
                stdin: None,
                env: self.env.clone(),
            },
        ))
    }
}

/// Where `program` is: a name containing `/` is taken as a path (relative to the current
/// directory when not absolute) and checked directly; any other name is looked up in
/// `path_env` (a `PATH` value; `None` finds nothing). Only executable regular files count.
/// Empty and relative `PATH` entries are skipped, so a checkout's own files are never picked up
/// by accident.
pub fn find_program(program: &str, path_env: Option<&OsStr>) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let path = Path::new(program);
        return is_executable(path).then(|| path.to_owned());
    }
    std::env::split_paths(path_env?)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(p: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(p) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]
    use super::*;

    fn get(name: &str) -> Preset {
        resolve(name, &[]).unwrap_or_else(|| panic!("no builtin {name}"))
    }

    fn custom(toml_text: &str) -> Result<Vec<Preset>, PresetError> {
        load_custom(&toml::from_str::<toml::Table>(toml_text).unwrap())
    }

    /// A session's MCP server, as the daemon makes one.
    fn mcp() -> SessionServer {
        SessionServer::new(Path::new("/opt/bin/tether"), "ses_1", Path::new("/st"))
    }

    /// `p`'s MCP arguments, filled in for [`mcp`].
    fn mcp_args(p: &Preset) -> Vec<String> {
        let m = mcp();
        p.mcp_args.iter().map(|a| m.expand(a)).collect()
    }

    #[test]
    fn claude_and_codex_are_given_the_sessions_mcp_server() {
        // Claude Code: the file, the variadic option ended before the prompt.
        for name in ["claude", "claude-yolo"] {
            let p = get(name);
            let l = p.launch(Some("-fix it"), &mcp());
            let mut want = p.args.clone();
            want.extend(["--mcp-config", "/st/mcp/ses_1.json", "--", "-fix it"].map(String::from));
            assert_eq!(l.args, want, "{name}");
        }
        // Codex: TOML overrides of its config, before `--` and the prompt.
        let l = get("codex").launch(Some("go"), &mcp());
        assert_eq!(
            l.args,
            [
                "-c",
                "mcp_servers.tether.command=\"/opt/bin/tether\"",
                "-c",
                "mcp_servers.tether.args=[\"mcp\"]",
                "-c",
                &format!("mcp_servers.tether.env={}", mcp().expand("{mcp_env_toml}")),
                "--",
                "go"
            ]
        );
        let env = mcp().expand("{mcp_env_toml}");
        assert!(
            env.contains("TETHER_SESSION_ID = \"ses_1\"")
                && env.contains("TETHER_STATE_DIR = \"/st\""),
            "{env}"
        );
        // The others have no per-run flag for it.
        for name in ["gemini", "opencode", "cursor-agent", "amp", "copilot-yolo"] {
            assert!(get(name).mcp_args.is_empty(), "{name}");
        }
        // A custom preset says how, with the placeholders (in `args` too), and is checked
        // like the other argument lists.
        let p = custom(
            r#"
            [presets.wrapped]
            command = "agent"
            args = ["--config-dir", "x", "--servers={mcp_config}"]
            mcp_args = ["--extra-mcp", "@{mcp_config}"]
            prompt_args = ["--prompt"]
            "#,
        )
        .unwrap()
        .remove(0);
        let l = p.launch(Some("hi"), &mcp());
        assert_eq!(
            l.args,
            [
                "--config-dir",
                "x",
                "--servers=/st/mcp/ses_1.json",
                "--extra-mcp",
                "@/st/mcp/ses_1.json",
                "--prompt",
                "hi"
            ]
        );
        assert!(custom("[presets.x]\ncommand = 'a'\nmcp_args = [\"a\\u0000\"]").is_err());
        let e = custom("[presets.x]\ncommand = 'a'\nmcp_args = 'one'").unwrap_err();
        assert!(e.to_string().contains("preset \"x\""), "{e}");
    }

    #[test]
    fn builtins_match_the_spec() {
        let all = builtins();
        let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "claude",
                "claude-yolo",
                "codex",
                "codex-yolo",
                "gemini",
                "gemini-yolo",
                "opencode",
                "cursor-agent",
                "cursor-agent-yolo",
                "amp",
                "amp-yolo",
                "copilot",
                "copilot-yolo"
            ]
        );
        for p in &all {
            assert!(!p.description.is_empty(), "{}", p.name);
            assert!(validate_name(&p.name).is_ok());
            // Every built-in runs an agent `tether doctor` knows about.
            assert!(
                crate::doctor::AGENT_CLIS.contains(&p.command.as_str()),
                "{}",
                p.command
            );
        }
        let yolo = |n: &str| get(n).args;
        assert!(get("claude").args.is_empty());
        assert_eq!(yolo("claude-yolo"), ["--dangerously-skip-permissions"]);
        assert_eq!(
            yolo("codex-yolo"),
            ["--dangerously-bypass-approvals-and-sandbox"]
        );
        assert_eq!(yolo("gemini-yolo"), ["--yolo"]);
        assert_eq!(yolo("cursor-agent-yolo"), ["--force"]);
        assert_eq!(yolo("amp-yolo"), ["--dangerously-allow-all"]);
        assert_eq!(yolo("copilot-yolo"), ["--allow-all-tools"]);
        // The yolo variants keep their base's prompt handling.
        for p in all.iter().filter(|p| p.name.ends_with("-yolo")) {
            let base = get(p.name.trim_end_matches("-yolo"));
            assert_eq!(p.command, base.command);
            assert_eq!(p.prompt, base.prompt);
            assert_eq!(p.prompt_args, base.prompt_args);
            assert!(base.args.is_empty(), "{}", base.name);
        }
        assert_eq!(get("codex").prompt_args, ["--"]);
        assert_eq!(get("gemini").prompt_args, ["--prompt-interactive"]);
        assert_eq!(get("opencode").prompt_args, ["--prompt"]);
        assert_eq!(get("copilot").prompt_args, ["-i"]);
        assert_eq!(get("amp").prompt, PromptTransport::Stdin);
        assert!(resolve("opencode-yolo", &[]).is_none());
        assert!(resolve("yolo", &[]).is_none());
    }

    #[test]
    fn argv_prompt_is_one_verbatim_element() {
        let nasty = [
            "fix the login bug",
            "say \"hi\" and 'bye'",
            "line one\nline two\r\n\ttabbed",
            "$(rm -rf /); `reboot` && echo $HOME | tee /etc/passwd",
            "-rf --help",
            "--",
            "*.rs ~ ; > out",
        ];
        for prompt in nasty {
            let codex = get("codex-yolo");
            let l = codex.launch(Some(prompt), &mcp());
            assert_eq!(l.program, "codex");
            let mut want = vec!["--dangerously-bypass-approvals-and-sandbox".to_owned()];
            want.extend(mcp_args(&codex));
            want.extend(["--".to_owned(), prompt.to_owned()]);
            assert_eq!(l.args, want);
            assert_eq!(l.stdin, None);

            let claude = get("claude");
            let l = claude.launch(Some(prompt), &mcp());
            assert_eq!(l.args.last().map(String::as_str), Some(prompt));
            assert_eq!(l.args.len(), mcp_args(&claude).len() + 1);

            let l = get("gemini").launch(Some(prompt), &mcp());
            assert_eq!(l.args, ["--prompt-interactive", prompt]);
        }
    }

    #[test]
    fn no_prompt_means_no_prompt_args() {
        for name in ["codex", "gemini", "opencode", "copilot-yolo", "amp"] {
            let p = get(name);
            for prompt in [None, Some(""), Some("  \n")] {
                let l = p.launch(prompt, &mcp());
                let mut want = p.args.clone();
                want.extend(mcp_args(&p));
                assert_eq!(l.args, want, "{name} {prompt:?}");
                assert_eq!(l.stdin, None);
            }
        }
    }

    #[test]
    fn stdin_and_none_transports() {
        let l = get("amp-yolo").launch(Some("-do it\nnow"), &mcp());
        assert_eq!(l.program, "amp");
        assert_eq!(l.args, ["--dangerously-allow-all"]);
        assert_eq!(l.stdin.as_deref(), Some("-do it\nnow"));

        let p = custom(
            r#"
            [presets.shell]
            command = "/bin/bash"
            args = ["-l"]
            prompt = "none"
            prompt_args = ["ignored"]
            env = { FOO = "bar" }
            "#,
        )
        .unwrap()
        .remove(0);
        let l = p.launch(Some("hello"), &mcp());
        assert_eq!(l.program, "/bin/bash");
        assert_eq!(l.args, ["-l"]);
        assert_eq!(l.stdin, None);
        assert_eq!(l.env.get("FOO").map(String::as_str), Some("bar"));
    }

    #[test]
    fn custom_presets_parse_and_replace_builtins() {
        assert!(custom("server = 'x'").unwrap().is_empty());
        let presets = custom(
            r#"
            server = "https://example.com"
            [presets.claude]
            command = "/opt/claude/bin/claude"
            args = ["--model", "opus"]
            [presets."my-agent.v2"]
            command = "agent"
            prompt = "stdin"
            description = "mine"
            "#,
        )
        .unwrap();
        assert_eq!(presets.len(), 2);
        let claude = resolve("claude", &presets).unwrap();
        assert_eq!(claude.command, "/opt/claude/bin/claude");
        assert_eq!(claude.prompt, PromptTransport::Argv);
        assert!(claude.prompt_args.is_empty());
        assert_eq!(
            claude.description,
            "custom preset running /opt/claude/bin/claude"
        );
        // A custom preset has only the MCP arguments it names.
        assert!(claude.mcp_args.is_empty());
        assert_eq!(
            claude.launch(Some("go"), &mcp()).args,
            ["--model", "opus", "go"]
        );
        let mine = resolve("my-agent.v2", &presets).unwrap();
        assert_eq!(mine.prompt, PromptTransport::Stdin);
        assert_eq!(mine.description, "mine");
        // The built-in is still there without the custom list.
        assert_eq!(resolve("claude", &[]).unwrap().command, "claude");

        let everything = all(&presets);
        assert_eq!(everything.len(), builtins().len() + 1);
        assert_eq!(
            everything.first().unwrap().command,
            "/opt/claude/bin/claude"
        );
        assert_eq!(everything.last().unwrap().name, "my-agent.v2");
        assert_eq!(everything.iter().filter(|p| p.name == "claude").count(), 1);
    }

    #[test]
    fn custom_preset_errors_name_the_preset() {
        let cases: &[(&str, &str)] = &[
            ("presets = 3", "must be a table"),
            ("[presets.Bad]\ncommand = 'x'", "\"Bad\""),
            ("[presets.'a b']\ncommand = 'x'", "\"a b\""),
            ("[presets.'']\ncommand = 'x'", "\"\""),
            ("[presets.x]\nargs = []", "preset \"x\" has no command"),
            ("[presets.x]\ncommand = ' '", "preset \"x\" has no command"),
            (
                "[presets.x]\ncommand = 'a'\nprompt = 'shell'",
                "preset \"x\"",
            ),
            ("[presets.x]\ncommand = 'a'\nargz = []", "preset \"x\""),
            ("[presets.x]\ncommand = 'a'\nargs = 'one'", "preset \"x\""),
            ("[presets]\nx = 1", "preset \"x\""),
            (
                "[presets.x]\ncommand = 'a'\nenv = { '1X' = 'v' }",
                "\"1X\" is not a valid environment variable",
            ),
            (
                "[presets.x]\ncommand = 'a'\nenv = { 'A-B' = 'v' }",
                "\"A-B\" is not a valid",
            ),
            ("[presets.x]\ncommand = 'a'\nargs = [\"a\\u0000b\"]", "NUL"),
        ];
        for (text, want) in cases {
            let e = custom(text).expect_err(text);
            let msg = e.to_string();
            assert!(msg.contains(want), "{text:?}: {msg}");
        }

        let long_name = "a".repeat(65);
        let e = custom(&format!("[presets.{long_name}]\ncommand = 'x'")).unwrap_err();
        assert!(matches!(e, PresetError::BadName { .. }), "{e}");
        assert!(custom(&format!("[presets.{}]\ncommand = 'x'", "a".repeat(64))).is_ok());

        let args = |n: usize, len: usize| {
            let one = format!("'{}'", "a".repeat(len));
            format!(
                "[presets.x]\ncommand = 'a'\nargs = [{}]",
                vec![one; n].join(",")
            )
        };
        assert!(custom(&args(64, 4096)).is_ok());
        let e = custom(&args(65, 1)).unwrap_err();
        assert!(
            matches!(e, PresetError::TooManyArgs { count: 65, .. }),
            "{e}"
        );
        let e = custom(&args(1, 4097)).unwrap_err();
        assert!(
            e.to_string()
                .contains("preset \"x\": args entry 0 is 4097 bytes long"),
            "{e}"
        );

        let env = |n: usize| {
            let vars: Vec<String> = (0..n).map(|i| format!("V{i} = 'x'")).collect();
            format!(
                "[presets.x]\ncommand = 'a'\nenv = {{ {} }}",
                vars.join(", ")
            )
        };
        assert!(custom(&env(64)).is_ok());
        let e = custom(&env(65)).unwrap_err();
        assert!(
            e.to_string()
                .contains("preset \"x\" sets 65 environment variables"),
            "{e}"
        );
    }

    #[test]
    fn find_program_searches_path_and_checks_paths() {
        let path = std::env::var_os("PATH");
        let sh = find_program("sh", path.as_deref()).expect("sh on PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        assert!(find_program("no-such-program-tether-test", path.as_deref()).is_none());
        assert!(find_program("sh", None).is_none());
        assert!(find_program("", path.as_deref()).is_none());

        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        let tool_str = tool.to_str().unwrap();
        let dir_path = Some(dir.path().as_os_str());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Not executable yet: neither by path nor on PATH.
            assert!(find_program(tool_str, None).is_none());
            assert!(find_program("tool", dir_path).is_none());
            std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        assert_eq!(find_program(tool_str, None), Some(tool.clone()));
        assert_eq!(find_program("tool", dir_path), Some(tool.clone()));
        // A path with `/` is never looked up on PATH.
        assert!(find_program("./tool", dir_path).is_none());
        assert!(find_program(&format!("{tool_str}-missing"), None).is_none());
        // A directory is not a program.
        assert!(find_program(dir.path().to_str().unwrap(), None).is_none());
        // Relative PATH entries are skipped.
        assert!(find_program("sh", Some(OsStr::new("bin:usr/bin"))).is_none());
    }
}
