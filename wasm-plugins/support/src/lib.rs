//! Plain helpers shared by the example guardrail policies, with no bindings in them so they
//! build and test natively.
//!
//! - [`shell_command`] pulls the command line out of a shell tool call, whichever agent made it.
//! - [`pipelines`], [`pipeline_stages`] and [`words`] take a command line apart the way a shell
//!   would, well enough to judge it: quotes are honoured, expansions are not performed.
//! - [`normalize`] and [`is_within`] resolve paths lexically (a guest has no filesystem).
//! - [`Config`] reads a policy's JSON config without serde derive, to keep guests small.
//! - [`policy_component!`] is the component glue every example policy shares.

use serde_json::Value;

/// The component glue of an example policy, for wasm32 only: `name` answers `$name`, `events`
/// the crate's `EVENTS`, and `evaluate` reads the config through the host and applies the
/// crate's `judge`, failing closed (deny, and an error log) on a config `Settings::from_json`
/// refuses. Expects at the crate root a `bindings` module (wit-bindgen's `generate!` for the
/// `policy` world) and `Decision`, `EVENTS`, `Event`, `EventKind`, `Outcome`, `Settings`,
/// `judge`.
///
/// `unsafe` is allowed in the generated module only because wit-bindgen's `export!` expands to
/// the canonical ABI entry points (`#[export_name]` functions that lift and lower arguments
/// through raw pointers); the module writes none itself.
#[macro_export]
macro_rules! policy_component {
    ($guest:ident, $name:literal) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        mod component {
            use super::bindings::Guest;
            use super::bindings::tether::guardrail::host::{config, log};
            use super::bindings::tether::guardrail::types::LogLevel;
            use super::{Decision, EVENTS, Event, EventKind, Outcome, Settings, judge};

            struct $guest;

            impl Guest for $guest {
                fn name() -> String {
                    $name.to_owned()
                }

                fn events() -> Vec<EventKind> {
                    EVENTS.to_vec()
                }

                fn evaluate(event: Event) -> Outcome {
                    match Settings::from_json(&config()) {
                        Ok(settings) => judge(&settings, &event),
                        Err(error) => {
                            log(LogLevel::Error, &error);
                            Outcome {
                                verdict: Decision::Deny(format!("{}: {error}", $name)),
                                context: None,
                            }
                        }
                    }
                }
            }

            super::bindings::export!($guest with_types_in super::bindings);
        }
    };
}

/// Tool names that run a shell command: Claude Code's `Bash`, Codex's `shell`, `exec_command`
/// and `local_shell`.
pub const SHELL_TOOLS: [&str; 4] = ["Bash", "shell", "exec_command", "local_shell"];

/// Whether `tool_name` runs shell commands.
pub fn is_shell_tool(tool_name: &str) -> bool {
    SHELL_TOOLS.contains(&tool_name)
}

/// The command line a shell tool call will run, or `None` for other tools or inputs we cannot
/// read.
///
/// Claude Code sends `{"command": "..."}`; Codex sends `{"command": ["bash", "-lc", "..."]}`
/// (argv) or a string, and `exec_command` may use `cmd`. For `sh -c SCRIPT`-style argv the
/// script is returned, otherwise argv joined with spaces.
pub fn shell_command(tool_name: &str, tool_input: &str) -> Option<String> {
    if !is_shell_tool(tool_name) {
        return None;
    }
    let input: Value = serde_json::from_str(tool_input).ok()?;
    let command = input.get("command").or_else(|| input.get("cmd"))?;
    match command {
        Value::String(line) => Some(line.clone()),
        Value::Array(argv) => {
            let argv: Vec<&str> = argv.iter().filter_map(Value::as_str).collect();
            match argv.as_slice() {
                [shell, flag, script, ..]
                    if is_shell_name(shell) && flag.starts_with('-') && flag.contains('c') =>
                {
                    Some((*script).to_owned())
                }
                _ => Some(argv.join(" ")),
            }
        }
        _ => None,
    }
}

/// Whether `program` (a path or a bare name) is a shell or script interpreter that runs code
/// given on stdin or `-c`.
pub fn is_shell_name(program: &str) -> bool {
    const SHELLS: [&str; 12] = [
        "sh", "bash", "zsh", "dash", "ksh", "fish", "ash", "python", "python3", "perl", "ruby",
        "node",
    ];
    SHELLS.contains(&basename(program))
}

/// The last path component of `program`.
pub fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// Splits a command line into the pipelines it runs, on `;`, `&&`, `||`, `&` and newlines
/// outside quotes. Empty pieces are dropped.
pub fn pipelines(line: &str) -> Vec<&str> {
    split_outside_quotes(line, |before, rest| {
        if rest.starts_with("&&") || rest.starts_with("||") {
            Some(2)
        } else if rest.starts_with("|&") {
            None
        } else if rest.starts_with(';')
            || rest.starts_with('\n')
            // A lone `&` backgrounds a command; `&>`, `2>&1` and `<&3` are redirections.
            || (rest.starts_with('&') && !rest.starts_with("&>") && !before.ends_with(['>', '<']))
        {
            Some(1)
        } else {
            None
        }
    })
}

