//! Where the daemon keeps its files.
//!
//! - config: `$XDG_CONFIG_HOME/tether/` (default `~/.config/tether/`): `config.toml` (the CLI
//!   login: server and API key).
//! - state: `$XDG_STATE_HOME/tether/` (default `~/.local/state/tether/`): `host.key` (the host
//!   identity), `state.db` (the local database), `control.sock` (the running daemon's control
//!   socket), `policies/` (the org's guardrail policies) and `policy-cache/` (their compiled
//!   code).
//!
//! `TETHER_CONFIG_DIR` and `TETHER_STATE_DIR` replace those two folders outright (tests use
//! them to isolate runs; they also let several daemons share one machine). The XDG layout is
//! used on every Unix, macOS included, as most command-line tools do.

use crate::Error;
use etcetera::BaseStrategy;
use std::path::{Path, PathBuf};

pub const CONFIG_DIR_ENV: &str = "TETHER_CONFIG_DIR";
pub const STATE_DIR_ENV: &str = "TETHER_STATE_DIR";

/// The daemon's two folders and the files in them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
}

impl Paths {
    /// From the environment: the `TETHER_*_DIR` overrides, else the XDG folders.
    pub fn from_env() -> Result<Self, Error> {
        let config = env_dir(CONFIG_DIR_ENV);
        let state = env_dir(STATE_DIR_ENV);
        if let (Some(config_dir), Some(state_dir)) = (&config, &state) {
            return Ok(Self::new(config_dir, state_dir));
        }
        let xdg = etcetera::base_strategy::Xdg::new().map_err(Error::NoHome)?;
        let xdg_state = xdg
            .state_dir()
            .unwrap_or_else(|| xdg.home_dir().join(".local/state"));
        Ok(Self {
            config_dir: config.unwrap_or_else(|| xdg.config_dir().join("tether")),
            state_dir: state.unwrap_or_else(|| xdg_state.join("tether")),
        })
    }

    pub fn new(config_dir: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            config_dir: config_dir.into(),
            state_dir: state_dir.into(),
        }
    }

    /// The CLI's settings and login.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    /// The host's Ed25519 private key.
    pub fn key_file(&self) -> PathBuf {
        self.state_dir.join("host.key")
    }

    /// The daemon's control socket (`tether hook` asks the policies through it).
    pub fn control_socket(&self) -> PathBuf {
        self.state_dir.join("control.sock")
    }

    /// The local libsql database.
    pub fn state_db(&self) -> PathBuf {
        self.state_dir.join("state.db")
    }
}

/// An override from the environment, made absolute (a service must not depend on the folder
/// it was installed from).
fn env_dir(name: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os(name).filter(|v| !v.is_empty())?);
    Some(std::path::absolute(&dir).unwrap_or(dir))
}

/// Where systemd looks for user units: `$XDG_CONFIG_HOME/systemd/user/`.
pub fn systemd_user_dir() -> Result<PathBuf, Error> {
    let xdg = etcetera::base_strategy::Xdg::new().map_err(Error::NoHome)?;
    Ok(xdg.config_dir().join("systemd").join("user"))
}

/// Creates `dir` (and missing parents) readable by the owner only where we create it.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(Error::io("creating the folder", dir))
}
