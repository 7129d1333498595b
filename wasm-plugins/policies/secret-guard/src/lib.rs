//! `secret-guard`: a guardrail policy that keeps credentials out of prompts and tool inputs.
//!
//! It looks for AWS access key ids, GitHub tokens, private key blocks, Slack tokens and
//! `.env`-style `*SECRET*=`/`*API_KEY*=`/`*PASSWORD*=`/`*TOKEN*=` assignments with real-looking
//! values. Config `{"mode": "deny" | "redact"}` (default `deny`): deny with a reason that names
//! what was found but never the secret, or rewrite the input with each secret replaced by
//! `[REDACTED:<kind>]`.
//!
//! The scanning is plain Rust ([`find_secrets`], [`redact`], [`judge`]), tested natively; the
//! component glue at the bottom is compiled for wasm32 only.

use policy_support::{Config, json_strings};
use serde_json::Value;

/// Bindings for the `policy` world of `wit/guardrail.wit`.
// The generated lowering of `event` has many parameters; nothing to fix by hand.
#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "policy",
        additional_derives: [PartialEq, Eq],
    });
}

pub use bindings::tether::guardrail::types::{Decision, Payload};
pub use bindings::{Event, EventKind, Outcome};

/// The events this policy judges.
pub const EVENTS: [EventKind; 2] = [EventKind::UserPromptSubmit, EventKind::PreToolUse];

/// What to do when a secret is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Deny,
    Redact,
}

/// The policy's settings, read from its JSON config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
}

impl Settings {
    pub fn from_json(json: &str) -> Result<Self, String> {
        let config = Config::parse(json)?;
        let mode = match config.string("mode")?.as_deref() {
            None | Some("deny") => Mode::Deny,
            Some("redact") => Mode::Redact,
            Some(other) => return Err(format!("unknown mode `{other}`: use deny or redact")),
        };
        Ok(Self { mode })
    }
}

/// The kinds of secret recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    AwsAccessKey,
    GithubToken,
    PrivateKey,
    SlackToken,
    EnvSecret,
}

impl SecretKind {
    /// The tag used in `[REDACTED:<tag>]`.
    pub fn tag(self) -> &'static str {
        match self {
            Self::AwsAccessKey => "aws-access-key",
            Self::GithubToken => "github-token",
            Self::PrivateKey => "private-key",
            Self::SlackToken => "slack-token",
            Self::EnvSecret => "env-secret",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::AwsAccessKey => "an AWS access key",
            Self::GithubToken => "a GitHub token",
            Self::PrivateKey => "a private key",
            Self::SlackToken => "a Slack token",
            Self::EnvSecret => "a secret assignment (KEY=value)",
        }
    }
}

/// One secret found in a text: its kind and the byte range to redact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub kind: SecretKind,
    pub start: usize,
    pub end: usize,
}

/// Every secret in `text`, in order, not overlapping.
pub fn find_secrets(text: &str) -> Vec<Finding> {
    let bytes = text.as_bytes();
    let mut findings = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let prev = at
            .checked_sub(1)
            .and_then(|before| bytes.get(before))
            .copied();
        let found = if prev.is_some_and(is_word_byte) {
            None
        } else {
            aws_key(bytes, at)
                .or_else(|| github_token(bytes, at))
                .or_else(|| slack_token(bytes, at))
                .or_else(|| private_key(bytes, at))
                .or_else(|| env_secret(bytes, at))
        };
        match found {
            Some(finding) => {
                at = finding.end.max(at + 1);
                findings.push(finding);
            }
            None => at += 1,
        }
    }
    findings
}