/// Splits one pipeline into its stages on `|` (and `|&`) outside quotes.
pub fn pipeline_stages(pipeline: &str) -> Vec<&str> {
    split_outside_quotes(pipeline, |_, rest| {
        if rest.starts_with("||") {
            None
        } else if rest.starts_with("|&") {
            Some(2)
        } else if rest.starts_with('|') {
            Some(1)
        } else {
            None
        }
    })
}

/// Every simple command in a line: [`pipelines`] split into [`pipeline_stages`].
pub fn simple_commands(line: &str) -> Vec<&str> {
    pipelines(line)
        .into_iter()
        .flat_map(pipeline_stages)
        .collect()
}

/// Splits `text` wherever `separator` (given the text before and from here) reports a separator of that
/// many bytes, skipping quoted and backslash-escaped characters.
fn split_outside_quotes(text: &str, separator: impl Fn(&str, &str) -> Option<usize>) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut skip_to = 0;
    for (at, ch) in text.char_indices() {
        if at < skip_to {
            continue;
        }
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, ch) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            (_, '\\') => escaped = true,
            (Some('"'), '"') => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(ch),
            (None, _) => {
                let before = text.get(..at).unwrap_or_default();
                if let Some(len) = text.get(at..).and_then(|rest| separator(before, rest)) {
                    pieces.push(text.get(start..at).unwrap_or_default());
                    start = at + len;
                    skip_to = start;
                }
            }
        }
    }
    pieces.push(text.get(start..).unwrap_or_default());
    pieces
        .into_iter()
        .map(str::trim)
        .filter(|piece| !piece.is_empty())
        .collect()
}

/// Splits a simple command into words, removing quotes and backslash escapes. Expansions
/// (`$HOME`, `~`, globs) are kept literally.
pub fn words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = command.chars();
    while let Some(ch) = chars.next() {
        match (quote, ch) {
            (Some(q), _) if ch == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            (Some(_), _) => word.push(ch),
            (None, '\'' | '"') => {
                quote = Some(ch);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                    in_word = true;
                }
            }
            (None, _) if ch.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, _) => {
                word.push(ch);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The words of a simple command from the program on, skipping what only wraps it: `VAR=value`
/// assignments and `sudo`, `doas`, `env`, `command`, `exec`, `nohup`, `time`, `nice` with their
/// options.
pub fn program_and_args(words: &[String]) -> &[String] {
    const WRAPPERS: [&str; 8] = [
        "sudo", "doas", "env", "command", "exec", "nohup", "time", "nice",
    ];
    let mut rest = words;
    while let Some((first, tail)) = rest.split_first() {
        let is_assignment = first
            .split_once('=')
            .is_some_and(|(name, _)| !name.is_empty() && name.chars().all(is_name_char));
        if is_assignment || WRAPPERS.contains(&basename(first)) {
            rest = tail;
            // Options of the wrapper itself (`sudo -E`, `sudo -u root`, `nice -n 5`).
            const WITH_VALUE: [&str; 10] =
                ["-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-n"];
            while let Some((option, tail)) = rest.split_first() {
                if !option.starts_with('-') {
                    break;
                }
                rest = tail;
                if WITH_VALUE.contains(&option.as_str()) {
                    rest = rest.get(1..).unwrap_or_default();
                }
            }
        } else {
            break;
        }
    }
    rest
}

fn is_name_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || ch == '_'
}

/// Resolves `path` against the directory `cwd` lexically: `.` and `..` are removed, repeated
/// slashes collapse, and the result is absolute without a trailing slash (`/` for the root).
/// Paths starting with `~` or `$` are returned unchanged: a guest cannot expand them.
pub fn normalize(cwd: &str, path: &str) -> String {
    if path.starts_with('~') || path.starts_with('$') {
        return path.to_owned();
    }
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{cwd}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether the normalised absolute `path` is `root` or lies under it.
pub fn is_within(path: &str, root: &str) -> bool {
    let root = root.trim_end_matches('/');
    path == root
        || root.is_empty()
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Every string inside a JSON value, depth first (for scanning tool inputs whatever their shape).
pub fn json_strings(value: &Value) -> Vec<&str> {
    let mut found = Vec::new();
    collect_strings(value, &mut found);
    found
}

fn collect_strings<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::String(text) => found.push(text),
        Value::Array(items) => items.iter().for_each(|item| collect_strings(item, found)),
        Value::Object(map) => map.values().for_each(|item| collect_strings(item, found)),
        _ => {}
    }
}

