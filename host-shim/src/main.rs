//! `tether`: the host daemon and CLI.
//!
//! Today it checks that an edge answers (`tether ping`); pairing, the tunnel daemon and the
//! agent sessions arrive with the machines and sessions work (see the open issues).

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "Run coding agents on this machine from anywhere."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that a Tether edge answers: its health and version.
    Ping {
        /// The edge's base URL, e.g. http://127.0.0.1:8787.
        #[arg(long, env = "TETHER_URL")]
        server: String,
    },
}

#[derive(Deserialize)]
struct Version {
    version: String,
    runtime: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Ping { server } => ping(server.trim_end_matches('/')).await,
    }
}

async fn ping(server: &str) -> Result<()> {
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
    Ok(())
}
