//! `tether policy add|list|remove|test`: the machine's guardrail policies (WebAssembly
//! components, see wasm-plugins/README.md), kept in config.toml in evaluation order.

use super::PolicyCommand;
use anyhow::{Context, Result, bail};
use std::process::ExitCode;
use tether::config::Config;
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
                "Added policy {} ({}), sha256 {}. A running daemon picks it up when restarted.",
                loaded.name,
                path.display(),
                loaded.sha256
            );
        }
        PolicyCommand::List { json } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&config.policies)?);
            } else if config.policies.is_empty() {
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
            println!("Removed. A running daemon drops it when restarted.");
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
