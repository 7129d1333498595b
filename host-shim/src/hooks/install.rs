//! Tether's managed entries in the agents' own hook configuration: `~/.claude/settings.json`
//! for Claude Code and `~/.codex/hooks.json` for Codex. [`install`] adds them, [`uninstall`]
//! takes them out again, [`status`] says whether they are there and current.
//!
//! Both files share one nested shape, `{"hooks": {"<Event>": [<matcher group>, ...]}}`, where a
//! matcher group is `{"matcher": ..., "hooks": [{"type": "command", "command": ...}]}`. Tether
//! adds one group per event in [`EVENTS`], holding one command hook that runs
//! `<tether> hook --agent <agent>` (see [`hook_command`]). The group has no `matcher`: both
//! agents document a missing matcher as "everything", whereas `"*"` is not a valid regular
//! expression and some Claude Code loaders have silently dropped groups that use it.
//!
//! **How Tether's entries are recognised.** By their command, not by a marker field: a hook
//! whose command, split into shell words, is a program named `tether` followed by
//! `hook --agent`. A field such as `"_tether_managed"` would not survive: Claude Code strips
//! unknown keys from hook groups when it rewrites `settings.json` itself, and
//! warns about them in other hook files. The command is the
//! one thing every agent and editor must keep. Recognition works per hook, so a Tether hook the
//! user moved into a group of their own is found too, and their hooks beside it are kept.
//!
//! **What is kept.** Everything that is not a Tether hook, in its original order (the file is
//! read into a small JSON type of this module that keeps keys in file order): other top-level keys, the user's
//! groups, hooks and events, including empty ones. Our groups take the place of the Tether
//! groups they replace, so a reinstall with a new binary path moves nothing. An event array,
//! the `hooks` object or (on uninstall) the whole file is removed only when removing Tether's
//! hooks left it empty; a file that is a symbolic link is left as `{}` instead.
//!
//! **What is refused.** A file that is not JSON, or whose top level, `hooks` or event values
//! have the wrong type, is never rewritten: the error names the file and asks the user to fix
//! it. Every file is read and checked before any is written, so a refusal changes nothing.
//!
//! **How files are written.** Only when the parsed JSON changes. A temporary file in the same
//! folder, created 0600, takes the new text, gets the old file's permissions, is synced and
//! renamed over the old one; readers see the old file or the new one, never half of one. A
//! symbolic link (a dotfiles repository, say) is followed and its target rewritten, so the link
//! stays. Missing config folders are created 0700, and only by [`install`].

use super::Agent;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The hook events Tether installs itself for, in the order it adds them.
pub const EVENTS: [&str; 5] = [
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PostToolUse",
    "Stop",
];

/// How long, in seconds, an agent waits for `tether hook` before giving up on it. `tether hook`
/// answers by the failure mode within seconds when the daemon is down; what takes long is a
/// chat session's approval, which waits for a member up to
/// [`MAX_APPROVAL_TIMEOUT_SECS`](crate::config::MAX_APPROVAL_TIMEOUT_SECS), so the limit is
/// that plus a minute.
pub const HOOK_TIMEOUT_SECS: u64 = crate::config::MAX_APPROVAL_TIMEOUT_SECS + 60;

impl Agent {
    /// The agent's configuration folder in `home`.
    pub fn config_dir(self, home: &Path) -> PathBuf {
        match self {
            Agent::ClaudeCode => home.join(".claude"),
            Agent::Codex => home.join(".codex"),
        }
    }

    /// The file in `home` that holds the agent's hooks (and, for Claude Code, its other
    /// user settings).
    pub fn config_file(self, home: &Path) -> PathBuf {
        match self {
            Agent::ClaudeCode => self.config_dir(home).join("settings.json"),
            Agent::Codex => self.config_dir(home).join("hooks.json"),
        }
    }
}

/// What [`install`] or [`uninstall`] did to one agent's file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Whose file it is.
    pub agent: Agent,
    /// The file, as found under `home` (a symbolic link is reported by its own name).
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// What happened to a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeKind {
    /// The file did not exist and now holds Tether's entries.
    Created,
    /// The file was rewritten: Tether's entries added, replaced or taken out.
    Updated,
    /// Nothing to do; the file was not touched.
    Unchanged,
    /// Uninstalling left nothing in the file but an empty object, so it was deleted.
    Removed,
}

/// Whether one agent's file holds Tether's entries, as [`status`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentStatus {
    /// Whose file it is.
    pub agent: Agent,
    /// The file, as found under `home`.
    pub path: PathBuf,
    /// What is in it.
    pub state: HookState,
}

/// The state of Tether's entries in one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookState {
    /// No Tether hook in the file (or no file).
    NotInstalled,
    /// Exactly what [`install`] would write: running it would change nothing.
    Current,
    /// Tether hooks are there but differ from what [`install`] would write: another binary
    /// path, a missing event, a duplicate, or a hand edit. [`install`] repairs it.
    Stale,
}

/// Why the agents' hook files could not be read, checked or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// Reading, writing, renaming or deleting a file, or creating a folder, failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What we were doing, e.g. "reading".
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The file is not JSON; it is left exactly as it is.
    #[error(
        "{} is not valid JSON, so tether leaves it alone: fix the file (or move it away) and run \
         the command again",
        path.display()
    )]
    InvalidJson {
        /// The file.
        path: PathBuf,
        /// Where the parser stopped, and why.
        #[source]
        source: serde_json::Error,
    },

    /// The file is JSON but a value Tether has to edit has the wrong type; it is left as it is.
    #[error(
        "{location} in {} is {found}, not {expected}, so tether leaves the file alone: fix it \
         and run the command again",
        path.display()
    )]
    UnexpectedShape {
        /// The file.
        path: PathBuf,
        /// Which value, e.g. "`hooks.PreToolUse`".
        location: String,
        /// What the agents expect there, e.g. "an array".
        expected: &'static str,
        /// What the file has, e.g. "a string".
        found: &'static str,
    },

    /// The path of the `tether` binary cannot be written into a hook command.
    #[error(
        "the tether binary path {} must be absolute and valid UTF-8 to be written into the \
         agents' hook commands",
        path.display()
    )]
    BinaryPath {
        /// The path given.
        path: PathBuf,
    },

    /// The file changed on disk between reading and replacing it; it was not overwritten.
    #[error(
        "{} changed while tether was editing it, so tether did not overwrite it: run the \
         command again",
        path.display()
    )]
    ChangedMeanwhile {
        /// The file.
        path: PathBuf,
    },

    /// Turning the edited configuration back into text failed.
    #[error("serialising the new contents of {}", path.display())]
    Render {
        /// The file.
        path: PathBuf,
        /// The serialiser's error.
        #[source]
        source: serde_json::Error,
    },
}

