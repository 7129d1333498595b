//! `tether policy add|list|remove|test`: the machine's guardrail policies (WebAssembly
//! components, see wasm-plugins/README.md), kept in config.toml in evaluation order.

use super::PolicyCommand;
use anyhow::{Context, Result, bail};
use std::process::ExitCode;
use tether::config::Config;
use tether::control::{self, ClientError, Reloaded, Request};
use tether::guardrails::{Guardrails, org};
use tether::hooks::{Agent, protocol};
use tether::paths::Paths;
use tether::policy::{FailureMode, Limits, PolicyEntry, PolicyHost};

fn failure_mode(s: &str) -> Result<FailureMode> {
    match s {
        "deny" => Ok(FailureMode::Deny),
        "allow" => Ok(FailureMode::Allow),
        _ => bail!("--failure: deny or allow"),
    }
}

/// A JSON object given on the command line, as the TOML table config.toml keeps.
fn config_table(json: Option<&str>) -> Result<Option<toml::Table>> {
    let Some(json) = json else { return Ok(None) };
    let value: serde_json::Value = serde_json::from_str(json).context("--config is not JSON")?;
    if !value.is_object() {
        bail!("--config must be a JSON object");
    }
    Ok(Some(serde_json::from_value(value).context(
        "--config cannot be kept in config.toml (nulls are not allowed)",
    )?))
}

pub async fn policy(paths: &Paths, command: PolicyCommand) -> Result<ExitCode> {
    let file = paths.config_file();
    let mut config = Config::load(&file)?;
    match command {
        PolicyCommand::Add {
            plugin,
            config: json,
            failure,
        } => {
            let path =
                std::fs::canonicalize(&plugin).with_context(|| plugin.display().to_string())?;
            let mut entry = PolicyEntry {
                path: path.clone(),
                config: config_table(json.as_deref())?,
                failure: failure_mode(&failure)?,
                sha256: None,
            };
            let bytes = std::fs::read(&path)?;
            let loaded = PolicyHost::new(Limits::default(), None)?.load(
                &bytes,
                &entry.config_json(),
                entry.failure,
                None,
            )?;
            entry.sha256 = Some(loaded.sha256.clone());
            config.policies.retain(|p| p.path != path);
            config.policies.push(entry);
            config.save(&file)?;
            println!(
                "Added policy {} ({}), sha256 {}.",
                loaded.name,
                path.display(),
                loaded.sha256
            );
            apply(paths);
        }
        PolicyCommand::List { json } => {
            let org = org::cached(&Guardrails::org_dir(paths));
            // What the daemon enforces, once it has loaded what is on disk.
            let in_force = control::call::<Reloaded>(
                &paths.control_socket(),
                &Request::Reload,
                std::time::Duration::from_secs(60),
            )
            .ok()
            .filter(|r| r.error.is_none())
            .map(|r| r.policies);
            if json {
                let all = serde_json::json!({
                    "org": org,
                    "local": config.policies,
                    "in_force": in_force,
                });
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(ExitCode::SUCCESS);
            }
            match &in_force {
                Some(names) if names.is_empty() => println!("The daemon enforces no policy."),
                Some(names) => println!("The daemon enforces, in order: {}", names.join(", ")),
                None => println!("The daemon is not running."),
            }
            if !org.is_empty() {
                println!("The org's policies (run first, as last synced from the server):");
                for (i, p) in org.iter().enumerate() {
                    println!(
                        "{}. {}  failure={:?}  sha256={}  config={}",
                        i + 1,
                        p.name,
                        p.failure,
                        p.sha256,
                        serde_json::Value::Object(p.config.clone())
                    );
                }
                println!("This machine's policies:");
            }
            if config.policies.is_empty() {
                println!("No policies. Add one with `tether policy add PLUGIN.wasm`.");
            } else {
                for (i, p) in config.policies.iter().enumerate() {
                    println!(
                        "{}. {}  failure={:?}  sha256={}  config={}",
                        i + 1,
                        p.path.display(),
                        p.failure,
                        p.sha256.as_deref().unwrap_or("-"),
                        p.config_json()
                    );
                }
            }
        }
        PolicyCommand::Remove { policy } => {
            let before = config.policies.len();
            let index = policy.parse::<usize>().ok();
            let mut n = 0;
            config.policies.retain(|p| {
                n += 1;
                !(Some(n) == index || p.path.display().to_string() == policy)
            });
            if config.policies.len() == before {
                bail!("no policy {policy:?} (a path or a number from `tether policy list`)");
            }
            config.save(&file)?;
            println!("Removed.");
            apply(paths);
        }
        PolicyCommand::Test {
            plugin,
            event,
            config: json,
            agent,
        } => {
            let agent = Agent::parse(&agent).context("--agent: claude-code or codex")?;
            let input = std::fs::read(&event).with_context(|| event.display().to_string())?;
            let Some(hook) = protocol::parse(agent, &input)? else {
                bail!("{}: an event Tether does not judge", event.display());
            };
            let entry = PolicyEntry {
                path: plugin.clone(),
                config: config_table(json.as_deref())?,
                failure: FailureMode::Deny,
                sha256: None,
            };
            let host = PolicyHost::new(Limits::default(), None)?;
            let bytes = std::fs::read(&plugin).with_context(|| plugin.display().to_string())?;
            let loaded = host.load(&bytes, &entry.config_json(), FailureMode::Deny, None)?;
            let combined = host.decide(std::slice::from_ref(&loaded), &hook);
            let answer = protocol::answer(&hook, &combined.verdict, combined.context.as_deref());
            let report = serde_json::json!({
                "policy": loaded.name,
                "sha256": loaded.sha256,
                "decisions": combined.decisions,
                "verdict": format!("{:?}", combined.verdict),
                "context": combined.context,
                "agent_answer": {
                    "exit_code": answer.exit_code,
                    "stdout": answer.stdout,
                    "stderr": answer.stderr,
                },
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Has a running daemon reload its policies now, and says what happened.
fn apply(paths: &Paths) {
    let answer = control::call::<Reloaded>(
        &paths.control_socket(),
        &Request::Reload,
        std::time::Duration::from_secs(60),
    );
    match answer {
        Ok(Reloaded {
            error: None,
            policies,
        }) => {
            println!(
                "The daemon applied it; in force now: {}",
                policies.join(", ")
            );
        }
        Ok(Reloaded { error: Some(e), .. }) => println!("The daemon could not apply it: {e}"),
        Err(ClientError::NotRunning(_)) => println!("The daemon applies it when it starts."),
        Err(e) => {
            println!("The daemon did not confirm it ({e}); it applies it within its sync interval.")
        }
    }
}
