//! Git worktrees for agent sessions: each session can work in its own linked worktree on its own
//! branch, so agents never trample the developer's checkout or each other.
//!
//! Three layers:
//! - Plain git operations ([`create`], [`list`], [`is_dirty`], [`remove`], [`prune`],
//!   [`worktree_checkout`], [`current_branch`]) and naming ([`slug`], [`branch_name`]). Every
//!   git call is `git -C <dir> ...` with explicit arguments (never a shell), stdin closed,
//!   `GIT_TERMINAL_PROMPT=0`, a deadline ([`GIT_TIMEOUT`]), and stderr kept for the error.
//! - Records in the state database (`worktrees` table): which worktrees Tether created or the
//!   user imported ([`WorktreeRecord`], the `State` methods below).
//! - The operations the CLI and the daemon call, which combine both: [`create_and_record`],
//!   [`list_all`], [`remove_recorded`], [`prune_orphans`], [`import`].
//!
//! Safety rules: the main checkout is never removed; a worktree with changes is only removed
//! with `force`; branches are never deleted (they hold the agent's commits); and
//! [`prune_orphans`] only ever deletes a directory Tether created itself and git has forgotten.

use crate::state::State;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The deadline of one git call.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The deadline of `git worktree add`, which checks out the whole tree.
pub const ADD_TIMEOUT: Duration = Duration::from_secs(600);
/// Every branch Tether names starts with this.
pub const BRANCH_PREFIX: &str = "tether/";

/// Environment variables that would point git at another repository than `-C`'s.
const GIT_LOCATION_VARS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
];

/// What went wrong with a worktree. The messages are shown to users as is (a session's failure
/// reason, the CLI's error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorktreeError {
    /// The checkout given is not in a git repository.
    #[error("{} is not inside a git repository", .0.display())]
    NotARepo(PathBuf),

    /// The new branch already exists.
    #[error("worktree conflict: branch {0} already exists")]
    BranchExists(String),

    /// Something is already at the worktree's path.
    #[error("worktree conflict: {} already exists", .0.display())]
    PathExists(PathBuf),

    /// The base names no commit.
    #[error("base {0:?} not found: no branch, tag or commit has that name in the checkout")]
    BaseNotFound(String),

    /// git would not accept the branch name.
    #[error("{0:?} is not a valid branch name")]
    InvalidBranch(String),

    /// The worktree's directory name must be one plain path component.
    #[error("{0:?} is not a valid worktree directory name")]
    InvalidDirName(String),

    /// Removing it would lose changes; needs `force`.
    #[error(
        "{} has uncommitted changes or untracked files; use --force to remove it anyway",
        .0.display()
    )]
    Dirty(PathBuf),

    /// The path is not a worktree git knows.
    #[error("{} is not a git worktree", .0.display())]
    NotAWorktree(PathBuf),

    /// Tether never removes or adopts a repository's main working tree.
    #[error("{} is a repository's main checkout, not a linked worktree", .0.display())]
    MainCheckout(PathBuf),

    /// Locked with `git worktree lock`: left alone, even with `force`.
    #[error("{} is locked; unlock it first with `git worktree unlock`", .0.display())]
    Locked(PathBuf),

    /// No `git` program to run.
    #[error("git is not installed (or not on PATH)")]
    GitMissing,

    /// git exited with an error.
    #[error("git failed {action}: {stderr}")]
    Git {
        /// What we were doing, e.g. "adding the worktree".
        action: &'static str,
        /// git's error output (its end, when long).
        stderr: String,
    },

    /// git did not finish in time (and was killed).
    #[error("git took longer than {}s {action}", .timeout.as_secs())]
    Timeout {
        action: &'static str,
        timeout: Duration,
    },

    /// A file system operation failed.
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The state database failed.
    #[error(transparent)]
    State(#[from] crate::Error),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WorktreeError {
    let path = path.to_owned();
    move |source| WorktreeError::Io {
        action,
        path,
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Running git

/// A finished git call.
struct GitOutput {
    success: bool,
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl GitOutput {
    fn stdout_line(&self) -> &[u8] {
        let mut out = self.stdout.as_slice();
        while let Some(rest) = out.strip_suffix(b"\n").or_else(|| out.strip_suffix(b"\r")) {
            out = rest;
        }
        out
    }
}

/// Runs `git -C dir args...` and waits for it (at most `timeout`).
async fn run_git<I, S>(
    dir: &Path,
    args: I,
    action: &'static str,
    timeout: Duration,
) -> Result<GitOutput, WorktreeError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("GIT_TERMINAL_PROMPT", "0")
        // Reading status must not take the index lock an agent's own git may want.
        .env("GIT_OPTIONAL_LOCKS", "0")
        // Errors are recognised (and shown) in English.
        .env("LC_ALL", "C")
        .kill_on_drop(true);
    for var in GIT_LOCATION_VARS {
        cmd.env_remove(var);
    }
    let out = match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => return Err(WorktreeError::Timeout { action, timeout }),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(WorktreeError::GitMissing);
        }
        Ok(Err(source)) => {
            return Err(WorktreeError::Io {
                action: "running git in",
                path: dir.to_owned(),
                source,
            });
        }
        Ok(Ok(out)) => out,
    };
    Ok(GitOutput {
        success: out.status.success(),
        code: out.status.code(),
        stdout: out.stdout,
        stderr: tail(&String::from_utf8_lossy(&out.stderr)),
    })
}

/// Like [`run_git`] with [`GIT_TIMEOUT`], failing on a non-zero exit.
async fn git<I, S>(dir: &Path, args: I, action: &'static str) -> Result<GitOutput, WorktreeError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = run_git(dir, args, action, GIT_TIMEOUT).await?;
    if out.success {
        Ok(out)
    } else {
        Err(failed(dir, action, out))
    }
}

/// The error for a failed call: "not a repository" is recognised, anything else keeps stderr.
fn failed(dir: &Path, action: &'static str, out: GitOutput) -> WorktreeError {
    if not_a_repo(&out.stderr) {
        WorktreeError::NotARepo(dir.to_owned())
    } else {
        WorktreeError::Git {
            action,
            stderr: out.stderr,
        }
    }
}

fn not_a_repo(stderr: &str) -> bool {
    stderr.contains("not a git repository")
        || stderr.contains("cannot change to")
        || stderr.contains("must be run in a work tree")
}

/// At most the last 2000 bytes of git's error output, trimmed.
fn tail(stderr: &str) -> String {
    const MAX: usize = 2000;
    let s = stderr.trim();
    let mut start = s.len().saturating_sub(MAX);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s.get(start..).unwrap_or(s).to_owned()
}

#[cfg(unix)]
fn path_from_bytes(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(OsStr::from_bytes(bytes))
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
}

/// `path` made absolute (against the current directory) and, when it exists, canonical.
fn normalize(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().map_or_else(|_| path.to_owned(), |d| d.join(path))
    }
}

fn same_path(a: &Path, b: &Path) -> bool {
    a == b || normalize(a) == normalize(b)
}

/// Whether something is at `path`. An error other than "not found" (a permission problem)
/// counts as there, so nothing is ever treated as gone when we merely cannot see it.
fn present(path: &Path) -> bool {
    !matches!(path.try_exists(), Ok(false))
}

// ---------------------------------------------------------------------------------------------
// Names

