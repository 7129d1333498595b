//! The error type of the daemon's local side: paths, config, identity, state and the edge's
//! REST API. (The streams client has its own, [`crate::streams::StreamError`].)

use std::path::PathBuf;

/// Everything that can go wrong in the daemon's local plumbing and its REST calls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Neither `$HOME` nor the `TETHER_*_DIR` overrides say where our files live.
    #[error("cannot find the home directory (set HOME, or TETHER_CONFIG_DIR and TETHER_STATE_DIR)")]
    NoHome(#[source] etcetera::HomeDirError),

    #[error("{action} {}", path.display())]
    Io {
        /// What we were doing, e.g. "reading".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is not valid TOML for the tether config", path.display())]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },

    #[error("serialising the config")]
    ConfigSerialize(#[source] toml::ser::Error),

    /// The private key file is readable or writable by someone other than its owner.
    #[error(
        "{} has mode {mode:04o}: the host key must be readable by its owner only; \
         fix it with `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },

    #[error("{} is not a PKCS#8 PEM Ed25519 private key", path.display())]
    KeyFormat {
        path: PathBuf,
        #[source]
        source: ed25519_dalek::pkcs8::Error,
    },

    #[error("encoding the host key")]
    KeyEncode(#[source] ed25519_dalek::pkcs8::Error),

    /// `create_new` found a key already there: we never overwrite an identity.
    #[error("{} already exists; refusing to overwrite a host identity", path.display())]
    KeyExists { path: PathBuf },

    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),

    #[error("state database {}: {action}", path.display())]
    Db {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: libsql::Error,
    },

    /// The database was written by a newer `tether` (a downgrade): refuse rather than guess.
    #[error(
        "state database {} is at schema version {found}, newer than this tether knows ({known}); upgrade tether",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },

    /// No identity or no approved pairing in the state folder.
    #[error("this machine is not paired (state in {}): run `tether pair` first", state_dir.display())]
    NotPaired { state_dir: PathBuf },

    /// The edge will not take this host's tunnel any more (revoked, replaced).
    #[error("the tunnel stopped for good")]
    TunnelStopped(#[source] crate::tunnel::Stopped),

    /// Another daemon holds the state folder's lock.
    #[error("another tether daemon is already running with the state in {}", state_dir.display())]
    AlreadyRunning { state_dir: PathBuf },

    #[error("installing the signal handlers")]
    Signal(#[source] std::io::Error),

    #[error("invalid server URL {url:?}: {reason}")]
    InvalidServer { url: String, reason: &'static str },

    #[error("invalid config: {0}")]
    InvalidConfig(String),

    #[error("building the HTTP client")]
    HttpClient(#[source] reqwest::Error),

    /// No answer: connect failure, reset, timeout.
    #[error("{method} {url}: no answer from the server")]
    Transport {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The server answered with an error status. `code` and `message` come from the API's JSON
    /// error body when it sent one.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },

    /// A well-formed answer that breaks the protocol's rules.
    #[error("{0}")]
    Protocol(&'static str),

    /// A value we built that JSON cannot hold (a map with non-string keys, say).
    #[error("encoding {what} as JSON")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// A mirror query named a column that is not a plain identifier (a bug in the caller).
    #[error("the mirror has no column {column:?}")]
    MirrorColumn { column: String },

    /// A success status whose body is not what the API documents.
    #[error("{method} {url}: unexpected answer")]
    UnexpectedBody {
        method: &'static str,
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }

    /// The HTTP status of an API error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}
