//! `tether projects link|unlink|list`: which local checkout holds which of the org's projects.
//! The edge learns the link (so it can send this machine sessions of the project) with the
//! host's own token; the daemon finds the checkout in the local database.

use super::ProjectsCommand;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use tether::api::ApiClient;
use tether::host_auth::HostAuth;
use tether::identity::Identity;
use tether::paths::Paths;
use tether::sessions::store::Link;
use tether::state::State;

#[derive(serde::Deserialize)]
struct EdgeLink {
    project_id: String,
    project_name: String,
}

pub async fn projects(paths: &Paths, command: ProjectsCommand) -> Result<ExitCode> {
    let Some(pairing) = super::read_pairing(paths).await? else {
        bail!("this machine is not paired: run `tether pair` first");
    };
    let state = State::open(&paths.state_db()).await?;
    match command {
        ProjectsCommand::List { json } => {
            let links = state.links().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&links)?);
            } else if links.is_empty() {
                println!("No projects linked. Link a checkout with `tether projects link PATH`.");
            } else {
                for l in links {
                    println!("{:<30} {:<36} {}", l.project_name, l.project_id, l.path);
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        ProjectsCommand::Link {
            path,
            project,
            create,
        } => {
            let checkout = toplevel(&path).await?;
            let name = match project {
                Some(p) => p,
                None => checkout
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .context("name the project with --project")?,
            };
            let client = host_client(paths, &pairing).await?;
            let link: EdgeLink = client
                .post_json(
                    &format!("/v1/hosts/{}/links", pairing.host_id),
                    &serde_json::json!({
                        "project": name,
                        "path": checkout.display().to_string(),
                        "create": create,
                    }),
                )
                .await
                .map_err(|e| match e.status() {
                    Some(404) => anyhow::anyhow!(
                        "the org has no project {name:?}: pass --create to create it"
                    ),
                    _ => e.into(),
                })?;
            state
                .save_link(&Link {
                    project_id: link.project_id.clone(),
                    project_name: link.project_name.clone(),
                    path: checkout.display().to_string(),
                    linked_at: tether::state::now_ms(),
                })
                .await?;
            println!(
                "Linked {} ({}) to {}.",
                link.project_name,
                link.project_id,
                checkout.display()
            );
        }
        ProjectsCommand::Unlink { project } => {
            let links = state.links().await?;
            let Some(link) = links
                .iter()
                .find(|l| l.project_id == project || l.project_name.eq_ignore_ascii_case(&project))
            else {
                bail!("no linked project {project:?} here (see `tether projects list`)");
            };
            let client = host_client(paths, &pairing).await?;
            match client
                .delete_path(&format!(
                    "/v1/hosts/{}/links/{}",
                    pairing.host_id, link.project_id
                ))
                .await
            {
                Ok(()) => {}
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(e.into()),
            }
            state.delete_link(&link.project_id).await?;
            println!("Unlinked {}.", link.project_name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The checkout's top folder, or a clear error when `path` is not in a git repository.
async fn toplevel(path: &Path) -> Result<std::path::PathBuf> {
    let path = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
    Ok(tether::worktree::toplevel(&path).await?)
}

/// An API client carrying this host's own token.
async fn host_client(paths: &Paths, pairing: &tether::state::Pairing) -> Result<ApiClient> {
    let identity = Identity::load(&paths.key_file())?;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .build()?;
    let auth = Arc::new(HostAuth::new(
        &pairing.server,
        &pairing.host_id,
        identity,
        http,
    ));
    let token = auth.token().await?;
    Ok(ApiClient::new(&pairing.server, Some(&token))?)
}