/// Where a character goes in a slug.
enum Fold {
    Keep(char),
    Text(&'static str),
    Separator,
    Drop,
}

fn fold(c: char) -> Fold {
    match c {
        'a'..='z' | '0'..='9' => Fold::Keep(c),
        'A'..='Z' => Fold::Keep(c.to_ascii_lowercase()),
        c if c.is_ascii() || c.is_whitespace() => Fold::Separator,
        'à'..='å' | 'À'..='Å' | 'ā' | 'ą' => Fold::Keep('a'),
        'æ' | 'Æ' => Fold::Text("ae"),
        'ç' | 'Ç' | 'č' | 'ć' => Fold::Keep('c'),
        'è'..='ë' | 'È'..='Ë' | 'ē' | 'ę' | 'ě' => Fold::Keep('e'),
        'ì'..='ï' | 'Ì'..='Ï' => Fold::Keep('i'),
        'ñ' | 'Ñ' | 'ń' | 'ň' => Fold::Keep('n'),
        'ò'..='ö' | 'Ò'..='Ö' | 'ø' | 'Ø' | 'ő' => Fold::Keep('o'),
        'œ' | 'Œ' => Fold::Text("oe"),
        'ù'..='ü' | 'Ù'..='Ü' | 'ů' | 'ű' => Fold::Keep('u'),
        'ý' | 'ÿ' | 'Ý' => Fold::Keep('y'),
        'ß' => Fold::Text("ss"),
        'ł' | 'Ł' => Fold::Keep('l'),
        'ś' | 'š' | 'Š' => Fold::Keep('s'),
        'ž' | 'ź' | 'ż' | 'Ž' => Fold::Keep('z'),
        'ř' => Fold::Keep('r'),
        c if c.is_alphanumeric() => Fold::Drop,
        _ => Fold::Separator,
    }
}

/// The slug of `text` in at most `max` bytes; empty when nothing is left.
fn slug_or_empty(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut separate = false;
    let push = |out: &mut String, s: &str, separate: &mut bool| {
        if *separate && !out.is_empty() {
            out.push('-');
        }
        *separate = false;
        out.push_str(s);
    };
    for c in text.chars() {
        match fold(c) {
            Fold::Keep(k) => push(&mut out, k.encode_utf8(&mut [0; 4]), &mut separate),
            Fold::Text(t) => push(&mut out, t, &mut separate),
            Fold::Separator => separate = true,
            Fold::Drop => {}
        }
    }
    if out.len() > max {
        // The slug is ASCII, so every byte index is a char boundary.
        let at_boundary = out.as_bytes().get(max) == Some(&b'-');
        let mut end = max;
        // Cut at the last word boundary, unless that throws away more than half.
        if !at_boundary
            && let Some(dash) = out.get(..max).and_then(|s| s.rfind('-'))
            && dash >= max / 2
        {
            end = dash;
        }
        out.truncate(end);
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// A git- and path-safe slug of `text`: lowercase ASCII letters and digits, every other run of
/// characters one `-`, no `-` at either end, at most `max` bytes (cut at a word boundary when
/// that keeps at least half). Common accented Latin letters become their base letter (`é` → `e`,
/// `ß` → `ss`); other non-ASCII letters are dropped. Never empty: `"session"` when nothing is
/// left (even if `max` is smaller).
pub fn slug(text: &str, max: usize) -> String {
    let s = slug_or_empty(text, max);
    if s.is_empty() {
        "session".to_owned()
    } else {
        s
    }
}

/// The first line of `text` with something in it.
fn first_line(text: &str) -> &str {
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or("")
}

/// The branch a session works on:
/// - with a task: `tether/<task slug>-<title slug>`, e.g. `tether/tet-12-fix-login-bug` (just
///   `tether/<task slug>` when the title has nothing sluggable);
/// - without: `tether/<prompt slug>-<last 6 letters/digits of the session id>`.
///
/// Titles and prompts count by their first non-empty line, slugged to 40 bytes. The result is
/// always a valid branch name (`git check-ref-format --branch`).
pub fn branch_name(
    task_slug: Option<&str>,
    title_or_prompt: Option<&str>,
    session_id: &str,
) -> String {
    let words = title_or_prompt
        .map(|t| slug_or_empty(first_line(t), 40))
        .filter(|s| !s.is_empty());
    if let Some(task) = task_slug
        .map(|t| slug_or_empty(t, 32))
        .filter(|s| !s.is_empty())
    {
        return match words {
            Some(words) => format!("{BRANCH_PREFIX}{task}-{words}"),
            None => format!("{BRANCH_PREFIX}{task}"),
        };
    }
    let words = words.unwrap_or_else(|| "session".to_owned());
    let id: Vec<char> = session_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let suffix: String = id.iter().skip(id.len().saturating_sub(6)).collect();
    if suffix.is_empty() {
        format!("{BRANCH_PREFIX}{words}")
    } else {
        format!("{BRANCH_PREFIX}{words}-{suffix}")
    }
}

// ---------------------------------------------------------------------------------------------
// Git operations

/// The top of the working tree containing `dir`.
pub async fn toplevel(dir: &Path) -> Result<PathBuf, WorktreeError> {
    let out = git(
        dir,
        ["rev-parse", "--show-toplevel"],
        "finding the repository",
    )
    .await?;
    let top = path_from_bytes(out.stdout_line());
    if top.as_os_str().is_empty() {
        return Err(WorktreeError::NotARepo(dir.to_owned()));
    }
    Ok(normalize(&top))
}

/// The branch checked out in `checkout` (`main`, `tether/x`); `None` when HEAD is detached.
pub async fn current_branch(checkout: &Path) -> Result<Option<String>, WorktreeError> {
    let action = "reading the current branch";
    let out = run_git(
        checkout,
        ["symbolic-ref", "--quiet", "HEAD"],
        action,
        GIT_TIMEOUT,
    )
    .await?;
    if out.success {
        let full = String::from_utf8_lossy(out.stdout_line()).into_owned();
        Ok(Some(match full.strip_prefix("refs/heads/") {
            Some(short) => short.to_owned(),
            None => full,
        }))
    } else if out.code == Some(1) && out.stderr.is_empty() {
        Ok(None)
    } else {
        Err(failed(checkout, action, out))
    }
}

/// Whether `rev` names a commit in the repository at `dir`.
async fn commit_exists(dir: &Path, rev: &str) -> Result<bool, WorktreeError> {
    let action = "resolving the base";
    let out = run_git(
        dir,
        [
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
        action,
        GIT_TIMEOUT,
    )
    .await?;
    if out.success {
        Ok(true)
    } else if out.stderr.is_empty() {
        Ok(false)
    } else {
        Err(failed(dir, action, out))
    }
}

async fn branch_exists(dir: &Path, branch: &str) -> Result<bool, WorktreeError> {
    let action = "looking up the branch";
    let out = run_git(
        dir,
        [
            "show-ref",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ],
        action,
        GIT_TIMEOUT,
    )
    .await?;
    if out.success {
        Ok(true)
    } else if out.code == Some(1) && out.stderr.is_empty() {
        Ok(false)
    } else {
        Err(failed(dir, action, out))
    }
}

async fn check_branch_name(dir: &Path, branch: &str) -> Result<(), WorktreeError> {
    // `@{-1}` and friends would be expanded by git; a leading `-` read as an option.
    if branch.is_empty() || branch.starts_with('-') || branch.contains("@{") {
        return Err(WorktreeError::InvalidBranch(branch.to_owned()));
    }
    let out = run_git(
        dir,
        ["check-ref-format", "--branch", branch],
        "checking the branch name",
        GIT_TIMEOUT,
    )
    .await?;
    if out.success {
        Ok(())
    } else {
        Err(WorktreeError::InvalidBranch(branch.to_owned()))
    }
}

/// What [`create`] makes.
#[derive(Clone, Copy, Debug)]
pub struct CreateWorktree<'a> {
    /// Any directory inside the repository (usually the project's linked checkout).
    pub checkout: &'a Path,
    /// The folder worktrees go in; created if missing.
    pub base_dir: &'a Path,
    /// The worktree's folder name inside `base_dir`: one path component.
    pub dir_name: &'a str,
    /// The new branch, e.g. from [`branch_name`].
    pub branch: &'a str,
    /// The branch, tag or commit to start from; default: the checkout's current branch, or
    /// its HEAD when detached.
    pub base: Option<&'a str>,
}

/// A checked [`CreateWorktree`].
struct Plan {
    toplevel: PathBuf,
    target: PathBuf,
    branch: String,
    base: String,
}

async fn plan(req: &CreateWorktree<'_>) -> Result<Plan, WorktreeError> {
    let toplevel = toplevel(req.checkout).await?;
    let dir_name = req.dir_name;
    let plain_component = matches!(
        Path::new(dir_name)
            .components()
            .collect::<Vec<_>>()
            .as_slice(),
        [std::path::Component::Normal(_)]
    );
    if !plain_component || dir_name.contains('/') || dir_name.contains('\0') {
        return Err(WorktreeError::InvalidDirName(dir_name.to_owned()));
    }
    let base = match req.base {
        Some(b) => b.to_owned(),
        None => current_branch(&toplevel)
            .await?
            .unwrap_or_else(|| "HEAD".to_owned()),
    };
    if base.is_empty() || base.starts_with('-') || !commit_exists(&toplevel, &base).await? {
        return Err(WorktreeError::BaseNotFound(base));
    }
    check_branch_name(&toplevel, req.branch).await?;
    if branch_exists(&toplevel, req.branch).await? {
        return Err(WorktreeError::BranchExists(req.branch.to_owned()));
    }
    let base_dir = normalize(req.base_dir);
    if std::fs::symlink_metadata(base_dir.join(dir_name)).is_ok() {
        return Err(WorktreeError::PathExists(base_dir.join(dir_name)));
    }
    std::fs::create_dir_all(&base_dir).map_err(io_err("creating", &base_dir))?;
    let base_dir = std::fs::canonicalize(&base_dir).map_err(io_err("resolving", &base_dir))?;
    let target = base_dir.join(dir_name);
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(WorktreeError::PathExists(target));
    }
    Ok(Plan {
        toplevel,
        target,
        branch: req.branch.to_owned(),
        base,
    })
}

async fn add(plan: &Plan) -> Result<PathBuf, WorktreeError> {
    let action = "adding the worktree";
    let args: Vec<&OsStr> = vec![
        "worktree".as_ref(),
        "add".as_ref(),
        "--quiet".as_ref(),
        // Never track the base: a push must not go to the base's upstream (`main`).
        "--no-track".as_ref(),
        "-b".as_ref(),
        plan.branch.as_ref(),
        "--".as_ref(),
        plan.target.as_os_str(),
        plan.base.as_ref(),
    ];
    let out = run_git(&plan.toplevel, args, action, ADD_TIMEOUT).await?;
    if !out.success {
        // Lost a race with someone else: say which conflict it was.
        if branch_exists(&plan.toplevel, &plan.branch)
            .await
            .unwrap_or(false)
        {
            return Err(WorktreeError::BranchExists(plan.branch.clone()));
        }
        if out.stderr.contains("already exists") && present(&plan.target) {
            return Err(WorktreeError::PathExists(plan.target.clone()));
        }
        return Err(failed(&plan.toplevel, action, out));
    }
    std::fs::canonicalize(&plan.target).map_err(io_err("resolving", &plan.target))
}

/// Creates the worktree `base_dir/dir_name` on the new branch `branch`, started from `base`.
/// Checks, in order: the checkout is in a git repository ([`WorktreeError::NotARepo`]), the
/// base names a commit ([`WorktreeError::BaseNotFound`]), the branch name is valid and free
/// ([`WorktreeError::BranchExists`]), the folder is free ([`WorktreeError::PathExists`]).
/// The branch does not track the base. Returns the worktree's canonical path.
pub async fn create(req: &CreateWorktree<'_>) -> Result<PathBuf, WorktreeError> {
    add(&plan(req).await?).await
}

/// One entry of `git worktree list`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorktreeInfo {
    /// As git records it (absolute).
    pub path: PathBuf,
    /// The checked-out branch without `refs/heads/`; `None` when detached (or bare).
    pub branch: Option<String>,
    /// The commit checked out; `None` in a repository without commits.
    pub head: Option<String>,
    /// HEAD is detached.
    pub detached: bool,
    /// The repository's main working tree (git lists it first).
    pub is_main: bool,
    /// A bare repository's entry (only ever the main one).
    pub bare: bool,
    /// git would prune it: its folder is gone.
    pub prunable: bool,
    /// Locked with `git worktree lock`: git refuses to remove or prune it.
    pub locked: bool,
}

/// Parses `git worktree list --porcelain`: one block per worktree, blank lines between.
fn parse_worktree_list(out: &[u8]) -> Vec<WorktreeInfo> {
    let mut list: Vec<WorktreeInfo> = Vec::new();
    let mut current: Option<WorktreeInfo> = None;
    for line in out.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            list.extend(current.take());
            continue;
        }
        let (key, value) = match line.iter().position(|b| *b == b' ') {
            Some(i) => (
                line.get(..i).unwrap_or(line),
                line.get(i + 1..).unwrap_or_default(),
            ),
            None => (line, b"".as_slice()),
        };
        if key == b"worktree" {
            list.extend(current.take());
            current = Some(WorktreeInfo {
                path: path_from_bytes(value),
                is_main: list.is_empty(),
                ..WorktreeInfo::default()
            });
            continue;
        }
        let Some(info) = current.as_mut() else {
            continue;
        };
        let text = || String::from_utf8_lossy(value).into_owned();
        match key {
            b"HEAD" => info.head = Some(text()).filter(|h| h.bytes().any(|b| b != b'0')),
            b"branch" => {
                let full = text();
                info.branch = Some(match full.strip_prefix("refs/heads/") {
                    Some(short) => short.to_owned(),
                    None => full,
                });
            }
            b"detached" => info.detached = true,
            b"bare" => info.bare = true,
            b"locked" => info.locked = true,
            b"prunable" => info.prunable = true,
            _ => {}
        }
    }
    list.extend(current);
    list
}