impl InstallError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError {
        let path = path.to_owned();
        move |source| InstallError::Io {
            action,
            path,
            source,
        }
    }
}

/// The command an agent runs to call Tether: `<tether_bin> hook --agent <agent>`, the binary
/// path quoted for a POSIX shell when it needs it (both agents run hook commands through one).
pub fn hook_command(agent: Agent, tether_bin: &Path) -> Result<String, InstallError> {
    let bin = tether_bin
        .to_str()
        .filter(|_| tether_bin.is_absolute())
        .ok_or_else(|| InstallError::BinaryPath {
            path: tether_bin.to_owned(),
        })?;
    Ok(format!("{} hook --agent {}", shell_quote(bin), agent.id()))
}

/// Adds Tether's hook entries for every agent to its file in `home`, or brings them up to date
/// (a new `tether_bin` replaces the old entries instead of adding a second set). Files that
/// already hold exactly these entries are not touched. Every file is checked before any is
/// written: if one cannot be edited safely, nothing is written.
pub fn install(home: &Path, tether_bin: &Path) -> Result<Vec<Change>, InstallError> {
    let mut plans = Vec::with_capacity(Agent::ALL.len());
    for agent in Agent::ALL {
        let command = hook_command(agent, tether_bin)?;
        let path = agent.config_file(home);
        let file = load(&path)?;
        let wanted = with_hooks_installed(&file.doc, &command, &path)?;
        plans.push(plan(agent, path, file, wanted, false)?);
    }
    plans.into_iter().map(|p| apply(p, home)).collect()
}

/// Takes Tether's hook entries out of every agent's file in `home`, keeping everything else.
/// A file left holding only `{}` is deleted; files without Tether entries, and missing files,
/// are not touched. Like [`install`], it writes nothing if any file cannot be edited safely.
pub fn uninstall(home: &Path) -> Result<Vec<Change>, InstallError> {
    let mut plans = Vec::with_capacity(Agent::ALL.len());
    for agent in Agent::ALL {
        let path = agent.config_file(home);
        let file = load(&path)?;
        let wanted = with_hooks_removed(&file.doc, &path)?;
        plans.push(plan(agent, path, file, wanted, true)?);
    }
    plans.into_iter().map(|p| apply(p, home)).collect()
}