/// `text` with every finding replaced by `[REDACTED:<kind>]`.
pub fn redact(text: &str, findings: &[Finding]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for finding in findings {
        out.push_str(text.get(copied..finding.start).unwrap_or_default());
        out.push_str("[REDACTED:");
        out.push_str(finding.kind.tag());
        out.push(']');
        copied = finding.end;
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    out
}

/// The policy: judges one event under `settings`.
pub fn judge(settings: &Settings, event: &Event) -> Outcome {
    match &event.payload {
        Payload::UserPromptSubmit(prompt) => {
            let findings = find_secrets(prompt);
            verdict(settings, "the prompt", &findings, || {
                redact(prompt, &findings)
            })
        }
        Payload::PreToolUse(call) => {
            let place = format!("the {} tool input", call.tool_name);
            match serde_json::from_str::<Value>(&call.tool_input) {
                Ok(mut input) => {
                    let findings: Vec<Finding> = json_strings(&input)
                        .into_iter()
                        .flat_map(find_secrets)
                        .collect();
                    verdict(settings, &place, &findings, || {
                        redact_json(&mut input);
                        input.to_string()
                    })
                }
                // Not JSON (no agent sends that, but a host bug might): judge the raw text.
                Err(_) => {
                    let findings = find_secrets(&call.tool_input);
                    verdict(settings, &place, &findings, || {
                        redact(&call.tool_input, &findings)
                    })
                }
            }
        }
        Payload::PostToolUse(_) | Payload::SessionStart(_) | Payload::Stop => allow(),
    }
}

fn verdict(
    settings: &Settings,
    place: &str,
    findings: &[Finding],
    redacted: impl FnOnce() -> String,
) -> Outcome {
    if findings.is_empty() {
        return allow();
    }
    let mut kinds: Vec<SecretKind> = Vec::new();
    for finding in findings {
        if !kinds.contains(&finding.kind) {
            kinds.push(finding.kind);
        }
    }
    let what = kinds
        .iter()
        .map(|kind| kind.describe())
        .collect::<Vec<_>>()
        .join(", ");
    match settings.mode {
        Mode::Deny => Outcome {
            verdict: Decision::Deny(format!(
                "secret-guard: {place} contains {what}. Remove it and refer to secrets by \
                 environment variable or secret manager name instead."
            )),
            context: None,
        },
        Mode::Redact => Outcome {
            verdict: Decision::Rewrite(redacted()),
            context: Some(format!(
                "secret-guard redacted {} secret(s) ({what}) from {place}; they appear as \
                 [REDACTED:<kind>]. Do not try to recover them.",
                findings.len()
            )),
        },
    }
}

fn redact_json(value: &mut Value) {
    match value {
        Value::String(text) => {
            let findings = find_secrets(text);
            if !findings.is_empty() {
                *text = redact(text, &findings);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        Value::Object(map) => map.values_mut().for_each(redact_json),
        _ => {}
    }
}

fn allow() -> Outcome {
    Outcome {
        verdict: Decision::Allow,
        context: None,
    }
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The length of the run at `at` of bytes accepted by `accept`.
fn run_len(bytes: &[u8], at: usize, accept: impl Fn(u8) -> bool) -> usize {
    bytes
        .get(at..)
        .unwrap_or_default()
        .iter()
        .take_while(|byte| accept(**byte))
        .count()
}

fn starts_with_at(bytes: &[u8], at: usize, prefix: &[u8]) -> bool {
    bytes.get(at..).is_some_and(|rest| rest.starts_with(prefix))
}

/// `AKIA`/`ASIA` and 16 upper-case letters or digits, as a whole word.
fn aws_key(bytes: &[u8], at: usize) -> Option<Finding> {
    if !(starts_with_at(bytes, at, b"AKIA") || starts_with_at(bytes, at, b"ASIA")) {
        return None;
    }
    let body = run_len(bytes, at + 4, |byte| {
        byte.is_ascii_uppercase() || byte.is_ascii_digit()
    });
    let end = at + 4 + 16;
    let ends_word = !bytes.get(end).copied().is_some_and(is_word_byte);
    (body == 16 && ends_word).then_some(Finding {
        kind: SecretKind::AwsAccessKey,
        start: at,
        end,
    })
}

/// `ghp_`/`gho_`/`ghs_`/`ghu_`/`ghr_` and at least 36 letters or digits, or `github_pat_` and at
/// least 22 letters, digits or underscores.
fn github_token(bytes: &[u8], at: usize) -> Option<Finding> {
    let classic = [b"ghp_", b"gho_", b"ghs_", b"ghu_", b"ghr_"];
    if classic
        .iter()
        .any(|prefix| starts_with_at(bytes, at, *prefix))
    {
        let body = run_len(bytes, at + 4, |byte| byte.is_ascii_alphanumeric());
        return (body >= 36).then_some(Finding {
            kind: SecretKind::GithubToken,
            start: at,
            end: at + 4 + body,
        });
    }
    if starts_with_at(bytes, at, b"github_pat_") {
        let body = run_len(bytes, at + 11, is_word_byte);
        return (body >= 22).then_some(Finding {
            kind: SecretKind::GithubToken,
            start: at,
            end: at + 11 + body,
        });
    }
    None
}

/// `xoxb-`, `xoxa-`, `xoxp-`, `xoxr-`, `xoxs-` and at least 10 token characters.
fn slack_token(bytes: &[u8], at: usize) -> Option<Finding> {
    let kind_byte = bytes.get(at + 3).copied()?;
    if !starts_with_at(bytes, at, b"xox")
        || !b"baprs".contains(&kind_byte)
        || bytes.get(at + 4) != Some(&b'-')
    {
        return None;
    }
    let body = run_len(bytes, at + 5, |byte| {
        byte.is_ascii_alphanumeric() || byte == b'-'
    });
    (body >= 10).then_some(Finding {
        kind: SecretKind::SlackToken,
        start: at,
        end: at + 5 + body,
    })
}

/// `-----BEGIN ... PRIVATE KEY-----` through the matching END line, or to the end of the text
/// when the block is cut off.
fn private_key(bytes: &[u8], at: usize) -> Option<Finding> {
    const MARKER: &[u8] = b"PRIVATE KEY-----";
    if !starts_with_at(bytes, at, b"-----BEGIN ") {
        return None;
    }
    // The label (`RSA `, `OPENSSH `, `ENCRYPTED `, ...) sits on the BEGIN line.
    let line_end = (at..bytes.len().min(at + 80))
        .find(|index| bytes.get(*index) == Some(&b'\n'))
        .unwrap_or(bytes.len().min(at + 80));
    let header = bytes.get(at..line_end)?;
    let header_end = at + find(header, MARKER)? + MARKER.len();
    let end = find(bytes.get(header_end..)?, b"-----END ")
        .and_then(|offset| {
            let footer = header_end + offset;
            find(bytes.get(footer..)?, MARKER).map(|marker| footer + marker + MARKER.len())
        })
        .unwrap_or(bytes.len());
    Some(Finding {
        kind: SecretKind::PrivateKey,
        start: at,
        end,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// `NAME=value` where NAME is an upper-case environment variable name naming a secret and the
/// value looks real. Only the value is reported, so redaction keeps the name.
fn env_secret(bytes: &[u8], at: usize) -> Option<Finding> {
    if !bytes.get(at)?.is_ascii_uppercase() {
        return None;
    }
    let name_len = run_len(bytes, at, |byte| {
        byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_'
    });
    let name = std::str::from_utf8(bytes.get(at..at + name_len)?).ok()?;
    if bytes.get(at + name_len) != Some(&b'=') || !names_secret(name) {
        return None;
    }
    let value_at = at + name_len + 1;
    let (start, end) = match bytes.get(value_at).copied() {
        Some(quote @ (b'"' | b'\'')) => {
            let len = run_len(bytes, value_at + 1, |byte| byte != quote && byte != b'\n');
            (value_at + 1, value_at + 1 + len)
        }
        _ => {
            let len = run_len(bytes, value_at, |byte| {
                !byte.is_ascii_whitespace() && !b"\"'`;&|,)".contains(&byte)
            });
            (value_at, value_at + len)
        }
    };
    let value = std::str::from_utf8(bytes.get(start..end)?).ok()?;
    is_real_value(value).then_some(Finding {
        kind: SecretKind::EnvSecret,
        start,
        end,
    })
}

/// Whether a variable name says it holds a secret: a `_`-separated part is or ends with SECRET,
/// PASSWORD, PASSWD or TOKEN, is APIKEY or CREDENTIALS, or is KEY after API, ACCESS or PRIVATE.
/// `SECRETARY` is not a secret; `DB_PASSWORD`, `GITHUB_TOKEN`, `OPENAI_API_KEY` are.
fn names_secret(name: &str) -> bool {
    let parts: Vec<&str> = name.split('_').collect();
    parts.iter().enumerate().any(|(index, part)| {
        ["SECRET", "PASSWORD", "PASSWD", "TOKEN"]
            .iter()
            .any(|word| part.ends_with(word))
            || ["APIKEY", "CREDENTIALS"].contains(part)
            || (*part == "KEY"
                && index
                    .checked_sub(1)
                    .and_then(|before| parts.get(before))
                    .is_some_and(|before| ["API", "ACCESS", "PRIVATE"].contains(before)))
    })
}

/// Whether an assigned value looks like a real secret rather than a placeholder or a reference.
fn is_real_value(value: &str) -> bool {
    const PLACEHOLDERS: [&str; 9] = [
        "changeme",
        "change_me",
        "example",
        "placeholder",
        "password",
        "secret",
        "redacted",
        "xxxxxx",
        "your_",
    ];
    let lower = value.to_ascii_lowercase();
    value.len() >= 6
        && !value.starts_with(['$', '<', '%', '{', '['])
        && !PLACEHOLDERS
            .iter()
            .any(|placeholder| lower.starts_with(placeholder))
        && value.chars().any(|ch| !value.starts_with(ch))
}

policy_support::policy_component!(SecretGuard, "secret-guard");

#[cfg(test)]
mod tests {
    use super::bindings::tether::guardrail::types::{Session, ToolCall, ToolResult};
    use super::*;

    const AWS: &str = "AKIAIOSFODNN7EXAMPLE";
    const GHP: &str = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";

    fn event(payload: Payload) -> Event {
        Event {
            session: Session {
                id: "s1".to_owned(),
                cwd: "/w/repo".to_owned(),
                agent: "claude-code".to_owned(),
                permission_mode: None,
            },
            payload,
        }
    }

    fn prompt(text: &str) -> Event {
        event(Payload::UserPromptSubmit(text.to_owned()))
    }

    fn bash(command: &str) -> Event {
        let input = serde_json::json!({ "command": command }).to_string();
        event(Payload::PreToolUse(ToolCall {
            tool_name: "Bash".to_owned(),
            tool_input: input,
        }))
    }

    fn kinds(text: &str) -> Vec<SecretKind> {
        find_secrets(text)
            .into_iter()
            .map(|finding| finding.kind)
            .collect()
    }

    const DENY: Settings = Settings { mode: Mode::Deny };
    const REDACT: Settings = Settings { mode: Mode::Redact };

    #[test]
    fn finds_aws_access_keys() {
        assert_eq!(
            kinds(&format!("key {AWS} here")),
            [SecretKind::AwsAccessKey]
        );
        assert_eq!(kinds("ASIAABCDEFGHIJKLMNOP"), [SecretKind::AwsAccessKey]);
        // Too short, too long, lower case, or inside a word.
        assert!(kinds("AKIAIOSFODNN7EXAMPL").is_empty());
        assert!(kinds("AKIAIOSFODNN7EXAMPLEX").is_empty());
        assert!(kinds("akiaiosfodnn7example").is_empty());
        assert!(kinds("XAKIAIOSFODNN7EXAMPLE").is_empty());
    }

    #[test]
    fn finds_github_tokens() {
        for prefix in ["ghp_", "gho_", "ghs_", "ghu_"] {
            let token = format!("{prefix}{}", "a1".repeat(18));
            assert_eq!(
                kinds(&format!("token: {token}")),
                [SecretKind::GithubToken],
                "{prefix}"
            );
        }
        let pat = format!("github_pat_{}", "A1b2_".repeat(16));
        assert_eq!(kinds(&pat), [SecretKind::GithubToken]);
        assert!(kinds("ghp_short").is_empty());
        assert!(kinds("github_pat_").is_empty());
    }

    #[test]
    fn finds_private_key_blocks_whole() {
        let block = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----";
        let text = format!("here:\n{block}\nthanks");
        let findings = find_secrets(&text);
        assert_eq!(findings.len(), 1);
        assert_eq!(
            redact(&text, &findings),
            "here:\n[REDACTED:private-key]\nthanks"
        );
        assert_eq!(
            kinds("-----BEGIN RSA PRIVATE KEY-----\nMIIE"),
            [SecretKind::PrivateKey]
        );
        assert!(kinds("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----").is_empty());
        assert!(kinds("-----BEGIN CERTIFICATE-----").is_empty());
    }

    #[test]
    fn finds_slack_tokens() {
        for kind in ['b', 'a', 'p', 'r', 's'] {
            let token = format!("xox{kind}-1234567890-abcdefghij");
            assert_eq!(kinds(&token), [SecretKind::SlackToken], "{token}");
        }
        assert!(kinds("xoxo-1234567890-abc").is_empty());
        assert!(kinds("xoxb-123").is_empty());
    }

    #[test]
    fn finds_env_assignments_with_real_values() {
        let env = "DB_PASSWORD=hunter2x\nOPENAI_API_KEY=\"sk-abc123def\"\nGITHUB_TOKEN=abcdef123";
        assert_eq!(kinds(env), [SecretKind::EnvSecret; 3]);
        assert_eq!(
            redact(env, &find_secrets(env)),
            "DB_PASSWORD=[REDACTED:env-secret]\nOPENAI_API_KEY=\"[REDACTED:env-secret]\"\n\
             GITHUB_TOKEN=[REDACTED:env-secret]"
        );
        assert_eq!(
            kinds("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG"),
            [SecretKind::EnvSecret]
        );
        assert_eq!(kinds("MY_SECRET='s3cr3t value'"), [SecretKind::EnvSecret]);
    }

    #[test]
    fn ignores_placeholders_references_and_lookalikes() {
        for text in [
            "the secretary said the token was fine",
            "SECRETARY=alice_smith",
            "PASSWORD=",
            "PASSWORD=abc",
            "API_KEY=$OPENAI_API_KEY",
            "API_KEY=${OPENAI_API_KEY}",
            "TOKEN=<your token>",
            "SECRET=changeme123",
            "DB_PASSWORD=xxxxxxxx",
            "password=hunter2hunter2",
            "KEY=abcdefghijk",
            "MONKEY=abcdefghijk",
            "set the API_KEY variable",
        ] {
            assert!(kinds(text).is_empty(), "{text}");
        }
    }

    #[test]
    fn denies_a_prompt_naming_the_kind_without_echoing_the_secret() {
        let outcome = judge(&DENY, &prompt(&format!("deploy with {AWS} and {GHP}")));
        let Decision::Deny(reason) = outcome.verdict else {
            panic!("{outcome:?}")
        };
        assert!(
            reason.contains("an AWS access key, a GitHub token"),
            "{reason}"
        );
        assert!(!reason.contains(AWS) && !reason.contains(GHP), "{reason}");
    }

    #[test]
    fn redacts_a_prompt_when_configured() {
        let outcome = judge(&REDACT, &prompt(&format!("use {AWS} please")));
        assert_eq!(
            outcome.verdict,
            Decision::Rewrite("use [REDACTED:aws-access-key] please".to_owned())
        );
        assert!(outcome.context.is_some());
    }

    #[test]
    fn redacts_inside_tool_input_json_keeping_it_valid() {
        let outcome = judge(
            &REDACT,
            &bash(&format!("curl -H 'Authorization: token {GHP}' x")),
        );
        let Decision::Rewrite(input) = outcome.verdict else {
            panic!("{outcome:?}")
        };
        let input: Value = serde_json::from_str(&input).unwrap();
        assert_eq!(
            input["command"],
            "curl -H 'Authorization: token [REDACTED:github-token]' x"
        );
    }

    #[test]
    fn denies_a_private_key_written_by_a_tool() {
        let content = "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n";
        let input = serde_json::json!({ "file_path": "/w/repo/k.pem", "content": content });
        let call = ToolCall {
            tool_name: "Write".to_owned(),
            tool_input: input.to_string(),
        };
        let outcome = judge(&DENY, &event(Payload::PreToolUse(call)));
        let Decision::Deny(reason) = outcome.verdict else {
            panic!("{outcome:?}")
        };
        assert!(
            reason.contains("Write tool input contains a private key"),
            "{reason}"
        );
    }

    #[test]
    fn allows_clean_events_and_events_it_does_not_judge() {
        assert_eq!(
            judge(&DENY, &prompt("refactor the secretary module")).verdict,
            Decision::Allow
        );
        assert_eq!(judge(&DENY, &bash("cargo test")).verdict, Decision::Allow);
        let result = ToolResult {
            tool_name: "Bash".to_owned(),
            tool_input: "{}".to_owned(),
            tool_response: format!("\"{AWS}\""),
        };
        assert_eq!(
            judge(&DENY, &event(Payload::PostToolUse(result))).verdict,
            Decision::Allow
        );
        assert_eq!(judge(&DENY, &event(Payload::Stop)).verdict, Decision::Allow);
    }

    #[test]
    fn reads_its_config_and_rejects_unknown_modes() {
        assert_eq!(Settings::from_json("{}").unwrap(), DENY);
        assert_eq!(Settings::from_json(r#"{"mode":"redact"}"#).unwrap(), REDACT);
        assert!(Settings::from_json(r#"{"mode":"warn"}"#).is_err());
        assert!(Settings::from_json("nope").is_err());
    }
}