/// Every worktree of the repository `checkout` is in, the main one first.
pub async fn list(checkout: &Path) -> Result<Vec<WorktreeInfo>, WorktreeError> {
    let out = git(
        checkout,
        ["worktree", "list", "--porcelain"],
        "listing worktrees",
    )
    .await?;
    Ok(parse_worktree_list(&out.stdout))
}

fn find_entry<'a>(entries: &'a [WorktreeInfo], path: &Path) -> Option<&'a WorktreeInfo> {
    let wanted = normalize(path);
    entries
        .iter()
        .find(|e| e.path == path || e.path == wanted || normalize(&e.path) == wanted)
}

/// Whether the working tree at `path` has changes: modified, staged or untracked files
/// (ignored ones do not count).
pub async fn is_dirty(path: &Path) -> Result<bool, WorktreeError> {
    let out = git(
        path,
        ["status", "--porcelain", "--untracked-files=normal"],
        "reading the status",
    )
    .await?;
    Ok(!out.stdout.iter().all(u8::is_ascii_whitespace))
}

/// Removes the linked worktree at `path` from the repository of `checkout` (its folder
/// included). Refuses the main checkout ([`WorktreeError::MainCheckout`]), a path git does not
/// list ([`WorktreeError::NotAWorktree`]), a locked one, and one with changes unless `force`
/// ([`WorktreeError::Dirty`]). The branch stays.
pub async fn remove(checkout: &Path, path: &Path, force: bool) -> Result<(), WorktreeError> {
    let entries = list(checkout).await?;
    let entry =
        find_entry(&entries, path).ok_or_else(|| WorktreeError::NotAWorktree(path.to_owned()))?;
    if entry.is_main {
        return Err(WorktreeError::MainCheckout(entry.path.clone()));
    }
    if entry.locked {
        return Err(WorktreeError::Locked(entry.path.clone()));
    }
    if !force && present(&entry.path) && is_dirty(&entry.path).await? {
        return Err(WorktreeError::Dirty(entry.path.clone()));
    }
    let mut args: Vec<&OsStr> = vec!["worktree".as_ref(), "remove".as_ref()];
    if force {
        args.push("--force".as_ref());
    }
    args.push("--".as_ref());
    args.push(entry.path.as_os_str());
    git(checkout, args, "removing the worktree").await?;
    Ok(())
}

/// Makes git forget the worktree at `path`, whose folder is gone, if it still lists it. Unlike
/// `git worktree prune`, touches no other worktree of the repository.
async fn forget_missing(checkout: &Path, path: &Path) -> Result<(), WorktreeError> {
    let entries = list(checkout).await?;
    let Some(entry) = find_entry(&entries, path) else {
        return Ok(());
    };
    if entry.is_main {
        return Err(WorktreeError::MainCheckout(entry.path.clone()));
    }
    if entry.locked {
        return Err(WorktreeError::Locked(entry.path.clone()));
    }
    git(
        checkout,
        [
            "worktree".as_ref(),
            "remove".as_ref(),
            "--".as_ref(),
            entry.path.as_os_str(),
        ],
        "forgetting the worktree",
    )
    .await?;
    Ok(())
}

/// `git worktree prune`: forgets the worktrees of `checkout`'s repository whose folders are gone.
pub async fn prune(checkout: &Path) -> Result<(), WorktreeError> {
    git(checkout, ["worktree", "prune"], "pruning worktrees").await?;
    Ok(())
}