/// Whether each agent's file in `home` holds Tether's entries, and whether they are exactly
/// what [`install`] with this `tether_bin` would write. Reads only.
pub fn status(home: &Path, tether_bin: &Path) -> Result<Vec<AgentStatus>, InstallError> {
    Agent::ALL
        .into_iter()
        .map(|agent| {
            let command = hook_command(agent, tether_bin)?;
            let path = agent.config_file(home);
            let file = load(&path)?;
            let state = if with_hooks_removed(&file.doc, &path)? == file.doc {
                HookState::NotInstalled
            } else if with_hooks_installed(&file.doc, &command, &path)? == file.doc {
                HookState::Current
            } else {
                HookState::Stale
            };
            Ok(AgentStatus { agent, path, state })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Editing the parsed document. Pure functions of the JSON; the file system comes later.

/// `doc` with exactly one Tether group, running `command`, in each of [`EVENTS`], and no other
/// Tether hook anywhere.
fn with_hooks_installed(doc: &Json, command: &str, path: &Path) -> Result<Json, InstallError> {
    let mut doc = doc.clone();
    let root = as_object(&mut doc, "the top level", path)?;
    if root.get("hooks").is_none() {
        root.insert("hooks".to_owned(), Json::Object(Object::default()));
    }
    let hooks = root
        .get_mut("hooks")
        .ok_or_else(|| shape_error(path, "`hooks`", "an object", &Json::Null))?;
    let events = as_object(hooks, "`hooks`", path)?;
    check_events(events, path)?;
    let group = tether_group(command);
    // Hooks of an older Tether on events this one no longer uses.
    strip_events(events, &EVENTS);
    for event in EVENTS {
        match events.get_mut(event) {
            None => events.insert(event.to_owned(), Json::Array(vec![group.clone()])),
            Some(Json::Array(groups)) => {
                if !holds_only(groups, &group) {
                    let stripped = strip_groups(groups);
                    let at = stripped.first_slot.unwrap_or(groups.len());
                    groups.insert(at.min(groups.len()), group.clone());
                }
            }
            // `check_events` has refused anything else already.
            Some(other) => return Err(shape_error(path, event, "an array", other)),
        }
    }
    Ok(doc)
}

/// `doc` without any Tether hook.
fn with_hooks_removed(doc: &Json, path: &Path) -> Result<Json, InstallError> {
    let mut doc = doc.clone();
    let root = as_object(&mut doc, "the top level", path)?;
    let hooks_left_empty = match root.get_mut("hooks") {
        None => false,
        Some(hooks) => {
            let events = as_object(hooks, "`hooks`", path)?;
            check_events(events, path)?;
            strip_events(events, &[]) && events.is_empty()
        }
    };
    if hooks_left_empty {
        root.remove("hooks");
    }
    Ok(doc)
}

/// The matcher group Tether adds to each event.
fn tether_group(command: &str) -> Json {
    let hook = Object(vec![
        ("type".to_owned(), Json::String("command".to_owned())),
        ("command".to_owned(), Json::String(command.to_owned())),
        ("timeout".to_owned(), Json::Number(HOOK_TIMEOUT_SECS.into())),
    ]);
    Json::Object(Object(vec![(
        "hooks".to_owned(),
        Json::Array(vec![Json::Object(hook)]),
    )]))
}

/// Whether `groups` is already as [`with_hooks_installed`] wants it: `group` is there, and no
/// other group holds a Tether hook.
fn holds_only(groups: &[Json], group: &Json) -> bool {
    groups.iter().filter(|g| holds_tether_hook(g)).count() == 1 && groups.contains(group)
}

fn holds_tether_hook(group: &Json) -> bool {
    group
        .get("hooks")
        .and_then(Json::as_array)
        .is_some_and(|hooks| hooks.iter().any(is_tether_hook))
}

fn is_tether_hook(hook: &Json) -> bool {
    hook.get("command")
        .and_then(Json::as_str)
        .is_some_and(is_tether_command)
}

/// Removes Tether hooks from every event not in `except`, and the events this leaves empty.
/// Returns whether anything was removed.
fn strip_events(events: &mut Object, except: &[&str]) -> bool {
    let mut removed = false;
    let mut emptied = Vec::new();
    for (name, value) in events.iter_mut() {
        if except.contains(&name.as_str()) {
            continue;
        }
        if let Json::Array(groups) = value
            && strip_groups(groups).removed
        {
            removed = true;
            if groups.is_empty() {
                emptied.push(name.clone());
            }
        }
    }
    for name in emptied {
        events.remove(&name);
    }
    removed
}

/// What [`strip_groups`] did.
struct Stripped {
    /// Whether any Tether hook was removed.
    removed: bool,
    /// Where the first group that held nothing but Tether hooks was (it is gone now).
    first_slot: Option<usize>,
}

/// Removes Tether hooks from one event's groups, and the groups this leaves without hooks.
/// Groups that are not objects with a `hooks` array are not Tether's and are kept as they are.
fn strip_groups(groups: &mut Vec<Json>) -> Stripped {
    let mut stripped = Stripped {
        removed: false,
        first_slot: None,
    };
    let mut kept = Vec::with_capacity(groups.len());
    for mut group in groups.drain(..) {
        let hooks = group.get_mut("hooks").and_then(Json::as_array_mut);
        match hooks {
            Some(hooks) if hooks.iter().any(is_tether_hook) => {
                stripped.removed = true;
                hooks.retain(|h| !is_tether_hook(h));
                if hooks.is_empty() {
                    stripped.first_slot.get_or_insert(kept.len());
                } else {
                    kept.push(group);
                }
            }
            _ => kept.push(group),
        }
    }
    *groups = kept;
    stripped
}

/// The object `value` holds, or an error naming `location` in `path`.
fn as_object<'a>(
    value: &'a mut Json,
    location: &str,
    path: &Path,
) -> Result<&'a mut Object, InstallError> {
    match value {
        Json::Object(object) => Ok(object),
        other => Err(shape_error(path, location, "an object", other)),
    }
}

/// Refuses a `hooks` object with an event that is not an array of groups: the agents would
/// reject it, and Tether cannot edit it without guessing.
fn check_events(events: &Object, path: &Path) -> Result<(), InstallError> {
    match events
        .iter()
        .find(|(_, value)| !matches!(value, Json::Array(_)))
    {
        Some((name, value)) => Err(shape_error(
            path,
            &format!("`hooks.{name}`"),
            "an array",
            value,
        )),
        None => Ok(()),
    }
}

fn shape_error(path: &Path, location: &str, expected: &'static str, found: &Json) -> InstallError {
    InstallError::UnexpectedShape {
        path: path.to_owned(),
        location: location.to_owned(),
        expected,
        found: match found {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        },
    }
}

// ---------------------------------------------------------------------------------------------
// A JSON value that keeps its keys in file order.
//
// serde_json's `Value` sorts object keys unless its `preserve_order` feature is on, and that
// feature cannot be turned on for this crate alone: Cargo unifies features across the
// workspace, and an insertion-ordered `Value` is larger, which pushes other crates' error types
// over clippy's `result_large_err` limit. So the agents' files are read into this small type.

/// A parsed JSON value whose objects keep their keys in the order of the file.
#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Object),
}

/// A JSON object: its members in file order, each key once (a repeated key keeps its first
/// place and its last value, as `JSON.parse` does).
#[derive(Clone, Debug, Default)]
struct Object(Vec<(String, Json)>);

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(object) => object.get(key),
            _ => None,
        }
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        match self {
            Json::Object(object) => object.get_mut(key),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&Vec<Json>> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    fn as_array_mut(&mut self) -> Option<&mut Vec<Json>> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    fn is_empty_object(&self) -> bool {
        matches!(self, Json::Object(object) if object.is_empty())
    }
}

impl Object {
    fn get(&self, key: &str) -> Option<&Json> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key`: in its place if it is there, else at the end.
    fn insert(&mut self, key: String, value: Json) {
        match self.get_mut(&key) {
            Some(slot) => *slot = value,
            None => self.0.push((key, value)),
        }
    }

    /// Removes `key`; the other members keep their order.
    fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&String, &Json)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Json)> {
        self.0.iter_mut().map(|(k, v)| (&*k, v))
    }
}

/// Objects compare as JSON does: the same members, in any order.
impl PartialEq for Object {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => items.serialize(serializer),
            Json::Object(object) => {
                let mut map = serializer.serialize_map(Some(object.0.len()))?;
                for (k, v) in &object.0 {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        Json::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut object = Object::default();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            object.insert(key, value);
        }
        Ok(Json::Object(object))
    }
}

// ---------------------------------------------------------------------------------------------
// Commands: writing ours, and recognising them again.

/// Whether a hook command is one of Tether's: its first shell words are a program named
/// `tether` (any folder), `hook` and `--agent`. A hook the user wrote around Tether (through
/// `env`, a wrapper script, a pipe after `echo`) is theirs, not ours.
fn is_tether_command(command: &str) -> bool {
    match shell_words(command, 3).as_deref() {
        Some([program, hook, agent_flag]) => {
            hook == "hook"
                && agent_flag == "--agent"
                && Path::new(program)
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name == "tether" || name == "tether.exe")
        }
        _ => false,
    }
}

/// `word`, quoted for a POSIX shell when it holds anything but plainly safe characters.
fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+,:=@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The first `limit` words of `command` as a POSIX shell splits them (quotes and backslashes;
/// no expansions), or `None` when a quote is left open before that.
fn shell_words(command: &str, limit: usize) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    while words.len() < limit {
        let Some(c) = chars.next() else { break };
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            '\n' => {}
                            c @ ('"' | '\\' | '$' | '`') => word.push(c),
                            c => {
                                word.push('\\');
                                word.push(c);
                            }
                        },
                        c => word.push(c),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => {
                    in_word = true;
                    word.push('\\');
                }
            },
            c if c == ' ' || c == '\t' || c == '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word && words.len() < limit {
        words.push(word);
    }
    Some(words)
}

