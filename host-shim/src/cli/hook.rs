//! `tether hook` (what agents run on each hook event) and `tether hooks install|uninstall|
//! status` (the entries in the agents' settings that make them run it).

use super::HooksCommand;
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::process::ExitCode;
use tether::hooks::install::{self, ChangeKind, HookState};
use tether::hooks::{Agent, client, protocol};
use tether::paths::Paths;

/// Answers the event on stdin. Never fails: whatever goes wrong is an answer too.
pub fn hook(agent: &str) -> ExitCode {
    let answer = match (Agent::parse(agent), Paths::from_env()) {
        (Some(agent), Ok(paths)) => {
            let mut input = Vec::new();
            let read = std::io::stdin()
                .lock()
                .take(protocol::MAX_INPUT as u64 + 1)
                .read_to_end(&mut input);
            match read {
                Ok(_) => {
                    let session = std::env::var("TETHER_SESSION_ID").ok();
                    client::answer(&paths, agent, session.as_deref(), &input)
                }
                Err(e) => protocol::Answer {
                    exit_code: 1,
                    stdout: String::new(),
                    stderr: format!("tether hook: reading stdin: {e}\n"),
                },
            }
        }
        (None, _) => protocol::Answer {
            exit_code: 1,
            stdout: String::new(),
            stderr: format!("tether hook: --agent {agent:?}: claude-code or codex\n"),
        },
        (_, Err(e)) => protocol::Answer {
            exit_code: 1,
            stdout: String::new(),
            stderr: format!("tether hook: {e}\n"),
        },
    };
    let _ = std::io::stdout().write_all(answer.stdout.as_bytes());
    let _ = std::io::stderr().write_all(answer.stderr.as_bytes());
    ExitCode::from(answer.exit_code)
}

/// A hook state in words.
pub fn describe(state: HookState) -> &'static str {
    match state {
        HookState::Current => "installed",
        HookState::Stale => "installed but stale (`tether hooks install` repairs it)",
        HookState::NotInstalled => "not installed",
        _ => "unknown",
    }
}

pub fn hooks(command: HooksCommand) -> Result<ExitCode> {
    let home = etcetera::home_dir().context("no home folder")?;
    let exe = std::env::current_exe().context("the path of this executable")?;
    match command {
        HooksCommand::Install | HooksCommand::Uninstall => {
            let changes = match command {
                HooksCommand::Install => install::install(&home, &exe)?,
                _ => install::uninstall(&home)?,
            };
            for c in changes {
                let what = match c.kind {
                    ChangeKind::Created => "created",
                    ChangeKind::Updated => "updated",
                    ChangeKind::Unchanged => "unchanged",
                    ChangeKind::Removed => "removed (it held nothing else)",
                    _ => "changed",
                };
                println!("{:<12} {}: {what}", c.agent.to_string(), c.path.display());
            }
        }
        HooksCommand::Status => {
            let mut all_current = true;
            for s in install::status(&home, &exe)? {
                all_current &= s.state == HookState::Current;
                println!(
                    "{:<12} {}: {}",
                    s.agent.to_string(),
                    s.path.display(),
                    describe(s.state)
                );
            }
            if !all_current {
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