/// The main checkout of the repository the worktree at `path` belongs to (for a main checkout,
/// itself). [`WorktreeError::NotAWorktree`] when `path` is not in a git working tree.
pub async fn worktree_checkout(path: &Path) -> Result<PathBuf, WorktreeError> {
    let not_a_worktree = || WorktreeError::NotAWorktree(path.to_owned());
    if !path.is_dir() {
        return Err(not_a_worktree());
    }
    let out = match git(
        path,
        ["rev-parse", "--git-common-dir"],
        "finding the repository",
    )
    .await
    {
        Err(WorktreeError::NotARepo(_)) => return Err(not_a_worktree()),
        other => other?,
    };
    let common = path_from_bytes(out.stdout_line());
    if common.as_os_str().is_empty() {
        return Err(not_a_worktree());
    }
    let common = normalize(&path.join(common));
    if common.file_name() == Some(OsStr::new(".git"))
        && let Some(parent) = common.parent()
    {
        return Ok(parent.to_owned());
    }
    // A bare repository or a separate git dir: git knows where the main tree is.
    let entries = list(path).await?;
    entries
        .into_iter()
        .find(|e| e.is_main)
        .map(|e| normalize(&e.path))
        .ok_or_else(not_a_worktree)
}

/// Whether `dir` looks like a linked worktree git has forgotten: its `.git` is a file pointing
/// at an administrative folder that no longer exists. Only then may [`prune_orphans`] delete it.
fn forgotten_linked_worktree(dir: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return false;
    };
    if !meta.is_dir() {
        return false;
    }
    let dot_git = dir.join(".git");
    if !std::fs::symlink_metadata(&dot_git).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(&dot_git) else {
        return false;
    };
    let Some(gitdir) = text.trim().strip_prefix("gitdir:") else {
        return false;
    };
    let gitdir = dir.join(gitdir.trim());
    matches!(gitdir.try_exists(), Ok(false))
}

// ---------------------------------------------------------------------------------------------
// Records

/// A worktree Tether knows about: one row of `worktrees`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorktreeRecord {
    /// The worktree's canonical path (the key).
    pub path: PathBuf,
    /// The main checkout of its repository.
    pub checkout: PathBuf,
    /// The Tether project it belongs to.
    pub project_id: Option<String>,
    /// The branch it was created on or imported with.
    pub branch: Option<String>,
    /// The session it was created for.
    pub session_id: Option<String>,
    /// Tether created it (so may clean it up); false for imported ones, which Tether never
    /// deletes on its own.
    pub created_by_tether: bool,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// The text a path is stored as: only UTF-8 paths can be recorded.
fn path_text<'a>(path: &'a Path, action: &'static str) -> Result<&'a str, crate::Error> {
    path.to_str().ok_or_else(|| crate::Error::Io {
        action,
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the path is not valid UTF-8, which the state database cannot record",
        ),
    })
}

const RECORD_COLUMNS: &str =
    "path, checkout, project_id, branch, session_id, created_by_tether, created_at";

fn record_from_row(row: &libsql::Row) -> libsql::Result<WorktreeRecord> {
    Ok(WorktreeRecord {
        path: PathBuf::from(row.get::<String>(0)?),
        checkout: PathBuf::from(row.get::<String>(1)?),
        project_id: row.get::<Option<String>>(2)?,
        branch: row.get::<Option<String>>(3)?,
        session_id: row.get::<Option<String>>(4)?,
        created_by_tether: row.get::<i64>(5)? != 0,
        created_at: row.get::<i64>(6)?,
    })
}

impl State {
    /// Saves `record`, replacing the one with the same path.
    pub async fn record_worktree(&self, record: &WorktreeRecord) -> Result<(), crate::Error> {
        let action = "recording a worktree";
        let path = path_text(&record.path, action)?;
        let checkout = path_text(&record.checkout, action)?;
        self.conn()
            .execute(
                "INSERT INTO worktrees (path, checkout, project_id, branch, session_id,
                                        created_by_tether, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (path) DO UPDATE SET
                     checkout = excluded.checkout,
                     project_id = excluded.project_id,
                     branch = excluded.branch,
                     session_id = excluded.session_id,
                     created_by_tether = excluded.created_by_tether,
                     created_at = excluded.created_at",
                (
                    path,
                    checkout,
                    record.project_id.as_deref(),
                    record.branch.as_deref(),
                    record.session_id.as_deref(),
                    i64::from(record.created_by_tether),
                    record.created_at,
                ),
            )
            .await
            .map_err(self.err(action))?;
        Ok(())
    }

    /// Every recorded worktree, by path.
    pub async fn worktree_records(&self) -> Result<Vec<WorktreeRecord>, crate::Error> {
        let action = "reading worktrees";
        let mut rows = self
            .conn()
            .query(
                &format!("SELECT {RECORD_COLUMNS} FROM worktrees ORDER BY path"),
                (),
            )
            .await
            .map_err(self.err(action))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await.map_err(self.err(action))? {
            out.push(record_from_row(&row).map_err(self.err(action))?);
        }
        Ok(out)
    }

    /// The record of the worktree at `path` (as recorded: canonical).
    pub async fn worktree_record(
        &self,
        path: &Path,
    ) -> Result<Option<WorktreeRecord>, crate::Error> {
        let action = "reading a worktree";
        let Some(text) = path.to_str() else {
            return Ok(None);
        };
        let mut rows = self
            .conn()
            .query(
                &format!("SELECT {RECORD_COLUMNS} FROM worktrees WHERE path = ?1"),
                [text],
            )
            .await
            .map_err(self.err(action))?;
        match rows.next().await.map_err(self.err(action))? {
            Some(row) => Ok(Some(record_from_row(&row).map_err(self.err(action))?)),
            None => Ok(None),
        }
    }

    /// Forgets the record of `path`. Returns whether there was one.
    pub async fn delete_worktree_record(&self, path: &Path) -> Result<bool, crate::Error> {
        let Some(text) = path.to_str() else {
            return Ok(false);
        };
        let n = self
            .conn()
            .execute("DELETE FROM worktrees WHERE path = ?1", [text])
            .await
            .map_err(self.err("forgetting a worktree"))?;
        Ok(n > 0)
    }
}