// ---------------------------------------------------------------------------------------------
// Files.

/// One agent's file as read.
struct Loaded {
    /// Its contents; an empty object when the file is missing or holds only whitespace.
    doc: Json,
    /// `None` when the file does not exist.
    existing: Option<Existing>,
}

/// What we keep of an existing file to write it back faithfully.
struct Existing {
    /// Where the bytes live: the file itself, or the target of the link it is.
    target: PathBuf,
    /// Whether the file under `home` is a symbolic link.
    is_link: bool,
    /// The target's permissions, given to the new contents.
    permissions: fs::Permissions,
    /// The contents as read, to notice a write by someone else before ours replaces it.
    bytes: Vec<u8>,
}

fn load(path: &Path) -> Result<Loaded, InstallError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Loaded {
                doc: Json::Object(Object::default()),
                existing: None,
            });
        }
        Err(e) => return Err(InstallError::io("inspecting", path)(e)),
    };
    let is_link = meta.file_type().is_symlink();
    let target = if is_link {
        fs::canonicalize(path).map_err(InstallError::io("following the link", path))?
    } else {
        path.to_owned()
    };
    let mut file = File::open(&target).map_err(InstallError::io("opening", path))?;
    let permissions = file
        .metadata()
        .map_err(InstallError::io("inspecting", path))?
        .permissions();
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut file, &mut bytes).map_err(InstallError::io("reading", path))?;
    // An empty file holds nothing to lose; treat it as `{}` rather than refuse it.
    let doc = if bytes.iter().all(u8::is_ascii_whitespace) {
        Json::Object(Object::default())
    } else {
        serde_json::from_slice(&bytes).map_err(|source| InstallError::InvalidJson {
            path: path.to_owned(),
            source,
        })?
    };
    Ok(Loaded {
        doc,
        existing: Some(Existing {
            target,
            is_link,
            permissions,
            bytes,
        }),
    })
}

/// What to do to one file.
struct Plan {
    change: Change,
    action: Action,
    existing: Option<Existing>,
}

enum Action {
    Keep,
    Write(Vec<u8>),
    Delete,
}

/// Decides what to do to `path`: nothing when `wanted` equals what is there (compared as parsed
/// JSON, so formatting and key order alone never cause a rewrite), else write it, or delete
/// the file when `may_delete` and nothing but `{}` is left.
fn plan(
    agent: Agent,
    path: PathBuf,
    file: Loaded,
    wanted: Json,
    may_delete: bool,
) -> Result<Plan, InstallError> {
    let (kind, action) = if wanted == file.doc {
        (ChangeKind::Unchanged, Action::Keep)
    } else if file.existing.is_none() {
        (ChangeKind::Created, Action::Write(render(&wanted, &path)?))
    } else if may_delete
        && wanted.is_empty_object()
        && file.existing.as_ref().is_some_and(|e| !e.is_link)
    {
        (ChangeKind::Removed, Action::Delete)
    } else {
        (ChangeKind::Updated, Action::Write(render(&wanted, &path)?))
    };
    Ok(Plan {
        change: Change { agent, path, kind },
        action,
        existing: file.existing,
    })
}

/// The file's new text: two-space indented like the agents write it, with a final newline.
fn render(doc: &Json, path: &Path) -> Result<Vec<u8>, InstallError> {
    let mut text = serde_json::to_vec_pretty(doc).map_err(|source| InstallError::Render {
        path: path.to_owned(),
        source,
    })?;
    text.push(b'\n');
    Ok(text)
}

fn apply(plan: Plan, home: &Path) -> Result<Change, InstallError> {
    let path = &plan.change.path;
    match (&plan.action, &plan.existing) {
        (Action::Keep, _) => {}
        (Action::Write(bytes), Some(existing)) => {
            write_atomic(
                &existing.target,
                bytes,
                Some(&existing.permissions),
                Some(&existing.bytes),
            )?;
        }
        (Action::Write(bytes), None) => {
            create_config_dir(&plan.change.agent.config_dir(home))?;
            write_atomic(path, bytes, None, None)?;
        }
        (Action::Delete, existing) => {
            ensure_unchanged(path, existing.as_ref().map(|e| e.bytes.as_slice()))?;
            fs::remove_file(path).map_err(InstallError::io("removing", path))?;
            sync_dir(path.parent().unwrap_or(Path::new(".")));
        }
    }
    Ok(plan.change)
}

/// Creates an agent's configuration folder, owner-only, if it is missing. An existing folder
/// keeps its permissions.
fn create_config_dir(dir: &Path) -> Result<(), InstallError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(InstallError::io("creating the folder", dir))
}

/// Fails if `path` no longer holds `expected` (`None`: if it exists now): the agent or the user
/// saved it since we read it, and replacing it would lose their change. The check narrows the
/// window to the moment before the rename; it cannot close it.
fn ensure_unchanged(path: &Path, expected: Option<&[u8]>) -> Result<(), InstallError> {
    let now = match fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(InstallError::io("reading", path)(e)),
    };
    if now.as_deref() == expected {
        Ok(())
    } else {
        Err(InstallError::ChangedMeanwhile {
            path: path.to_owned(),
        })
    }
}

