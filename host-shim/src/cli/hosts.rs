//! `tether hosts list|approve|revoke`: member commands against the org's host registry.

use super::HostsCommand;
use anyhow::{Result, bail};
use std::process::ExitCode;
use tether::api::{self, ApiClient, HostSummary};
use tether::config::Config;
use tether::paths::Paths;

pub async fn hosts(
    paths: &Paths,
    server: Option<String>,
    key: Option<String>,
    command: HostsCommand,
) -> Result<ExitCode> {
    let client = client(paths, server, key)?;
    let result = match command {
        HostsCommand::List { json } => list(&client, json).await,
        HostsCommand::Approve { code } => approve(&client, code.trim()).await,
        HostsCommand::Revoke { id } => revoke(&client, id.trim()).await,
    };
    match result {
        Err(e) if api::is_unauthorized(&e) => {
            bail!(
                "{} refused the key: {e}; log in again with `tether login`",
                client.server()
            )
        }
        Err(e) => Err(e.into()),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}

/// The credentials: an explicit key (with the given or stored server), or the stored login.
/// A stored key is only ever sent to the server it was stored for.
pub(super) fn client(
    paths: &Paths,
    server: Option<String>,
    key: Option<String>,
) -> Result<ApiClient> {
    let config = Config::load(&paths.config_file())?;
    if let Some(key) = key {
        let Some(server) = server.or(config.server) else {
            bail!("which server? pass --server URL");
        };
        return Ok(ApiClient::new(&server, Some(&key))?);
    }
    let Some((stored_server, stored_key)) = config.login() else {
        bail!("not logged in: run `tether login --server URL` (or pass --key)");
    };
    if let Some(s) = server
        && api::normalize_server(&s)? != stored_server
    {
        bail!("the stored key is for {stored_server}, not {s}; pass --key for another server");
    }
    Ok(ApiClient::new(stored_server, Some(stored_key))?)
}

async fn list(client: &ApiClient, json: bool) -> Result<(), tether::Error> {
    if json {
        let hosts = client.list_hosts_json().await?;
        // Plain JSON values always serialise.
        println!(
            "{}",
            serde_json::to_string_pretty(&hosts).unwrap_or_default()
        );
        return Ok(());
    }
    let hosts = client.list_hosts().await?;
    if hosts.is_empty() {
        println!("No hosts yet: run `tether pair` on a machine, then approve its code.");
        return Ok(());
    }
    let rows: Vec<[String; 5]> = hosts.iter().map(row).collect();
    let header = ["ID", "NAME", "PLATFORM", "STATE", "LAST SEEN"].map(str::to_owned);
    let mut widths = [0usize; 5];
    for r in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

fn row(h: &HostSummary) -> [String; 5] {
    let dash = || "-".to_owned();
    let platform = match (&h.os, &h.arch) {
        (Some(os), Some(arch)) => format!("{os}/{arch}"),
        (Some(x), None) | (None, Some(x)) => x.clone(),
        (None, None) => dash(),
    };
    let mut state = match (&h.revoked_at, h.online, &h.reason) {
        (Some(_), _, _) => "revoked".to_owned(),
        (None, Some(true), _) => "online".to_owned(),
        (None, Some(false), Some(r)) => format!("offline ({r})"),
        (None, Some(false), None) => "offline".to_owned(),
        (None, None, Some(r)) => r.clone(),
        (None, None, None) => dash(),
    };
    if let Some(n) = h.queued_commands.filter(|n| *n > 0) {
        state.push_str(&format!(", {n} queued"));
    }
    [
        h.id.clone(),
        h.name.clone().unwrap_or_else(dash),
        platform,
        state,
        h.last_seen_at.clone().unwrap_or_else(dash),
    ]
}

async fn approve(client: &ApiClient, code: &str) -> Result<(), tether::Error> {
    let answer = client.approve_pairing(code).await?;
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| answer.get(*n).and_then(|v| v.as_str()))
            .map(str::to_owned)
    };
    match (field(&["host_id", "id"]), field(&["name"])) {
        (Some(id), Some(name)) => println!("Approved {code}: host {id} ({name})."),
        (Some(id), None) => println!("Approved {code}: host {id}."),
        _ => println!("Approved {code}."),
    }
    println!("The new machine finishes pairing on its own within a few seconds.");
    Ok(())
}

async fn revoke(client: &ApiClient, id: &str) -> Result<(), tether::Error> {
    client.revoke_host(id).await?;
    println!("Revoked host {id}: its tunnel closes and its daemon stops.");
    Ok(())
}
