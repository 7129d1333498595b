//! `tether worktrees list|remove|prune|import`: the git worktrees Tether made (or was told
//! about) on this machine.

use super::WorktreesCommand;
use anyhow::Result;
use std::process::ExitCode;
use tether::paths::Paths;
use tether::state::State;
use tether::worktree::{self, Removal};

pub async fn worktrees(paths: &Paths, command: WorktreesCommand) -> Result<ExitCode> {
    let state = State::open(&paths.state_db()).await?;
    match command {
        WorktreesCommand::List { json } => {
            let list = worktree::list_all(&state).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!(
                    "No worktrees. Sessions create them; `tether worktrees import PATH` adds yours."
                );
            } else {
                for w in list {
                    let state = match (w.exists, w.dirty, w.orphan) {
                        (_, _, true) => "orphan",
                        (false, _, _) => "missing",
                        (true, Some(true), _) => "dirty",
                        _ => "clean",
                    };
                    let origin = if w.record.created_by_tether {
                        "tether"
                    } else {
                        "imported"
                    };
                    println!(
                        "{:<8} {:<9} {:<40} {}",
                        state,
                        origin,
                        w.record.branch.as_deref().unwrap_or("-"),
                        w.record.path.display()
                    );
                }
            }
        }
        WorktreesCommand::Remove { path, force } => {
            let done = worktree::remove_recorded(&state, &path, force).await?;
            let what = match done {
                Removal::Removed => "removed",
                Removal::AlreadyGone => "was already gone; its record is dropped",
                Removal::RecordOnly => {
                    "is no longer a worktree; its record is dropped, the folder left"
                }
            };
            println!("{} {what}.", path.display());
        }
        WorktreesCommand::Prune { dry_run } => {
            let pruned = worktree::prune_orphans(&state, dry_run).await?;
            let verb = if dry_run { "would prune" } else { "pruned" };
            if pruned.is_empty() {
                println!("No orphaned worktrees.");
            }
            for p in pruned {
                println!("{verb} {}", p.display());
            }
        }
        WorktreesCommand::Import { path, project } => {
            let record = worktree::import(&state, &path, project.as_deref()).await?;
            println!("Imported {}.", record.path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