/// Replaces `path` with `bytes` in one rename, provided it still holds `expected` (see
/// [`ensure_unchanged`]). The temporary file is created 0600 (the agents' settings may hold
/// tokens) and, when `permissions` is given, takes them before the rename.
fn write_atomic(
    path: &Path,
    bytes: &[u8],
    permissions: Option<&fs::Permissions>,
    expected: Option<&[u8]>,
) -> Result<(), InstallError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = temp_name(dir, path);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .map_err(InstallError::io("creating", &tmp))?;
    let result = file
        .write_all(bytes)
        .and_then(|()| match permissions {
            Some(p) => file.set_permissions(p.clone()),
            None => Ok(()),
        })
        .and_then(|()| file.sync_all())
        .map_err(InstallError::io("writing", &tmp))
        .and_then(|()| ensure_unchanged(path, expected))
        .and_then(|()| fs::rename(&tmp, path).map_err(InstallError::io("replacing", path)));
    drop(file);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir);
    Ok(())
}

/// A fresh name next to `path`. Unique within this process by a counter and across processes
/// by the process id and the clock; `create_new` refuses a clash rather than sharing a file.
fn temp_name(dir: &Path, path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(
        ".{name}.tether-{}-{nanos}-{n}.tmp",
        std::process::id()
    ))
}

