//! `tether doctor`: the machine checks as a table.

use anyhow::Result;
use std::process::ExitCode;
use tether::config::Config;
use tether::paths::Paths;

pub async fn doctor(paths: &Paths, server: Option<String>) -> Result<ExitCode> {
    let server = match server {
        Some(s) => Some(s),
        None => match super::read_pairing(paths).await {
            Ok(Some(p)) => Some(p.server),
            // A broken state database must not stop the other checks.
            Ok(None) | Err(_) => Config::load(&paths.config_file())
                .ok()
                .and_then(|c| c.server),
        },
    };
    let report = tether::doctor::run(paths, server.as_deref()).await;
    print!("{}", report.table());
    if report.failed() {
        eprintln!("Some required checks failed.");
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
