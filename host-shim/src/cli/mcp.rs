//! `tether mcp`: the local MCP server of one session, on stdin/stdout (see `tether::mcp`).

use anyhow::{Result, bail};
use std::process::ExitCode;
use tether::mcp::server::LocalServer;
use tether::paths::Paths;

pub async fn mcp(paths: &Paths, session: Option<String>) -> Result<ExitCode> {
    let Some(session) = session.filter(|s| !s.trim().is_empty()) else {
        bail!(
            "no session: `tether mcp` serves an agent the daemon launched, which has \
             TETHER_SESSION_ID set; elsewhere pass --session"
        );
    };
    LocalServer::new(session, paths.control_socket())
        .serve_stdio()
        .await?;
    Ok(ExitCode::SUCCESS)
}