/// Makes a rename or removal durable across a power cut; best effort (not every platform can
/// open a folder for syncing).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
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
    use serde_json::{Value, json};

    const BIN: &str = "/opt/tether/bin/tether";

    fn read_json(path: &Path) -> Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    }

    /// The keys of the object at `at` in the file, in file order.
    fn keys(path: &Path, at: &[&str]) -> Vec<String> {
        let mut doc: Json = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        for key in at {
            doc = doc.get(key).unwrap().clone();
        }
        match doc {
            Json::Object(object) => object.0.into_iter().map(|(k, _)| k).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn claude(home: &Path) -> PathBuf {
        Agent::ClaudeCode.config_file(home)
    }

    fn codex(home: &Path) -> PathBuf {
        Agent::Codex.config_file(home)
    }

    fn kinds(changes: &[Change]) -> Vec<ChangeKind> {
        changes.iter().map(|c| c.kind).collect()
    }

    /// What a file holding nothing but Tether's entries looks like.
    fn only_ours(command: &str) -> Value {
        let group = json!([{"hooks": [{"type": "command", "command": command, "timeout": HOOK_TIMEOUT_SECS}]}]);
        json!({"hooks": {
            "SessionStart": group,
            "UserPromptSubmit": group,
            "PreToolUse": group,
            "PostToolUse": group,
            "Stop": group,
        }})
    }

    /// Every Tether command in `doc`, per event.
    fn tether_commands(doc: &Value, event: &str) -> Vec<String> {
        doc["hooks"][event]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["hooks"].as_array().unwrap().iter())
            .filter_map(|h| h["command"].as_str())
            .filter(|c| is_tether_command(c))
            .map(str::to_owned)
            .collect()
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn user_settings() -> &'static str {
        r#"{
  "model": "opus",
  "hooks": {
    "PreToolUse": [
      {
        "matcher": "Bash",
        "hooks": [{"type": "command", "command": "~/bin/check-bash.sh", "timeout": 5}]
      }
    ],
    "Notification": [
      {"hooks": [{"type": "command", "command": "notify-send claude"}]}
    ],
    "PreCompact": []
  },
  "permissions": {"allow": ["Bash(git status)"], "deny": []},
  "env": {"ANTHROPIC_API_KEY": "sk-not-a-real-key"}
}
"#
    }

    #[test]
    fn install_into_an_empty_home_creates_both_files_with_only_our_entries() {
        let home = tempfile::tempdir().unwrap();
        let changes = install(home.path(), Path::new(BIN)).unwrap();
        assert_eq!(
            changes,
            vec![
                Change {
                    agent: Agent::ClaudeCode,
                    path: claude(home.path()),
                    kind: ChangeKind::Created
                },
                Change {
                    agent: Agent::Codex,
                    path: codex(home.path()),
                    kind: ChangeKind::Created
                },
            ]
        );
        assert_eq!(
            read_json(&claude(home.path())),
            only_ours("/opt/tether/bin/tether hook --agent claude-code")
        );
        assert_eq!(
            read_json(&codex(home.path())),
            only_ours("/opt/tether/bin/tether hook --agent codex")
        );
        let text = fs::read_to_string(claude(home.path())).unwrap();
        assert!(text.ends_with("}\n") && !text.ends_with("\n\n"));
        // The events come in a stable, readable order.
        assert_eq!(keys(&claude(home.path()), &["hooks"]), EVENTS);
        #[cfg(unix)]
        {
            assert_eq!(mode_of(&claude(home.path())), 0o600);
            assert_eq!(mode_of(&codex(home.path())), 0o600);
            assert_eq!(mode_of(&home.path().join(".claude")), 0o700);
            assert_eq!(mode_of(&home.path().join(".codex")), 0o700);
        }
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(home.path().join(".claude"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("settings.json")]);
    }

    #[test]
    fn install_keeps_the_users_keys_and_hooks_in_their_order() {
        let home = tempfile::tempdir().unwrap();
        let path = claude(home.path());
        write(&path, user_settings());
        let before = read_json(&path);

        let changes = install(home.path(), Path::new(BIN)).unwrap();
        assert_eq!(kinds(&changes), [ChangeKind::Updated, ChangeKind::Created]);

        let after = read_json(&path);
        assert_eq!(keys(&path, &[]), ["model", "hooks", "permissions", "env"]);
        for key in ["model", "permissions", "env"] {
            assert_eq!(after[key], before[key], "{key}");
        }
        // The user's events stay first and untouched; ours follow.
        assert_eq!(
            keys(&path, &["hooks"]),
            [
                "PreToolUse",
                "Notification",
                "PreCompact",
                "SessionStart",
                "UserPromptSubmit",
                "PostToolUse",
                "Stop"
            ]
        );
        assert_eq!(
            after["hooks"]["Notification"],
            before["hooks"]["Notification"]
        );
        assert_eq!(after["hooks"]["PreCompact"], json!([]));
        let pre = after["hooks"]["PreToolUse"].as_array().unwrap();
        assert_eq!(pre.len(), 2);
        assert_eq!(pre[0], before["hooks"]["PreToolUse"][0]);
        assert_eq!(
            tether_commands(&after, "PreToolUse"),
            ["/opt/tether/bin/tether hook --agent claude-code"]
        );
        for event in EVENTS {
            assert_eq!(tether_commands(&after, event).len(), 1, "{event}");
        }
    }

    #[test]
    fn a_second_install_changes_nothing_and_leaves_the_files_alone() {
        let home = tempfile::tempdir().unwrap();
        write(&claude(home.path()), user_settings());
        install(home.path(), Path::new(BIN)).unwrap();

        // Backdate both files, so a rewrite would show in their modification times.
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let mut before = Vec::new();
        for path in [claude(home.path()), codex(home.path())] {
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(old)
                .unwrap();
            before.push((fs::read(&path).unwrap(), fs::metadata(&path).unwrap()));
        }

        let changes = install(home.path(), Path::new(BIN)).unwrap();
        assert_eq!(
            kinds(&changes),
            [ChangeKind::Unchanged, ChangeKind::Unchanged]
        );
        for (path, (bytes, meta)) in [claude(home.path()), codex(home.path())].iter().zip(before) {
            assert_eq!(fs::read(path).unwrap(), bytes);
            let now = fs::metadata(path).unwrap();
            assert_eq!(now.modified().unwrap(), old);
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                assert_eq!(now.ino(), meta.ino(), "the file was replaced");
            }
            let _ = meta;
        }
        let states: Vec<_> = status(home.path(), Path::new(BIN))
            .unwrap()
            .into_iter()
            .map(|s| s.state)
            .collect();
        assert_eq!(states, [HookState::Current, HookState::Current]);
    }

    #[test]
    fn installing_a_new_binary_replaces_the_old_entries_in_place() {
        let home = tempfile::tempdir().unwrap();
        let path = claude(home.path());
        write(&path, user_settings());
        install(home.path(), Path::new("/old/place/tether")).unwrap();
        // The user adds a PreToolUse hook after ours; ours must not move behind it.
        let mut doc = read_json(&path);
        doc["hooks"]["PreToolUse"]
            .as_array_mut()
            .unwrap()
            .push(json!({"matcher": "Edit", "hooks": [{"type": "command", "command": "lint"}]}));
        fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();

        let new_bin = Path::new("/Users/Jo Smith/bin/tether");
        assert_eq!(
            status(home.path(), new_bin).unwrap()[0].state,
            HookState::Stale
        );
        let changes = install(home.path(), new_bin).unwrap();
        assert_eq!(kinds(&changes), [ChangeKind::Updated, ChangeKind::Updated]);

        let after = read_json(&path);
        let wanted = "'/Users/Jo Smith/bin/tether' hook --agent claude-code";
        for event in EVENTS {
            assert_eq!(tether_commands(&after, event), [wanted], "{event}");
            assert_eq!(
                after["hooks"][event]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|g| g["hooks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|h| h["command"].as_str().is_some_and(is_tether_command)))
                    .count(),
                1
            );
        }
        let pre = after["hooks"]["PreToolUse"].as_array().unwrap();
        assert_eq!(pre.len(), 3);
        assert_eq!(pre[0]["matcher"], "Bash");
        assert_eq!(
            tether_commands(&json!({"hooks": {"x": [pre[1].clone()]}}), "x"),
            [wanted]
        );
        assert_eq!(pre[2]["matcher"], "Edit");
        assert_eq!(
            tether_commands(&read_json(&codex(home.path())), "Stop"),
            ["'/Users/Jo Smith/bin/tether' hook --agent codex"]
        );
    }

    #[test]
    fn install_repairs_duplicates_and_removes_hooks_of_events_no_longer_used() {
        let home = tempfile::tempdir().unwrap();
        let path = codex(home.path());
        let ours = "/a/tether hook --agent codex";
        write(
            &path,
            &json!({"hooks": {
                "Stop": [
                    {"hooks": [{"type": "command", "command": ours}]},
                    {"hooks": [{"type": "command", "command": "/b/tether hook --agent codex"}]},
                ],
                // An older Tether's event, shared with a hook of the user's.
                "PreCompact": [{"hooks": [
                    {"type": "command", "command": "/a/tether hook --agent codex"},
                    {"type": "command", "command": "backup.sh"},
                ]}],
                "PermissionRequest": [{"hooks": [{"type": "command", "command": ours}]}],
            }})
            .to_string(),
        );
        install(home.path(), Path::new("/a/tether")).unwrap();
        let after = read_json(&path);
        assert_eq!(tether_commands(&after, "Stop"), [ours]);
        assert_eq!(
            after["hooks"]["PreCompact"],
            json!([{"hooks": [{"type": "command", "command": "backup.sh"}]}])
        );
        assert!(after["hooks"].get("PermissionRequest").is_none());
    }

    #[test]
    fn uninstall_restores_the_users_original() {
        let home = tempfile::tempdir().unwrap();
        let path = claude(home.path());
        write(&path, user_settings());
        let before = read_json(&path);
        install(home.path(), Path::new(BIN)).unwrap();

        let changes = uninstall(home.path()).unwrap();
        // The Codex file held nothing else: it goes, as it came.
        assert_eq!(kinds(&changes), [ChangeKind::Updated, ChangeKind::Removed]);
        let after = read_json(&path);
        assert_eq!(after, before);
        assert_eq!(keys(&path, &[]), ["model", "hooks", "permissions", "env"]);
        assert_eq!(
            keys(&path, &["hooks"]),
            ["PreToolUse", "Notification", "PreCompact"]
        );
        assert!(!codex(home.path()).exists());
        assert_eq!(
            status(home.path(), Path::new(BIN)).unwrap()[0].state,
            HookState::NotInstalled
        );
    }

    #[test]
    fn uninstall_after_install_into_an_empty_home_leaves_no_files() {
        let home = tempfile::tempdir().unwrap();
        install(home.path(), Path::new(BIN)).unwrap();
        let changes = uninstall(home.path()).unwrap();
        assert_eq!(kinds(&changes), [ChangeKind::Removed, ChangeKind::Removed]);
        assert!(!claude(home.path()).exists());
        assert!(!codex(home.path()).exists());
    }

    #[test]
    fn uninstall_with_nothing_installed_touches_nothing() {
        let home = tempfile::tempdir().unwrap();
        let changes = uninstall(home.path()).unwrap();
        assert_eq!(
            kinds(&changes),
            [ChangeKind::Unchanged, ChangeKind::Unchanged]
        );
        assert!(!home.path().join(".claude").exists());
        assert!(!home.path().join(".codex").exists());

        write(&claude(home.path()), user_settings());
        write(&codex(home.path()), "{}");
        let changes = uninstall(home.path()).unwrap();
        assert_eq!(
            kinds(&changes),
            [ChangeKind::Unchanged, ChangeKind::Unchanged]
        );
        assert_eq!(
            fs::read_to_string(claude(home.path())).unwrap(),
            user_settings()
        );
        assert_eq!(fs::read_to_string(codex(home.path())).unwrap(), "{}");
    }

    #[test]
    fn invalid_json_is_refused_and_nothing_is_written() {
        let home = tempfile::tempdir().unwrap();
        let path = claude(home.path());
        let broken = "{\n  \"model\": \"opus\",\n  \"hooks\": {\n";
        write(&path, broken);

        let err = install(home.path(), Path::new(BIN)).unwrap_err();
        assert!(matches!(err, InstallError::InvalidJson { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("fix"), "{message}");
        assert_eq!(fs::read_to_string(&path).unwrap(), broken);
        // All or nothing: Codex's file was not written either.
        assert!(!codex(home.path()).exists());

        assert!(matches!(
            uninstall(home.path()),
            Err(InstallError::InvalidJson { .. })
        ));
        assert!(status(home.path(), Path::new(BIN)).is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), broken);
    }

    #[test]
    fn values_of_the_wrong_type_are_refused() {
        let cases = [
            ("[]", "the top level", "an array"),
            (r#"{"hooks": "none"}"#, "`hooks`", "a string"),
            (
                r#"{"hooks": {"Stop": {"hooks": []}}}"#,
                "`hooks.Stop`",
                "an object",
            ),
            (
                r#"{"hooks": {"Notification": null}}"#,
                "`hooks.Notification`",
                "null",
            ),
        ];
        for (text, location, found) in cases {
            let home = tempfile::tempdir().unwrap();
            let path = claude(home.path());
            write(&path, text);
            for result in [install(home.path(), Path::new(BIN)), uninstall(home.path())] {
                match result {
                    Err(InstallError::UnexpectedShape {
                        location: l,
                        found: f,
                        path: p,
                        ..
                    }) => {
                        assert_eq!(
                            (l.as_str(), f, p.as_path()),
                            (location, found, path.as_path())
                        );
                    }
                    other => panic!("{text}: {other:?}"),
                }
                assert_eq!(fs::read_to_string(&path).unwrap(), text);
            }
            assert!(!codex(home.path()).exists());
        }
    }

    #[test]
    fn an_empty_file_counts_as_an_empty_object() {
        let home = tempfile::tempdir().unwrap();
        write(&codex(home.path()), "\n");
        let changes = install(home.path(), Path::new(BIN)).unwrap();
        assert_eq!(changes[1].kind, ChangeKind::Updated);
        assert_eq!(
            read_json(&codex(home.path())),
            only_ours("/opt/tether/bin/tether hook --agent codex")
        );
    }

    #[cfg(unix)]
    #[test]
    fn existing_permissions_are_kept() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        write(&claude(home.path()), user_settings());
        write(&codex(home.path()), "{}\n");
        fs::set_permissions(claude(home.path()), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(codex(home.path()), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(
            home.path().join(".claude"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();

        install(home.path(), Path::new(BIN)).unwrap();
        assert_eq!(mode_of(&claude(home.path())), 0o640);
        assert_eq!(mode_of(&codex(home.path())), 0o644);
        assert_eq!(mode_of(&home.path().join(".claude")), 0o755);
        uninstall(home.path()).unwrap();
        assert_eq!(mode_of(&claude(home.path())), 0o640);
    }

    #[cfg(unix)]
    #[test]
    fn a_linked_file_is_edited_through_its_link() {
        let home = tempfile::tempdir().unwrap();
        let dotfiles = home.path().join("dotfiles");
        write(&dotfiles.join("claude.json"), r#"{"model": "opus"}"#);
        fs::create_dir(home.path().join(".claude")).unwrap();
        std::os::unix::fs::symlink(dotfiles.join("claude.json"), claude(home.path())).unwrap();

        install(home.path(), Path::new(BIN)).unwrap();
        assert!(
            fs::symlink_metadata(claude(home.path()))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let target = read_json(&dotfiles.join("claude.json"));
        assert_eq!(target["model"], "opus");
        assert_eq!(tether_commands(&target, "Stop").len(), 1);

        // Emptied through a link, the file stays (as `{}`) so the link does not dangle.
        fs::write(dotfiles.join("claude.json"), "{}").unwrap();
        install(home.path(), Path::new(BIN)).unwrap();
        let changes = uninstall(home.path()).unwrap();
        assert_eq!(changes[0].kind, ChangeKind::Updated);
        assert_eq!(read_json(&dotfiles.join("claude.json")), json!({}));
    }

    #[test]
    fn a_hook_the_user_put_beside_ours_survives_uninstall() {
        let home = tempfile::tempdir().unwrap();
        let path = claude(home.path());
        write(
            &path,
            &json!({"hooks": {"PreToolUse": [{"matcher": "", "hooks": [
                {"type": "command", "command": "/opt/tether/bin/tether hook --agent claude-code"},
                {"type": "command", "command": "audit.sh"},
            ]}]}})
            .to_string(),
        );
        assert_eq!(
            status(home.path(), Path::new(BIN)).unwrap()[0].state,
            HookState::Stale
        );
        uninstall(home.path()).unwrap();
        assert_eq!(
            read_json(&path),
            json!({"hooks": {"PreToolUse": [{"matcher": "", "hooks": [
                {"type": "command", "command": "audit.sh"},
            ]}]}})
        );
    }

    #[test]
    fn a_round_trip_keeps_nested_order_numbers_and_text() {
        let home = tempfile::tempdir().unwrap();
        let path = claude(home.path());
        let text = r#"{"zeta": {"b": 1, "a": [2.5, -7, 18446744073709551615, 1e300]},
            "alpha": "caf\u00e9 \"quoted\" \n \ud83d\ude00", "dup": 1, "dup": 2,
            "hooks": {"Stop": [{"hooks": [{"timeout": 9, "command": "say done", "type": "command"}],
            "matcher": ""}]}}"#;
        write(&path, text);
        let before = read_json(&path);
        install(home.path(), Path::new(BIN)).unwrap();
        uninstall(home.path()).unwrap();
        assert_eq!(read_json(&path), before);
        assert_eq!(keys(&path, &[]), ["zeta", "alpha", "dup", "hooks"]);
        assert_eq!(keys(&path, &["zeta"]), ["b", "a"]);
        assert_eq!(read_json(&path)["dup"], 2);
        let doc: Json = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let group = &doc
            .get("hooks")
            .unwrap()
            .get("Stop")
            .unwrap()
            .as_array()
            .unwrap()[0];
        let Json::Object(group) = group else { panic!() };
        assert_eq!(group.0[0].0, "hooks");
        let Json::Object(hook) = &group.0[0].1.as_array().unwrap()[0] else {
            panic!()
        };
        let hook_keys: Vec<_> = hook.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(hook_keys, ["timeout", "command", "type"]);
    }

    #[test]
    fn our_group_with_its_keys_reordered_is_still_current() {
        let home = tempfile::tempdir().unwrap();
        install(home.path(), Path::new(BIN)).unwrap();
        let path = codex(home.path());
        // Another tool rewrites the file with the members of our hooks in reverse order.
        let mut doc: Json = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        for event in EVENTS {
            let groups = doc.get_mut("hooks").unwrap().get_mut(event).unwrap();
            for group in groups.as_array_mut().unwrap() {
                for hook in group.get_mut("hooks").unwrap().as_array_mut().unwrap() {
                    let Json::Object(hook) = hook else { panic!() };
                    hook.0.reverse();
                }
            }
        }
        let text = serde_json::to_string(&doc).unwrap();
        assert!(
            text.contains(&format!(
                r#"{{"timeout":{HOOK_TIMEOUT_SECS},"command":"/opt"#
            )),
            "{text}"
        );
        fs::write(&path, &text).unwrap();

        assert_eq!(
            status(home.path(), Path::new(BIN)).unwrap()[1].state,
            HookState::Current
        );
        let changes = install(home.path(), Path::new(BIN)).unwrap();
        assert_eq!(changes[1].kind, ChangeKind::Unchanged);
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn a_file_saved_meanwhile_is_not_overwritten() {
        let home = tempfile::tempdir().unwrap();
        let path = claude(home.path());
        write(&path, r#"{"model": "opus"}"#);
        let file = load(&path).unwrap();
        let wanted = with_hooks_installed(&file.doc, "/t/tether hook --agent x", &path).unwrap();
        let planned = plan(Agent::ClaudeCode, path.clone(), file, wanted, false).unwrap();
        // Claude Code saves the file between our read and our rename.
        fs::write(&path, r#"{"model": "sonnet"}"#).unwrap();
        assert!(matches!(
            apply(planned, home.path()),
            Err(InstallError::ChangedMeanwhile { .. })
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), r#"{"model": "sonnet"}"#);
        let names: Vec<_> = fs::read_dir(home.path().join(".claude"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("settings.json")]);
    }

    #[test]
    fn the_binary_path_must_be_absolute() {
        let home = tempfile::tempdir().unwrap();
        assert!(matches!(
            install(home.path(), Path::new("target/debug/tether")),
            Err(InstallError::BinaryPath { .. })
        ));
        assert!(!home.path().join(".claude").exists());
    }

    #[test]
    fn commands_are_quoted_and_recognised() {
        assert_eq!(
            shell_quote("/usr/local/bin/tether"),
            "/usr/local/bin/tether"
        );
        assert_eq!(shell_quote("/a b/tether"), "'/a b/tether'");
        assert_eq!(shell_quote("/it's/tether"), r"'/it'\''s/tether'");
        assert_eq!(shell_quote("/$HOME/tether"), "'/$HOME/tether'");
        for bin in [
            "/a b/tether",
            "/it's/tether",
            "/x/\"q\"/tether",
            "/tab\there/tether",
        ] {
            let command = hook_command(Agent::Codex, Path::new(bin)).unwrap();
            assert_eq!(
                shell_words(&command, 10).unwrap(),
                [bin, "hook", "--agent", "codex"],
                "{command}"
            );
            assert!(is_tether_command(&command), "{command}");
        }

        for ours in [
            "/usr/bin/tether hook --agent claude-code",
            "tether hook --agent codex",
            "\"/Users/Jo Smith/tether\" hook --agent codex",
            "/a\\ b/tether   hook --agent codex 2>/dev/null",
            "/opt/tether.exe hook --agent codex",
        ] {
            assert!(is_tether_command(ours), "{ours}");
        }
        for theirs in [
            "echo tether hook --agent codex",
            "/usr/bin/env tether hook --agent codex",
            "/usr/bin/tether-helper hook --agent codex",
            "/usr/bin/tether hooks --agent codex",
            "/usr/bin/tether hook",
            "/usr/bin/tether status",
            "'/unterminated/tether hook --agent codex",
            "",
        ] {
            assert!(!is_tether_command(theirs), "{theirs}");
        }
    }
}
