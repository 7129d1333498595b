//! `tether status`: what this machine is, in a few lines.

use anyhow::Result;
use std::process::ExitCode;
use tether::config::{self, Config};
use tether::identity::Identity;
use tether::paths::Paths;

pub async fn status(paths: &Paths) -> Result<ExitCode> {
    let pairing = super::read_pairing(paths).await?;
    let key_file = paths.key_file();
    let identity = if key_file.exists() {
        match Identity::load(&key_file) {
            Ok(id) => format!("fingerprint {}  {}", id.fingerprint(), key_file.display()),
            Err(e) => format!("unusable: {e}"),
        }
    } else {
        "none yet (`tether pair` creates it)".to_owned()
    };
    let config_file = paths.config_file();
    let login = match Config::load(&config_file) {
        Ok(c) => match c.login() {
            Some((server, key)) => format!("{} at {server}", config::redact(key)),
            None => "not logged in".to_owned(),
        },
        Err(e) => format!("unreadable config: {e}"),
    };
    let (paired, server, host) = match &pairing {
        Some(p) => (
            "yes",
            p.server.clone(),
            format!("{} (org {})", p.host_id, p.org_id),
        ),
        None => ("no (run `tether pair`)", "-".to_owned(), "-".to_owned()),
    };
    let running = tether::daemon::is_running(paths);
    let mirror = mirror(paths, running).await;
    let daemon = if running {
        "running"
    } else {
        "not running (`tether up`)"
    };
    let tunnel = match (
        &pairing,
        Config::load(&config_file)
            .ok()
            .and_then(|c| c.login().map(|(s, k)| (s.to_owned(), k.to_owned()))),
    ) {
        (Some(p), Some((login_server, key))) if login_server == p.server => {
            match tether::api::ApiClient::new(&p.server, Some(&key)) {
                Ok(api) => match api.host(&p.host_id).await {
                    Ok(h) if h.online == Some(true) => "online".to_owned(),
                    Ok(h) => format!(
                        "offline: {} (last seen {})",
                        h.reason.unwrap_or_default(),
                        h.last_seen_at.unwrap_or_else(|| "never".into())
                    ),
                    Err(e) => format!("unknown: {e}"),
                },
                Err(e) => format!("unknown: {e}"),
            }
        }
        (Some(_), _) => "unknown (`tether login` to the same server shows it)".to_owned(),
        (None, _) => "-".to_owned(),
    };
    let policies = match tether::guardrails::Guardrails::sources(paths) {
        Ok(s) if s.is_empty() => "none".to_owned(),
        Ok(s) => s
            .iter()
            .map(|p| p.origin.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => format!("unreadable: {e}"),
    };
    let hooks = match (etcetera::home_dir(), std::env::current_exe()) {
        (Ok(home), Ok(exe)) => match tether::hooks::install::status(&home, &exe) {
            Ok(all) => all
                .iter()
                .map(|s| format!("{} {}", s.agent, super::hook::describe(s.state)))
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("unreadable: {e}"),
        },
        _ => "unknown (no home folder)".to_owned(),
    };
    let rows = [
        ("paired", paired.to_owned()),
        ("host", host),
        ("tunnel", tunnel),
        ("server", server),
        ("identity", identity),
        ("daemon", daemon.to_owned()),
        ("mirror", mirror),
        ("policies", policies),
        ("hooks", hooks),
        ("login", login),
        ("config", config_file.display().to_string()),
        ("state", paths.state_dir.display().to_string()),
    ];
    for (k, v) in rows {
        println!("{k:9} {v}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The org's mirror in a line: how current, how big, how often the edge made it start over.
async fn mirror(paths: &Paths, running: bool) -> String {
    if !paths.state_db().exists() {
        return "-".to_owned();
    }
    let read = async {
        let m = tether::mirror::Mirror::open(&paths.state_db()).await?;
        let staleness = m
            .staleness(tether::mirror::TABLES)
            .await?
            .with_daemon(running);
        let shapes = m.shapes().await?;
        let rows: i64 = m.counts().await?.iter().map(|(_, n)| n).sum();
        Ok::<_, tether::Error>((staleness, shapes, rows))
    };
    match read.await {
        Ok((staleness, shapes, rows)) => {
            let line = staleness.describe(running);
            let line = line.strip_prefix("mirror ").unwrap_or(&line);
            let resyncs: i64 = shapes.iter().map(|s| s.resyncs).sum();
            format!(
                "{line}; {} of {} tables, {rows} rows, {resyncs} resyncs",
                shapes.len(),
                tether::mirror::TABLES.len()
            )
        }
        Err(e) => format!("unreadable: {e}"),
    }
}
