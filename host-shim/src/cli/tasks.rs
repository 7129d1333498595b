//! `tether tasks list`: the org's tasks from the daemon's mirror in the state database. No
//! network and no daemon needed: it reads what the mirror last had and says how current that is
//! (live only while a daemon keeps it so).

use super::TasksCommand;
use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::process::ExitCode;
use tether::mirror::{Mirror, Staleness, views};
use tether::paths::Paths;
use tether_durable::org::model::TaskQuery;
use tether_durable::validate::PAGE_MAX;

pub async fn tasks(paths: &Paths, command: TasksCommand) -> Result<ExitCode> {
    match command {
        TasksCommand::List {
            status,
            project,
            assignee,
            limit,
            json,
        } => {
            let filters = Filters {
                status,
                project,
                assignee,
            };
            list(paths, filters, limit, json).await
        }
    }
}

struct Filters {
    status: Option<String>,
    project: Option<String>,
    assignee: Option<String>,
}

async fn list(paths: &Paths, filters: Filters, limit: u32, json: bool) -> Result<ExitCode> {
    let running = tether::daemon::is_running(paths);
    // No state database, no mirror: say so without creating one.
    if !paths.state_db().exists() {
        print(&[], Staleness::new(None, false, 0), running, false, json);
        return Ok(ExitCode::SUCCESS);
    }
    let mirror = Mirror::open(&paths.state_db()).await?;
    let staleness = mirror
        .staleness(&["tasks", "task_statuses"])
        .await?
        .with_daemon(running);
    // A mirror of another org than the one this machine is paired with now says nothing.
    let pairing = mirror.state().pairing().await?;
    let owner = mirror.owner().await?;
    let foreign = match (&pairing, &owner) {
        (Some(p), Some(o)) => *o != tether::mirror::owner(&p.server, &p.org_id),
        _ => false,
    };
    if staleness.synced_at.is_none() || foreign {
        let staleness = Staleness::new(None, false, staleness.now);
        print(&[], staleness, running, false, json);
        return Ok(ExitCode::SUCCESS);
    }
    let mut query = TaskQuery {
        assignee_id: filters.assignee,
        ..TaskQuery::default()
    };
    if let Some(s) = filters.status {
        let Some(id) = views::find_status(&mirror, &s).await? else {
            let (statuses, _) = views::statuses(&mirror).await?;
            let names: Vec<&str> = statuses
                .iter()
                .filter_map(|s| s.get("name").and_then(Value::as_str))
                .collect();
            bail!(
                "the mirror has no status {s:?} (it has: {})",
                names.join(", ")
            );
        };
        query.status_id = Some(id);
    }
    if let Some(p) = filters.project {
        let Some(id) = views::find_project(&mirror, &p).await? else {
            bail!("the mirror has no project {p:?}");
        };
        query.project_id = Some(id);
    }

    // Pages of the API's size, newest first, until `limit`.
    let mut tasks = Vec::new();
    let mut more = false;
    let mut staleness = staleness;
    loop {
        let left = limit.saturating_sub(u32::try_from(tasks.len()).unwrap_or(u32::MAX));
        query.limit = Some(left.min(PAGE_MAX));
        let Some(page) = views::tasks(&mirror, &query).await? else {
            break;
        };
        staleness = page.staleness.with_daemon(running);
        tasks.extend(page.data);
        match page.next_cursor {
            Some(c) if tasks.len() < usize::try_from(limit).unwrap_or(usize::MAX) => {
                query.cursor = Some(c);
            }
            Some(_) => {
                more = true;
                break;
            }
            None => break,
        }
    }
    print(&tasks, staleness, running, more, json);
    Ok(ExitCode::SUCCESS)
}

fn print(tasks: &[Value], staleness: Staleness, running: bool, more: bool, json: bool) {
    if json {
        let out = json!({"tasks": tasks, "mirror": staleness.to_json()});
        // Plain JSON values always serialise.
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return;
    }
    println!("{}", staleness.describe(running));
    if staleness.synced_at.is_none() {
        return;
    }
    if tasks.is_empty() {
        println!("No tasks.");
        return;
    }
    let text = |t: &Value, path: &[&str]| {
        path.iter()
            .try_fold(t, |v, k| v.get(k))
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned()
    };
    let rows: Vec<[String; 4]> = tasks
        .iter()
        .map(|t| {
            [
                text(t, &["slug"]),
                text(t, &["status", "name"]),
                text(t, &["priority"]),
                text(t, &["title"]),
            ]
        })
        .collect();
    let header = ["SLUG", "STATUS", "PRIORITY", "TITLE"].map(str::to_owned);
    let mut widths = [0usize; 3];
    for r in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let [a, b, c] = widths;
    for [slug, status, priority, title] in std::iter::once(&header).chain(&rows) {
        println!("{slug:<a$}  {status:<b$}  {priority:<c$}  {title}");
    }
    if more {
        println!("(the newest {} shown; --limit shows more)", tasks.len());
    }
}
