//! `tether up`: the daemon in the foreground.

use anyhow::Result;
use std::process::ExitCode;
use tether::daemon::{self, Daemon};
use tether::paths::Paths;
use tracing::info;

pub async fn up(paths: Paths) -> Result<ExitCode> {
    // Handlers first: from here on, SIGTERM means a clean stop.
    let signal = daemon::shutdown_signal()?;
    let d = Daemon::load(paths).await?;
    daemon::run_daemon(d, async {
        let name = signal.await;
        info!(signal = name, "shutting down");
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
