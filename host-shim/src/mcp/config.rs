//! How an agent finds its session's MCP server.
//!
//! The daemon writes one file per session, `<state>/mcp/<session>.json` (0600, removed when the
//! session ends), in Claude Code's `--mcp-config` format:
//!
//! ```json
//! {"mcpServers": {"tether": {"command": "/usr/local/bin/tether", "args": ["mcp"],
//!   "env": {"TETHER_SESSION_ID": "ses_...", "TETHER_STATE_DIR": "/home/me/.local/state/tether"}}}}
//! ```
//!
//! Every agent gets its path as `TETHER_MCP_CONFIG`; presets hand the server to their agent
//! with `mcp_args`, whose placeholders [`SessionServer::expand`] fills. The environment is in
//! the file because agents do not all pass theirs on to the servers they start (Codex passes a
//! short allow-list).

use crate::Error;
use crate::files::{Existing, write_private};
use crate::paths::STATE_DIR_ENV;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The server's name in the agents' configurations (their tools show up as `tether`'s).
pub const SERVER_NAME: &str = "tether";
/// The environment variable with the path of the session's file.
pub const CONFIG_ENV: &str = "TETHER_MCP_CONFIG";
/// The environment variable that names the session a `tether mcp` (or `tether hook`) serves.
pub const SESSION_ENV: &str = "TETHER_SESSION_ID";

/// One stdio MCP server, as the agents' configuration files describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioServer {
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// Claude Code's `--mcp-config` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpConfigFile {
    pub mcp_servers: BTreeMap<String, StdioServer>,
}

/// A session's MCP server: the command that starts it and the file that describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionServer {
    /// Where the file is (or goes).
    pub config_file: PathBuf,
    pub server: StdioServer,
}

impl SessionServer {
    /// Session `session`'s server: `exe mcp`, with the session and the daemon's state folder in
    /// its environment; its file in `state_dir`.
    pub fn new(exe: &Path, session: &str, state_dir: &Path) -> Self {
        let env = BTreeMap::from([
            (SESSION_ENV.to_owned(), session.to_owned()),
            (STATE_DIR_ENV.to_owned(), state_dir.display().to_string()),
        ]);
        Self {
            config_file: path(state_dir, session),
            server: StdioServer {
                command: exe.display().to_string(),
                args: vec!["mcp".to_owned()],
                env,
            },
        }
    }

    /// The file's content.
    pub fn file(&self) -> McpConfigFile {
        McpConfigFile {
            mcp_servers: BTreeMap::from([(SERVER_NAME.to_owned(), self.server.clone())]),
        }
    }

    /// Writes the file, readable by its owner only (it names the session the server speaks
    /// for).
    pub fn write(&self) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(&self.file()).map_err(|source| Error::Encode {
            what: "the MCP config",
            source,
        })?;
        write_private(&self.config_file, &bytes, Existing::Replace)
    }

    /// `arg` with the placeholders replaced:
    ///
    /// - `{mcp_config}`: the file's path (Claude Code: `--mcp-config {mcp_config}`);
    /// - `{mcp_command_toml}`, `{mcp_args_toml}`, `{mcp_env_toml}`: the command, its arguments
    ///   and its environment as TOML values (a string, an array, an inline table), for agents
    ///   configured by TOML overrides (Codex: `-c mcp_servers.tether.command={mcp_command_toml}`).
    pub fn expand(&self, arg: &str) -> String {
        if !arg.contains('{') {
            return arg.to_owned();
        }
        let s = &self.server;
        let args = toml::Value::Array(s.args.iter().cloned().map(toml::Value::String).collect());
        let env: toml::Table = s
            .env
            .iter()
            .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
            .collect();
        arg.replace("{mcp_config}", &self.config_file.display().to_string())
            .replace(
                "{mcp_command_toml}",
                &toml::Value::String(s.command.clone()).to_string(),
            )
            .replace("{mcp_args_toml}", &args.to_string())
            .replace("{mcp_env_toml}", &toml::Value::Table(env).to_string())
    }
}

/// Where session `id`'s file goes in the state folder.
pub fn path(state_dir: &Path, id: &str) -> PathBuf {
    dir(state_dir).join(format!("{id}.json"))
}

/// The folder of the sessions' files.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("mcp")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    #[test]
    fn the_file_is_claude_codes_mcp_config() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let s = SessionServer::new(Path::new("/opt/tether/bin/tether"), "ses_01ab", &state);
        assert_eq!(s.config_file, state.join("mcp").join("ses_01ab.json"));
        s.write().unwrap();
        let text = std::fs::read_to_string(&s.config_file).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"mcpServers": {"tether": {
                "command": "/opt/tether/bin/tether",
                "args": ["mcp"],
                "env": {"TETHER_SESSION_ID": "ses_01ab", "TETHER_STATE_DIR": state.display().to_string()}
            }}})
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&s.config_file)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Written again (a redelivered start), replaced.
        s.write().unwrap();
    }

    #[test]
    fn placeholders_expand_to_paths_and_toml_values() {
        let s = SessionServer::new(
            Path::new("/home/o\"brien/bin/tether"),
            "ses_1",
            Path::new("/st"),
        );
        assert_eq!(s.expand("--mcp-config"), "--mcp-config");
        assert_eq!(s.expand("{mcp_config}"), "/st/mcp/ses_1.json");
        assert_eq!(s.expand("@{mcp_config}"), "@/st/mcp/ses_1.json");
        // TOML values, quoted so that any path survives (Codex parses them as TOML).
        let command = s.expand("mcp_servers.tether.command={mcp_command_toml}");
        let value = command.strip_prefix("mcp_servers.tether.command=").unwrap();
        let parsed: toml::Table = toml::from_str(&format!("v = {value}")).unwrap();
        assert_eq!(parsed["v"].as_str(), Some("/home/o\"brien/bin/tether"));
        let args = s.expand("{mcp_args_toml}");
        let parsed: toml::Table = toml::from_str(&format!("v = {args}")).unwrap();
        assert_eq!(parsed["v"], toml::Value::Array(vec!["mcp".into()]));
        let env = s.expand("{mcp_env_toml}");
        let parsed: toml::Table = toml::from_str(&format!("v = {env}")).unwrap();
        let env = parsed["v"].as_table().unwrap();
        assert_eq!(env["TETHER_SESSION_ID"].as_str(), Some("ses_1"));
        assert_eq!(env["TETHER_STATE_DIR"].as_str(), Some("/st"));
    }
}