/// The record of `path` under its canonical name, or as given (made absolute) when it is gone.
async fn find_record(state: &State, path: &Path) -> Result<Option<WorktreeRecord>, crate::Error> {
    let normal = normalize(path);
    if let Some(r) = state.worktree_record(&normal).await? {
        return Ok(Some(r));
    }
    if normal != path {
        return state.worktree_record(path).await;
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// The operations the CLI and the daemon use

/// [`create`], recorded as created by Tether for `project_id` and `session_id`. The record is
/// written before git runs, so a crash in between leaves a record whose folder is missing,
/// which [`prune_orphans`] cleans up, never an unrecorded worktree; it is dropped again when
/// git fails.
pub async fn create_and_record(
    state: &State,
    req: &CreateWorktree<'_>,
    project_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<WorktreeRecord, WorktreeError> {
    let plan = plan(req).await?;
    if state.worktree_record(&plan.target).await?.is_some() {
        return Err(WorktreeError::PathExists(plan.target));
    }
    let record = WorktreeRecord {
        path: plan.target.clone(),
        checkout: worktree_checkout(&plan.toplevel).await?,
        project_id: project_id.map(str::to_owned),
        branch: Some(plan.branch.clone()),
        session_id: session_id.map(str::to_owned),
        created_by_tether: true,
        created_at: crate::state::now_ms(),
    };
    state.record_worktree(&record).await?;
    match add(&plan).await {
        Ok(path) if path == record.path => Ok(record),
        Ok(path) => {
            // Only if the folder resolved differently after creation (a racing symlink).
            state.delete_worktree_record(&record.path).await?;
            let record = WorktreeRecord { path, ..record };
            state.record_worktree(&record).await?;
            Ok(record)
        }
        Err(e) => {
            if let Err(db) = state.delete_worktree_record(&record.path).await {
                tracing::warn!(path = %record.path.display(), error = %db, "could not drop the record of a failed worktree");
            }
            Err(e)
        }
    }
}

/// A recorded worktree with what git and the disk say about it now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorktreeStatus {
    /// What is recorded (serialised inline).
    #[serde(flatten)]
    pub record: WorktreeRecord,
    /// Its folder is there.
    pub exists: bool,
    /// `git worktree list` in its checkout shows it; `None` when that could not be asked (the
    /// checkout is gone, git failed: see `problem`).
    pub listed: Option<bool>,
    /// Uncommitted changes or untracked files; `None` when it does not exist or git failed.
    pub dirty: Option<bool>,
    /// The branch checked out there now, per git.
    pub current_branch: Option<String>,
    /// Created by Tether more than [`ADD_TIMEOUT`] ago (so not being created right now), and
    /// its folder is gone or git no longer lists it: what [`prune_orphans`] cleans up.
    pub orphan: bool,
    /// Why a fact is missing, for display.
    pub problem: Option<String>,
}

async fn status_of(record: WorktreeRecord) -> WorktreeStatus {
    let exists = present(&record.path);
    let mut problem = None;
    let mut listed = None;
    let mut current_branch = None;
    if !exists_dir(&record.checkout) {
        problem = Some(format!(
            "its checkout {} is gone",
            record.checkout.display()
        ));
    } else {
        match list(&record.checkout).await {
            Ok(entries) => {
                let entry = find_entry(&entries, &record.path);
                listed = Some(entry.is_some());
                current_branch = entry.and_then(|e| e.branch.clone());
            }
            Err(e) => problem = Some(e.to_string()),
        }
    }
    let mut dirty = None;
    if exists && listed != Some(false) {
        match is_dirty(&record.path).await {
            Ok(d) => dirty = Some(d),
            Err(e) => problem = problem.or_else(|| Some(e.to_string())),
        }
    }
    // A worktree being created right now looks like an orphan for a moment (the record is
    // written first): give `git worktree add` its whole deadline before judging.
    let grace_ms = i64::try_from(ADD_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
    let settled = crate::state::now_ms().saturating_sub(record.created_at) > grace_ms;
    let orphan = record.created_by_tether && settled && (!exists || listed == Some(false));
    WorktreeStatus {
        record,
        exists,
        listed,
        dirty,
        current_branch,
        orphan,
        problem,
    }
}

fn exists_dir(path: &Path) -> bool {
    path.is_dir()
}

/// Every recorded worktree with its live facts. Git failing for one worktree shows in its
/// `problem`; only the database failing fails the call.
pub async fn list_all(state: &State) -> Result<Vec<WorktreeStatus>, crate::Error> {
    let mut out = Vec::new();
    for record in state.worktree_records().await? {
        out.push(status_of(record).await);
    }
    Ok(out)
}

/// What [`remove_recorded`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Removal {
    /// git removed the worktree and its folder; its record (if any) is dropped.
    Removed,
    /// The folder was already gone: git's leftovers pruned, the record dropped.
    AlreadyGone,
    /// git no longer knew the folder: only the record was dropped and the folder left as is.
    RecordOnly,
}

/// Removes the worktree at `path` (the user's explicit request) and its record.
///
/// - A worktree git knows is removed through [`remove`], with its refusals (main checkout,
///   locked, changes without `force`), whether or not Tether has a record of it: an unrecorded
///   linked worktree is removed too.
/// - A recorded path whose folder is gone: its checkout is pruned and the record dropped.
/// - A recorded folder git no longer knows: only the record is dropped; the folder is left.
/// - Anything else is [`WorktreeError::NotAWorktree`].
///
/// The branch is never deleted.
pub async fn remove_recorded(
    state: &State,
    path: &Path,
    force: bool,
) -> Result<Removal, WorktreeError> {
    let record = find_record(state, path).await?;
    let path = normalize(path);
    if !present(&path) {
        let Some(record) = record else {
            return Err(WorktreeError::NotAWorktree(path));
        };
        if exists_dir(&record.checkout) {
            forget_missing(&record.checkout, &record.path).await?;
        }
        state.delete_worktree_record(&record.path).await?;
        return Ok(Removal::AlreadyGone);
    }
    let checkout = match (worktree_checkout(&path).await, &record) {
        (Ok(c), _) => c,
        (Err(WorktreeError::NotAWorktree(_)), Some(record)) => {
            state.delete_worktree_record(&record.path).await?;
            return Ok(Removal::RecordOnly);
        }
        (Err(e), _) => return Err(e),
    };
    remove(&checkout, &path, force).await?;
    if let Some(record) = record {
        state.delete_worktree_record(&record.path).await?;
    }
    Ok(Removal::Removed)
}

/// Cleans up the worktrees Tether created that are orphans (folder gone, or git no longer lists
/// them; see [`WorktreeStatus::orphan`]): prunes their checkout's worktree list, deletes a
/// leftover folder only when it is still a linked worktree whose git administrative folder is
/// gone, and drops the records. Imported worktrees and unrecorded ones are never touched, and
/// neither is a worktree whose checkout is gone while its folder remains. Returns the paths
/// cleaned up, or with `dry_run` those it would clean up, changing nothing.
pub async fn prune_orphans(state: &State, dry_run: bool) -> Result<Vec<PathBuf>, WorktreeError> {
    let mut pruned = Vec::new();
    for record in state.worktree_records().await? {
        if !record.created_by_tether {
            continue;
        }
        let status = status_of(record).await;
        if !status.orphan {
            continue;
        }
        if dry_run {
            pruned.push(status.record.path);
            continue;
        }
        let record = &status.record;
        if exists_dir(&record.checkout)
            && !status.exists
            && let Err(e) = forget_missing(&record.checkout, &record.path).await
        {
            tracing::warn!(path = %record.path.display(), error = %e, "not pruning a worktree: git would not forget it");
            continue;
        }
        if present(&record.path) {
            // Ask again right before deleting anything.
            let still_listed = match list(&record.checkout).await {
                Ok(entries) => find_entry(&entries, &record.path).is_some(),
                Err(e) => {
                    tracing::warn!(path = %record.path.display(), error = %e, "not pruning a worktree: cannot list its checkout");
                    continue;
                }
            };
            if still_listed {
                continue;
            }
            if forgotten_linked_worktree(&record.path) {
                std::fs::remove_dir_all(&record.path).map_err(io_err("deleting", &record.path))?;
            } else {
                tracing::warn!(path = %record.path.display(), "leaving a folder that is no longer a worktree; dropping its record");
            }
        }
        state.delete_worktree_record(&record.path).await?;
        pruned.push(status.record.path);
    }
    Ok(pruned)
}

/// Records an existing linked worktree (one made outside Tether) for `project_id`, as not
/// created by Tether, so it is listed but never cleaned up automatically. `path` may be any
/// folder inside it; the worktree's top is recorded. Refuses a folder outside git
/// ([`WorktreeError::NotAWorktree`]) and a main checkout ([`WorktreeError::MainCheckout`]).
/// Importing a path already recorded keeps its record (and who created it), updating the
/// branch and, when given, the project.
pub async fn import(
    state: &State,
    path: &Path,
    project_id: Option<&str>,
) -> Result<WorktreeRecord, WorktreeError> {
    let path = normalize(path);
    if !path.is_dir() {
        return Err(WorktreeError::NotAWorktree(path));
    }
    let top = match toplevel(&path).await {
        Err(WorktreeError::NotARepo(_)) => return Err(WorktreeError::NotAWorktree(path)),
        other => other?,
    };
    let checkout = worktree_checkout(&top).await?;
    let entries = list(&checkout).await?;
    let entry =
        find_entry(&entries, &top).ok_or_else(|| WorktreeError::NotAWorktree(top.clone()))?;
    if entry.is_main || same_path(&top, &checkout) {
        return Err(WorktreeError::MainCheckout(top));
    }
    let record = match state.worktree_record(&top).await? {
        Some(existing) => WorktreeRecord {
            checkout,
            project_id: project_id
                .map(str::to_owned)
                .or_else(|| existing.project_id.clone()),
            branch: entry.branch.clone(),
            ..existing
        },
        None => WorktreeRecord {
            path: top,
            checkout,
            project_id: project_id.map(str::to_owned),
            branch: entry.branch.clone(),
            session_id: None,
            created_by_tether: false,
            created_at: crate::state::now_ms(),
        },
    };
    state.record_worktree(&record).await?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]
    use super::*;
    use std::process::Command;

    /// Runs git for test setup, isolated from the machine's git config.
    fn sh_git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.email=test@example.com", "-c", "user.name=Test"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A temp folder holding a repository `repo` on `main` with one commit, and a `feature`
    /// branch one commit ahead.
    struct Fixture {
        dir: tempfile::TempDir,
        repo: PathBuf,
        main_head: String,
        feature_head: String,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let repo = root.join("repo");
        std::fs::create_dir(&repo).unwrap();
        sh_git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README"), "hello\n").unwrap();
        sh_git(&repo, &["add", "README"]);
        sh_git(&repo, &["commit", "-q", "-m", "init"]);
        let main_head = sh_git(&repo, &["rev-parse", "HEAD"]);
        sh_git(&repo, &["checkout", "-q", "-b", "feature"]);
        std::fs::write(repo.join("feature.txt"), "f\n").unwrap();
        sh_git(&repo, &["add", "feature.txt"]);
        sh_git(&repo, &["commit", "-q", "-m", "feature"]);
        let feature_head = sh_git(&repo, &["rev-parse", "HEAD"]);
        sh_git(&repo, &["checkout", "-q", "main"]);
        Fixture {
            dir,
            repo,
            main_head,
            feature_head,
        }
    }

    impl Fixture {
        fn root(&self) -> PathBuf {
            std::fs::canonicalize(self.dir.path()).unwrap()
        }
        fn base_dir(&self) -> PathBuf {
            self.root().join("worktrees")
        }
        fn req<'a>(
            &'a self,
            base_dir: &'a Path,
            name: &'a str,
            branch: &'a str,
        ) -> CreateWorktree<'a> {
            CreateWorktree {
                checkout: &self.repo,
                base_dir,
                dir_name: name,
                branch,
                base: None,
            }
        }
    }

    /// Makes every record old enough to be judged an orphan.
    async fn age_records(state: &State) {
        for mut r in state.worktree_records().await.unwrap() {
            r.created_at = 0;
            state.record_worktree(&r).await.unwrap();
        }
    }

    fn check_ref_format(branch: &str) -> bool {
        Command::new("git")
            .args(["check-ref-format", "--branch", branch])
            .output()
            .unwrap()
            .status
            .success()
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("Fix the Login bug!", 40), "fix-the-login-bug");
        assert_eq!(slug("", 40), "session");
        assert_eq!(slug("  --!!?? ..//  ", 40), "session");
        assert_eq!(slug("日本語", 40), "session");
        assert_eq!(slug("Café déjà vu — straße", 40), "cafe-deja-vu-strasse");
        assert_eq!(slug("naïve 日本 test", 40), "naive-test");
        assert_eq!(slug("a..b@{c}~^:?*[d\\e", 40), "a-b-c-d-e");
        assert_eq!(slug("HEAD.lock", 40), "head-lock");
        assert_eq!(slug("tab\tnew\nline", 40), "tab-new-line");
        // Cut at a word boundary...
        assert_eq!(slug("alpha beta gamma delta", 12), "alpha-beta");
        assert_eq!(slug("alpha beta gamma", 10), "alpha-beta");
        // ...unless that would throw away more than half.
        assert_eq!(slug("a bcdefghijklmnop", 10), "a-bcdefghi");
        assert_eq!(slug("abcdefghijklmnopqrstuvwxyz", 5), "abcde");
        let long = "word ".repeat(1000);
        let s = slug(&long, 40);
        assert!(
            s.len() <= 40 && !s.ends_with('-') && s.starts_with("word-word"),
            "{s}"
        );
        assert_eq!(slug("anything", 0), "session");
    }

    #[test]
    fn branch_names() {
        assert_eq!(
            branch_name(Some("TET-12"), Some("Fix login bug"), "ses_0123456789"),
            "tether/tet-12-fix-login-bug"
        );
        assert_eq!(branch_name(Some("TET-12"), None, "x"), "tether/tet-12");
        assert_eq!(
            branch_name(Some("TET-12"), Some("!!!"), "x"),
            "tether/tet-12"
        );
        assert_eq!(
            branch_name(
                None,
                Some("\n\n  Refactor the API\nsecond line"),
                "ses_01HXYZABCDEF"
            ),
            "tether/refactor-the-api-abcdef"
        );
        assert_eq!(branch_name(None, None, "ab"), "tether/session-ab");
        assert_eq!(branch_name(None, None, "--"), "tether/session");
        assert_eq!(
            branch_name(Some("::"), Some("x"), "id1234"),
            "tether/x-id1234"
        );

        let nasty = [
            "",
            "..",
            ".lock",
            "x.lock",
            "@{-1}",
            "@",
            "-rf /",
            "a//b",
            "/leading/slash/",
            "trailing.",
            "HEAD",
            "refs/heads/main",
            "$(rm -rf /)",
            "with space and\ttab",
            "ctl\u{1}\u{7f}chars",
            "~^:?*[\\",
            "日本語のタイトル",
            "é",
            &"very long words ".repeat(50),
        ];
        for task in [None, Some("TET-7"), Some("..."), Some("@{u}")] {
            for text in nasty {
                for id in ["ses_ABC", "", "../..", "12345678"] {
                    let b = branch_name(task, Some(text), id);
                    assert!(b.starts_with(BRANCH_PREFIX), "{b}");
                    assert!(check_ref_format(&b), "{task:?} {text:?} {id:?} -> {b:?}");
                    assert!(b.len() <= BRANCH_PREFIX.len() + 32 + 1 + 40 + 1 + 6, "{b}");
                }
            }
        }
    }

    #[test]
    fn parses_porcelain() {
        let out = b"worktree /r\nHEAD aaaa\nbranch refs/heads/main\n\n\
worktree /w/one two\nHEAD bbbb\ndetached\nlocked be careful\n\n\
worktree /w/gone\nHEAD 0000000000000000000000000000000000000000\nbranch refs/heads/tether/x\nprunable gitdir file points to non-existent location\n\n";
        let list = parse_worktree_list(out);
        assert_eq!(list.len(), 3);
        assert_eq!(
            list[0],
            WorktreeInfo {
                path: "/r".into(),
                branch: Some("main".into()),
                head: Some("aaaa".into()),
                is_main: true,
                ..WorktreeInfo::default()
            }
        );
        assert_eq!(list[1].path, Path::new("/w/one two"));
        assert!(list[1].detached && list[1].locked && !list[1].is_main);
        assert_eq!(list[1].branch, None);
        assert_eq!(list[2].branch.as_deref(), Some("tether/x"));
        assert_eq!(list[2].head, None);
        assert!(list[2].prunable);
        let bare = parse_worktree_list(b"worktree /b.git\nbare\n");
        assert!(bare[0].bare && bare[0].is_main);
    }

    #[tokio::test]
    async fn creates_lists_and_removes() {
        let f = fixture();
        let base = f.base_dir();
        assert_eq!(
            current_branch(&f.repo).await.unwrap().as_deref(),
            Some("main")
        );

        // From the current branch by default.
        let wt = create(&f.req(&base, "one", "tether/one")).await.unwrap();
        assert_eq!(wt, base.join("one"));
        assert_eq!(
            current_branch(&wt).await.unwrap().as_deref(),
            Some("tether/one")
        );
        assert_eq!(sh_git(&wt, &["rev-parse", "HEAD"]), f.main_head);
        // No upstream: a push never goes to the base's.
        let upstream = Command::new("git")
            .args([
                "-C",
                wt.to_str().unwrap(),
                "rev-parse",
                "--abbrev-ref",
                "@{u}",
            ])
            .output()
            .unwrap();
        assert!(!upstream.status.success());

        // From a chosen base, and from a subfolder of the checkout.
        std::fs::create_dir(f.repo.join("sub")).unwrap();
        let sub = f.repo.join("sub");
        let two = create(&CreateWorktree {
            checkout: &sub,
            base: Some("feature"),
            ..f.req(&base, "two", "tether/two")
        })
        .await
        .unwrap();
        assert_eq!(sh_git(&two, &["rev-parse", "HEAD"]), f.feature_head);
        assert!(two.join("feature.txt").exists());

        let entries = list(&f.repo).await.unwrap();
        assert_eq!(entries.len(), 3);
        let main = entries.iter().find(|e| e.is_main).unwrap();
        assert_eq!(main.path, f.repo);
        assert_eq!(main.branch.as_deref(), Some("main"));
        let one = find_entry(&entries, &wt).unwrap();
        assert_eq!(one.branch.as_deref(), Some("tether/one"));
        assert_eq!(one.head.as_deref(), Some(f.main_head.as_str()));
        assert!(!one.is_main && !one.detached && !one.locked && !one.prunable);

        assert_eq!(worktree_checkout(&wt).await.unwrap(), f.repo);
        assert_eq!(worktree_checkout(&f.repo).await.unwrap(), f.repo);
        assert_eq!(worktree_checkout(&sub).await.unwrap(), f.repo);
        let plain = f.root().join("plain");
        std::fs::create_dir(&plain).unwrap();
        assert!(matches!(
            worktree_checkout(&plain).await,
            Err(WorktreeError::NotAWorktree(_))
        ));

        // Clean: removed without force; the branch stays.
        remove(&f.repo, &wt, false).await.unwrap();
        assert!(!wt.exists());
        assert_eq!(list(&f.repo).await.unwrap().len(), 2);
        assert_eq!(
            sh_git(&f.repo, &["branch", "--list", "tether/one"]),
            "tether/one"
        );

        // The main checkout is never removed, even with force.
        let e = remove(&f.repo, &f.repo, true).await.unwrap_err();
        assert!(matches!(e, WorktreeError::MainCheckout(_)), "{e}");
        let e = remove(&f.repo, &plain, true).await.unwrap_err();
        assert!(matches!(e, WorktreeError::NotAWorktree(_)), "{e}");
        assert!(plain.exists());
    }

    #[tokio::test]
    async fn detached_checkout_bases_on_head() {
        let f = fixture();
        sh_git(&f.repo, &["checkout", "-q", "--detach", "feature"]);
        assert_eq!(current_branch(&f.repo).await.unwrap(), None);
        let base = f.base_dir();
        let wt = create(&f.req(&base, "d", "tether/d")).await.unwrap();
        assert_eq!(sh_git(&wt, &["rev-parse", "HEAD"]), f.feature_head);
    }

    #[tokio::test]
    async fn conflicts_and_bad_input() {
        let f = fixture();
        let base = f.base_dir();
        create(&f.req(&base, "one", "tether/one")).await.unwrap();

        let e = create(&f.req(&base, "other", "tether/one"))
            .await
            .unwrap_err();
        assert!(matches!(e, WorktreeError::BranchExists(_)), "{e}");
        assert_eq!(
            e.to_string(),
            "worktree conflict: branch tether/one already exists"
        );
        let e = create(&f.req(&base, "x", "feature")).await.unwrap_err();
        assert!(matches!(e, WorktreeError::BranchExists(_)), "{e}");

        let e = create(&f.req(&base, "one", "tether/new"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, WorktreeError::PathExists(ref p) if *p == base.join("one")),
            "{e}"
        );
        assert!(e.to_string().starts_with("worktree conflict: "), "{e}");
        std::fs::write(base.join("file"), "").unwrap();
        let e = create(&f.req(&base, "file", "tether/new"))
            .await
            .unwrap_err();
        assert!(matches!(e, WorktreeError::PathExists(_)), "{e}");

        for bad in ["nope", "-b", "", "main~5"] {
            let e = create(&CreateWorktree {
                base: Some(bad),
                ..f.req(&base, "b", "tether/b")
            })
            .await
            .unwrap_err();
            assert!(matches!(e, WorktreeError::BaseNotFound(_)), "{bad}: {e}");
        }
        // A tag or a commit works as a base.
        sh_git(&f.repo, &["tag", "v1", "feature"]);
        let t = create(&CreateWorktree {
            base: Some("v1"),
            ..f.req(&base, "t", "tether/t")
        })
        .await
        .unwrap();
        assert_eq!(sh_git(&t, &["rev-parse", "HEAD"]), f.feature_head);

        for bad in ["", "..", "a/b", ".", "/abs"] {
            let e = create(&f.req(&base, bad, "tether/d")).await.unwrap_err();
            assert!(
                matches!(e, WorktreeError::InvalidDirName(_)),
                "{bad:?}: {e}"
            );
        }
        for bad in ["bad..name", "-x", "@{-1}", "a b", "x.lock", ""] {
            let e = create(&f.req(&base, "n", bad)).await.unwrap_err();
            assert!(matches!(e, WorktreeError::InvalidBranch(_)), "{bad:?}: {e}");
        }

        let plain = f.root().join("plain");
        std::fs::create_dir(&plain).unwrap();
        let e = create(&CreateWorktree {
            checkout: &plain,
            ..f.req(&base, "p", "tether/p")
        })
        .await
        .unwrap_err();
        assert!(matches!(e, WorktreeError::NotARepo(_)), "{e}");
        let e = current_branch(&plain).await.unwrap_err();
        assert!(matches!(e, WorktreeError::NotARepo(_)), "{e}");

        // Nothing half-made: the failed attempts left no worktrees behind.
        assert_eq!(list(&f.repo).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn dirty_worktrees_need_force() {
        let f = fixture();
        let base = f.base_dir();
        let wt = create(&f.req(&base, "w", "tether/w")).await.unwrap();
        assert!(!is_dirty(&wt).await.unwrap());

        // Ignored files do not count.
        std::fs::write(f.repo.join(".git/info/exclude"), "*.log\n").unwrap();
        std::fs::write(wt.join("build.log"), "x").unwrap();
        assert!(!is_dirty(&wt).await.unwrap());

        std::fs::write(wt.join("README"), "changed\n").unwrap();
        assert!(is_dirty(&wt).await.unwrap());
        sh_git(&wt, &["checkout", "--", "README"]);
        assert!(!is_dirty(&wt).await.unwrap());

        std::fs::create_dir(wt.join("new")).unwrap();
        std::fs::write(wt.join("new/untracked.txt"), "x").unwrap();
        assert!(is_dirty(&wt).await.unwrap());

        let e = remove(&f.repo, &wt, false).await.unwrap_err();
        assert!(matches!(e, WorktreeError::Dirty(_)), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        assert!(wt.join("new/untracked.txt").exists());

        remove(&f.repo, &wt, true).await.unwrap();
        assert!(!wt.exists());
        assert_eq!(list(&f.repo).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn locked_worktrees_are_refused() {
        let f = fixture();
        let base = f.base_dir();
        let wt = create(&f.req(&base, "l", "tether/l")).await.unwrap();
        sh_git(&f.repo, &["worktree", "lock", wt.to_str().unwrap()]);
        assert!(list(&f.repo).await.unwrap().iter().any(|e| e.locked));
        let e = remove(&f.repo, &wt, true).await.unwrap_err();
        assert!(matches!(e, WorktreeError::Locked(_)), "{e}");
        assert!(wt.exists());
    }

    #[tokio::test]
    async fn records_round_trip() {
        let state = State::open_in_memory().await.unwrap();
        assert!(state.worktree_records().await.unwrap().is_empty());
        let mut r = WorktreeRecord {
            path: "/w/a".into(),
            checkout: "/r".into(),
            project_id: Some("prj_1".into()),
            branch: Some("tether/a".into()),
            session_id: None,
            created_by_tether: true,
            created_at: 42,
        };
        state.record_worktree(&r).await.unwrap();
        assert_eq!(
            state.worktree_record(Path::new("/w/a")).await.unwrap(),
            Some(r.clone())
        );
        r.session_id = Some("ses_1".into());
        r.created_by_tether = false;
        state.record_worktree(&r).await.unwrap();
        let b = WorktreeRecord {
            path: "/w/b".into(),
            project_id: None,
            branch: None,
            ..r.clone()
        };
        state.record_worktree(&b).await.unwrap();
        assert_eq!(state.worktree_records().await.unwrap(), [r.clone(), b]);
        assert!(
            state
                .delete_worktree_record(Path::new("/w/a"))
                .await
                .unwrap()
        );
        assert!(
            !state
                .delete_worktree_record(Path::new("/w/a"))
                .await
                .unwrap()
        );
        assert_eq!(
            state.worktree_record(Path::new("/w/a")).await.unwrap(),
            None
        );
        assert_eq!(state.worktree_records().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn recorded_lifecycle_and_prune() {
        let f = fixture();
        let base = f.base_dir();
        let state = State::open_in_memory().await.unwrap();

        let kept = create_and_record(
            &state,
            &f.req(&base, "kept", "tether/kept"),
            Some("prj"),
            Some("ses_1"),
        )
        .await
        .unwrap();
        assert_eq!(kept.checkout, f.repo);
        assert!(kept.created_by_tether);
        assert_eq!(kept.session_id.as_deref(), Some("ses_1"));
        // A failed creation leaves no record.
        let e = create_and_record(&state, &f.req(&base, "kept", "tether/again"), None, None)
            .await
            .unwrap_err();
        assert!(matches!(e, WorktreeError::PathExists(_)), "{e}");
        let e = create_and_record(&state, &f.req(&base, "clash", "tether/kept"), None, None)
            .await
            .unwrap_err();
        assert!(matches!(e, WorktreeError::BranchExists(_)), "{e}");
        assert_eq!(state.worktree_records().await.unwrap().len(), 1);

        // Deleted by hand.
        let gone = create_and_record(&state, &f.req(&base, "gone", "tether/gone"), None, None)
            .await
            .unwrap();
        std::fs::remove_dir_all(&gone.path).unwrap();
        // Forgotten by git: its administrative folder removed, its folder still there.
        let forgot =
            create_and_record(&state, &f.req(&base, "forgot", "tether/forgot"), None, None)
                .await
                .unwrap();
        std::fs::write(forgot.path.join("work.txt"), "x").unwrap();
        std::fs::remove_dir_all(f.repo.join(".git/worktrees/forgot")).unwrap();
        // The user's own worktree, imported, then deleted by hand: never pruned.
        let own = f.root().join("own");
        sh_git(
            &f.repo,
            &["worktree", "add", "-q", "-b", "mine", own.to_str().unwrap()],
        );
        let imported = import(&state, &own, Some("prj")).await.unwrap();
        assert!(!imported.created_by_tether);
        assert_eq!(imported.path, own);
        assert_eq!(imported.branch.as_deref(), Some("mine"));
        // And one the user made, unrecorded, in Tether's folder: never touched.
        let stray = base.join("stray");
        sh_git(
            &f.repo,
            &[
                "worktree",
                "add",
                "-q",
                "-b",
                "stray",
                stray.to_str().unwrap(),
            ],
        );

        // Just created: not judged yet (it could be mid-creation).
        let all = list_all(&state).await.unwrap();
        assert!(all.iter().all(|s| !s.orphan), "{all:?}");
        assert!(prune_orphans(&state, false).await.unwrap().is_empty());
        age_records(&state).await;

        let all = list_all(&state).await.unwrap();
        assert_eq!(all.len(), 4);
        let by = |p: &Path| all.iter().find(|s| s.record.path == p).unwrap();
        let k = by(&kept.path);
        assert!(k.exists && k.listed == Some(true) && !k.orphan, "{k:?}");
        assert_eq!(k.dirty, Some(false));
        assert_eq!(k.current_branch.as_deref(), Some("tether/kept"));
        let g = by(&gone.path);
        assert!(!g.exists && g.orphan && g.dirty.is_none(), "{g:?}");
        let fo = by(&forgot.path);
        assert!(fo.exists && fo.listed == Some(false) && fo.orphan, "{fo:?}");
        let o = by(&own);
        assert!(!o.orphan && o.listed == Some(true), "{o:?}");
        // Serialises flat, for the CLI's JSON output.
        let json = serde_json::to_value(k).unwrap();
        assert_eq!(json["branch"], "tether/kept");
        assert_eq!(json["orphan"], false);

        std::fs::remove_dir_all(&own).unwrap();
        let dry = prune_orphans(&state, true).await.unwrap();
        assert_eq!(dry.len(), 2);
        assert!(forgot.path.exists());
        assert_eq!(state.worktree_records().await.unwrap().len(), 4);

        let mut pruned = prune_orphans(&state, false).await.unwrap();
        pruned.sort();
        let mut want = vec![gone.path.clone(), forgot.path.clone()];
        want.sort();
        assert_eq!(pruned, want);
        assert!(!forgot.path.exists());
        assert!(stray.exists());
        let left: Vec<PathBuf> = state
            .worktree_records()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(left.len(), 2);
        assert!(left.contains(&kept.path) && left.contains(&own));
        // git forgot the deleted one, but not the user's own (no repository-wide prune).
        let entries = list(&f.repo).await.unwrap();
        assert!(find_entry(&entries, &gone.path).is_none());
        assert!(find_entry(&entries, &own).is_some_and(|e| e.prunable));
        assert!(prune_orphans(&state, false).await.unwrap().is_empty());

        // remove_recorded: dirty refusal, then force.
        std::fs::write(kept.path.join("scratch"), "x").unwrap();
        let e = remove_recorded(&state, &kept.path, false)
            .await
            .unwrap_err();
        assert!(matches!(e, WorktreeError::Dirty(_)), "{e}");
        assert!(state.worktree_record(&kept.path).await.unwrap().is_some());
        assert_eq!(
            remove_recorded(&state, &kept.path, true).await.unwrap(),
            Removal::Removed
        );
        assert!(!kept.path.exists());
        assert!(state.worktree_record(&kept.path).await.unwrap().is_none());
        // The imported one whose folder is gone: the record goes.
        assert_eq!(
            remove_recorded(&state, &own, false).await.unwrap(),
            Removal::AlreadyGone
        );
        assert!(state.worktree_records().await.unwrap().is_empty());
        assert!(find_entry(&list(&f.repo).await.unwrap(), &own).is_none());
        // An unrecorded worktree is removed on request, but never a main checkout.
        assert_eq!(
            remove_recorded(&state, &stray, false).await.unwrap(),
            Removal::Removed
        );
        assert!(!stray.exists());
        let e = remove_recorded(&state, &f.repo, true).await.unwrap_err();
        assert!(matches!(e, WorktreeError::MainCheckout(_)), "{e}");
        let e = remove_recorded(&state, &f.root().join("nowhere"), true)
            .await
            .unwrap_err();
        assert!(matches!(e, WorktreeError::NotAWorktree(_)), "{e}");
    }

    #[tokio::test]
    async fn record_only_when_git_forgot_an_imported_one() {
        let f = fixture();
        let state = State::open_in_memory().await.unwrap();
        let own = f.root().join("own");
        sh_git(
            &f.repo,
            &["worktree", "add", "-q", "-b", "mine", own.to_str().unwrap()],
        );
        import(&state, &own, None).await.unwrap();
        std::fs::remove_dir_all(f.repo.join(".git/worktrees/own")).unwrap();
        // Imported: never pruned, even though git forgot it.
        age_records(&state).await;
        assert!(prune_orphans(&state, false).await.unwrap().is_empty());
        assert_eq!(
            remove_recorded(&state, &own, true).await.unwrap(),
            Removal::RecordOnly
        );
        assert!(own.join("README").exists());
        assert!(state.worktree_records().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn import_refuses_what_is_not_a_linked_worktree() {
        let f = fixture();
        let state = State::open_in_memory().await.unwrap();
        let plain = f.root().join("plain");
        std::fs::create_dir(&plain).unwrap();
        let e = import(&state, &plain, None).await.unwrap_err();
        assert!(matches!(e, WorktreeError::NotAWorktree(_)), "{e}");
        let e = import(&state, &f.root().join("missing"), None)
            .await
            .unwrap_err();
        assert!(matches!(e, WorktreeError::NotAWorktree(_)), "{e}");
        let e = import(&state, &f.repo, None).await.unwrap_err();
        assert!(matches!(e, WorktreeError::MainCheckout(_)), "{e}");
        assert!(e.to_string().contains("main checkout"), "{e}");
        std::fs::create_dir(f.repo.join("sub")).unwrap();
        let e = import(&state, &f.repo.join("sub"), None).await.unwrap_err();
        assert!(matches!(e, WorktreeError::MainCheckout(_)), "{e}");
        assert!(state.worktree_records().await.unwrap().is_empty());

        // A subfolder of a linked worktree records the worktree; importing again keeps the
        // record's origin and project.
        let base = f.base_dir();
        let made = create_and_record(&state, &f.req(&base, "t", "tether/t"), Some("prj"), None)
            .await
            .unwrap();
        std::fs::create_dir(made.path.join("deep")).unwrap();
        let again = import(&state, &made.path.join("deep"), None).await.unwrap();
        assert_eq!(again.path, made.path);
        assert!(again.created_by_tether);
        assert_eq!(again.project_id.as_deref(), Some("prj"));
        assert_eq!(state.worktree_records().await.unwrap().len(), 1);
    }
}
