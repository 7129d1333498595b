//! `config.toml`: the CLI's login (the edge's URL and a member's API key), and the daemon's
//! settings for sessions.
//!
//! ```toml
//! server = "https://tether.example.com"
//! key = "tk_..."
//! worktree_dir = "/home/me/worktrees"   # optional
//! agent_hooks = true                      # default: the daemon installs its hooks in
//!                                         # ~/.claude/settings.json and ~/.codex/hooks.json
//! policy_sync_secs = 30                   # default: how often the org's policies are checked
//!
//! [presets.my-agent]                      # optional: custom agent presets
//! command = "my-agent"
//! args = ["--interactive"]
//! prompt = "argv"                         # argv | stdin | none
//! prompt_args = ["--prompt"]
//! env = { MY_AGENT_MODE = "fast" }
//!
//! chat = { protocol = "claude-stream-json", args = ["-p", "--output-format", "stream-json"] }
//!                                         # optional: how it runs chat sessions
//!
//! [chat]                                  # optional: chat sessions
//! approval_timeout_secs = 300             # default: how long an approval waits (1 to 600)
//! approval_default = "deny"               # default: what applies when nobody answers
//! approval_role = "member"                # default: who may answer (member | admin | owner)
//! idle_timeout_secs = 3600                # default: a conversation idle this long ends
//! titles = true                           # default: titles by a small model when the
//!                                         # daemon has ANTHROPIC_API_KEY or OPENAI_API_KEY
//!
//! [[policies]]                            # optional: guardrail policies, in order
//! path = "/home/me/policies/secret-guard.wasm"
//! config = { mode = "redact" }            # handed to the policy as JSON
//! failure = "deny"                        # deny (default) | allow, on a trap or timeout
//! sha256 = "…"                            # pinned by `tether policy add`
//! ```
//!
//! The file holds a secret, so it is written like the host key: mode 0600, atomically. Keys
//! this version does not know are kept as they are when the file is saved again.

use crate::Error;
use crate::files::{self, Existing};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The edge's base URL, without a trailing slash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// A member's API key (`tk_...`) for the member commands (`tether hosts ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Where session worktrees go (default: `<state dir>/worktrees`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree_dir: Option<std::path::PathBuf>,
    /// Whether the daemon keeps its hook entries in the agents' settings (default: yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_hooks: Option<bool>,
    /// Seconds between checks for changes to the org's policies (default 30, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_sync_secs: Option<u64>,
    /// Chat sessions: approvals, idle time, titles (`[chat]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatConfig>,
    /// Guardrail policies, in evaluation order (`[[policies]]`; `tether policy add`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<crate::policy::PolicyEntry>,
    /// Settings of newer versions (and `[presets.NAME]` tables), preserved on save.
    #[serde(flatten)]
    pub other: toml::Table,
}

/// `[chat]`: how this machine runs chat sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// How long an approval request waits for a member (default 300, 1 to 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_timeout_secs: Option<u64>,
    /// What applies when nobody answers in time: `deny` (default) or `allow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_default: Option<tether_durable::chat::Decision>,
    /// The least org role that may answer: `member` (default), `admin` or `owner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_role: Option<String>,
    /// A conversation with no turn under way for this long ends (default 3600 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// Ask a small model for session titles when an API key is there (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub titles: Option<bool>,
}

/// The longest an approval may wait: the agents' hooks wait for the answer, and the hook
/// entries give them [`crate::hooks::install::HOOK_TIMEOUT_SECS`].
pub const MAX_APPROVAL_TIMEOUT_SECS: u64 = 600;

impl ChatConfig {
    /// The settings, checked.
    pub fn settings(&self) -> Result<crate::sessions::chat::ChatSettings, Error> {
        let d = crate::sessions::chat::ChatSettings::default();
        let timeout = self
            .approval_timeout_secs
            .unwrap_or(d.approval_timeout.as_secs());
        if !(1..=MAX_APPROVAL_TIMEOUT_SECS).contains(&timeout) {
            return Err(Error::InvalidConfig(format!(
                "[chat] approval_timeout_secs: 1 to {MAX_APPROVAL_TIMEOUT_SECS}"
            )));
        }
        let role = self.approval_role.clone().unwrap_or(d.approval_role);
        if tether_durable::chat::role_rank(&role).is_none() {
            return Err(Error::InvalidConfig(
                "[chat] approval_role: member, admin or owner".into(),
            ));
        }
        let idle = self.idle_timeout_secs.unwrap_or(d.idle_timeout.as_secs());
        if idle == 0 {
            return Err(Error::InvalidConfig(
                "[chat] idle_timeout_secs: at least 1".into(),
            ));
        }
        Ok(crate::sessions::chat::ChatSettings {
            approval_timeout: std::time::Duration::from_secs(timeout),
            approval_default: self.approval_default.unwrap_or(d.approval_default),
            approval_role: role,
            idle_timeout: std::time::Duration::from_secs(idle),
        })
    }
}

impl std::fmt::Debug for Config {
    /// Leaves the key out: configs end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(Error::Io {
                    action: "reading",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|source| Error::ConfigParse {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes the whole config to `path` (mode 0600, atomically).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let text = toml::to_string(self).map_err(Error::ConfigSerialize)?;
        files::write_private(path, text.as_bytes(), Existing::Replace)
    }

    /// The stored login, when there is one: (server, key).
    pub fn login(&self) -> Option<(&str, &str)> {
        Some((self.server.as_deref()?, self.key.as_deref()?))
    }
}

/// A key for display: its first characters only (`tk_abcd…`).
pub fn redact(key: &str) -> String {
    let shown: String = key.chars().take(7).collect();
    format!("{shown}…")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn roundtrip_keeps_unknown_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether/config.toml");
        assert_eq!(Config::load(&path).unwrap(), Config::default());

        let c = Config {
            server: Some("http://127.0.0.1:8787".into()),
            key: Some("tk_secret".into()),
            ..Config::default()
        };
        c.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), c);
        assert_eq!(c.login(), Some(("http://127.0.0.1:8787", "tk_secret")));
        #[cfg(unix)]
        {
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(crate::files::mode(&meta), Some(0o600));
        }

        // A setting from a newer version survives a save by this one.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("\n[future]\nflag = true\n");
        std::fs::write(&path, text).unwrap();
        let mut loaded = Config::load(&path).unwrap();
        loaded.key = None;
        loaded.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("[future]") && text.contains("flag = true"),
            "{text}"
        );
        assert!(!text.contains("tk_secret"), "{text}");
        assert_eq!(Config::load(&path).unwrap().login(), None);

        assert!(!format!("{c:?}").contains("tk_secret"));
    }

    #[test]
    fn bad_toml_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "server = [").unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(matches!(err, Error::ConfigParse { .. }));
        assert!(err.to_string().contains("config.toml"));
    }

    #[test]
    fn redacts() {
        assert_eq!(redact("tk_0123456789abcdef"), "tk_0123…");
        assert_eq!(redact("tk"), "tk…");
    }
}
