//! `tether login` and `tether logout`: the member API key the CLI's member commands use.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use tether::api::{self, ApiClient};
use tether::config::{self, Config};
use tether::paths::Paths;

pub async fn login(paths: &Paths, server: &str, key: Option<String>) -> Result<ExitCode> {
    let server = api::normalize_server(server)?;
    let key = match key {
        Some(k) => k,
        None => read_key(&server)?,
    };
    let key = key.trim();
    if key.is_empty() {
        bail!("no API key given (--key, TETHER_KEY, or type it when asked)");
    }
    if !key.starts_with("tk_") {
        bail!(
            "that is not an API key (they start with tk_); tokens expire, so they cannot be stored"
        );
    }
    let client = ApiClient::new(&server, Some(key))?;
    let me = match client.me().await {
        Ok(me) => me,
        Err(e) if api::is_unauthorized(&e) => {
            bail!("{server} refused this key: {e}")
        }
        Err(e) => return Err(e).with_context(|| format!("checking the key with {server}")),
    };
    let file = paths.config_file();
    let mut config = Config::load(&file)?;
    config.server = Some(server.clone());
    config.key = Some(key.to_owned());
    config.save(&file)?;
    println!(
        "Logged in to {server} as {} of {} ({}).",
        me.role, me.org.name, me.org.id
    );
    println!(
        "The key ({}) is stored in {} (readable by you only).",
        config::redact(key),
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Asks on the terminal without echo, or reads one line from a pipe.
fn read_key(server: &str) -> Result<String> {
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("API key for {server}: "))
            .context("reading the key from the terminal");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the key from stdin")?;
    Ok(line)
}

pub fn logout(paths: &Paths) -> Result<ExitCode> {
    let file = paths.config_file();
    let mut config = Config::load(&file)?;
    if config.key.is_none() {
        println!("Not logged in.");
        return Ok(ExitCode::SUCCESS);
    }
    config.key = None;
    config.save(&file)?;
    match &config.server {
        Some(s) => println!(
            "Logged out of {s} (the key is removed from {}).",
            file.display()
        ),
        None => println!("Logged out (the key is removed from {}).", file.display()),
    }
    Ok(ExitCode::SUCCESS)
}