/// A policy's JSON config, read leniently: unknown keys are ignored, and a missing key gets the
/// caller's default. An unparsable document is an error, so a policy can fail closed.
pub struct Config(Value);

impl Config {
    /// Parses the document the host gives through `config()`. The empty string means `{}`.
    pub fn parse(json: &str) -> Result<Self, String> {
        if json.trim().is_empty() {
            return Ok(Self(Value::Object(Default::default())));
        }
        match serde_json::from_str::<Value>(json) {
            Ok(value @ Value::Object(_)) => Ok(Self(value)),
            Ok(_) => Err("config must be a JSON object".to_owned()),
            Err(error) => Err(format!("config is not valid JSON: {error}")),
        }
    }

    /// A string field, `None` when missing. A field of another type is an error.
    pub fn string(&self, key: &str) -> Result<Option<String>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(format!("config field `{key}` must be a string")),
        }
    }

    /// A boolean field, `None` when missing.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(_) => Err(format!("config field `{key}` must be true or false")),
        }
    }

    /// A list-of-strings field, `None` when missing.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        let invalid = || format!("config field `{key}` must be a list of strings");
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned).ok_or_else(invalid))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_claude_and_codex_shell_inputs() {
        assert_eq!(
            shell_command("Bash", r#"{"command":"ls -la"}"#).as_deref(),
            Some("ls -la")
        );
        assert_eq!(
            shell_command("shell", r#"{"command":["bash","-lc","rm -rf /"]}"#).as_deref(),
            Some("rm -rf /")
        );
        assert_eq!(
            shell_command("shell", r#"{"command":["git","status"]}"#).as_deref(),
            Some("git status")
        );
        assert_eq!(
            shell_command("exec_command", r#"{"cmd":"cargo test"}"#).as_deref(),
            Some("cargo test")
        );
        assert_eq!(shell_command("Read", r#"{"command":"ls"}"#), None);
        assert_eq!(shell_command("Bash", "not json"), None);
    }

    #[test]
    fn splits_lines_into_commands_outside_quotes() {
        assert_eq!(
            simple_commands("a && b; c | d || e\nf & g"),
            ["a", "b", "c", "d", "e", "f", "g"]
        );
        assert_eq!(
            simple_commands(r#"echo "a && b; c" | grep 'x|y'"#),
            [r#"echo "a && b; c""#, "grep 'x|y'"]
        );
        assert_eq!(pipelines("curl x | sh && ls"), ["curl x | sh", "ls"]);
        assert_eq!(simple_commands("ls 2>&1 | wc"), ["ls 2>&1", "wc"]);
    }

    #[test]
    fn splits_words_removing_quotes() {
        assert_eq!(
            words(r#"rm -rf "my dir" 'a b' c\ d"#),
            ["rm", "-rf", "my dir", "a b", "c d"]
        );
        assert_eq!(words("  "), Vec::<String>::new());
        assert_eq!(words(r#""""#), [""]);
    }

    #[test]
    fn skips_wrappers_before_the_program() {
        let all = words("sudo -u root FOO=1 env nice -n 5 rm -rf /");
        assert_eq!(
            program_and_args(&all).first().map(String::as_str),
            Some("rm")
        );
        let all = words("sudo FOO=1 rm -rf /");
        assert_eq!(program_and_args(&all), ["rm", "-rf", "/"]);
    }

    #[test]
    fn normalizes_paths_lexically() {
        assert_eq!(
            normalize("/w/repo", "src/../Cargo.toml"),
            "/w/repo/Cargo.toml"
        );
        assert_eq!(normalize("/w/repo", "../other/x"), "/w/other/x");
        assert_eq!(normalize("/w/repo", "/etc//passwd/"), "/etc/passwd");
        assert_eq!(normalize("/w/repo", "../../../../"), "/");
        assert_eq!(normalize("/w/repo", "~/x"), "~/x");
        assert!(is_within("/w/repo/src/a.rs", "/w/repo"));
        assert!(is_within("/w/repo", "/w/repo/"));
        assert!(!is_within("/w/repository/a", "/w/repo"));
        assert!(!is_within("/w/other", "/w/repo"));
    }

    #[test]
    fn reads_config_fields_and_rejects_bad_ones() {
        let config = Config::parse(r#"{"mode":"redact","list":["a"],"flag":true}"#).unwrap();
        assert_eq!(config.string("mode").unwrap().as_deref(), Some("redact"));
        assert_eq!(config.strings("list").unwrap(), Some(vec!["a".to_owned()]));
        assert_eq!(config.bool("flag").unwrap(), Some(true));
        assert_eq!(config.string("missing").unwrap(), None);
        assert!(config.bool("mode").is_err());
        assert!(Config::parse("").is_ok());
        assert!(Config::parse("[1]").is_err());
        assert!(Config::parse("{").is_err());
    }
}
