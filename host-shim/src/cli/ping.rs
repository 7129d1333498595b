//! `tether ping`: is the server there, and which version is it?

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::process::ExitCode;

#[derive(Deserialize)]
struct Version {
    version: String,
    runtime: String,
}

pub async fn ping(server: &str) -> Result<ExitCode> {
    let server = tether::api::normalize_server(server)?;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let started = std::time::Instant::now();
    let health = http
        .get(format!("{server}/health"))
        .send()
        .await
        .with_context(|| format!("reaching {server}"))?;
    if !health.status().is_success() {
        bail!("{server}/health answered {}", health.status());
    }
    let v: Version = http
        .get(format!("{server}/version"))
        .send()
        .await?
        .json()
        .await
        .context("reading /version")?;
    println!(
        "{server}: tether {} on {}, {} ms",
        v.version,
        v.runtime,
        started.elapsed().as_millis()
    );
    Ok(ExitCode::SUCCESS)
}
