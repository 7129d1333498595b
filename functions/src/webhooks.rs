//! Webhook deliveries from GitHub, Slack and Linear as plain functions: each provider's
//! signature check over the raw body (HMAC-SHA256 from `hmac`, compared in constant time by
//! `Mac::verify_slice`), its replay window, and what an event asks of us: a task, a reply (a
//! ping, Slack's URL check) or nothing. No storage and no clock here: the caller passes `now`.
//! The routes are in `api::webhooks`, the rows in `directory::webhooks`.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use tether_durable::validate::{DESCRIPTION_MAX, TITLE_MAX};

type HmacSha256 = Hmac<Sha256>;

/// Slack's replay window: `X-Slack-Request-Timestamp` within this many seconds of now.
pub const SLACK_WINDOW_SECS: u64 = 300;
/// Linear's: the payload's `webhookTimestamp` within this many milliseconds of now.
pub const LINEAR_WINDOW_MS: u64 = 60_000;

/// Where a webhook's deliveries come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
    Slack,
    Linear,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Slack => "slack",
            Self::Linear => "linear",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "github" => Some(Self::Github),
            "slack" => Some(Self::Slack),
            "linear" => Some(Self::Linear),
            _ => None,
        }
    }
}

/// Why a delivery was refused before anything in it was believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Missing, malformed or not made with the webhook's secret.
    Signature,
    /// Signed, but outside the replay window (or without a timestamp).
    Timestamp,
}

/// True when `tag_hex` is the HMAC-SHA256 of `parts` (concatenated) under `secret`.
fn signed(secret: &str, parts: &[&[u8]], tag_hex: &str) -> bool {
    let Ok(tag) = hex::decode(tag_hex.trim()) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(&tag).is_ok()
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn verify_github(secret: &str, signature: Option<&str>, body: &[u8]) -> Result<(), Rejection> {
    let tag = signature
        .and_then(|s| s.trim().strip_prefix("sha256="))
        .ok_or(Rejection::Signature)?;
    if signed(secret, &[body], tag) {
        Ok(())
    } else {
        Err(Rejection::Signature)
    }
}

/// Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:{timestamp}:{body}")>`, and
/// `X-Slack-Request-Timestamp` (seconds) at most [`SLACK_WINDOW_SECS`] from `now_secs`.
pub fn verify_slack(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), Rejection> {
    let ts = timestamp.map(str::trim).ok_or(Rejection::Signature)?;
    let tag = signature
        .and_then(|s| s.trim().strip_prefix("v0="))
        .ok_or(Rejection::Signature)?;
    if !signed(secret, &[b"v0:", ts.as_bytes(), b":", body], tag) {
        return Err(Rejection::Signature);
    }
    let at: i64 = ts.parse().map_err(|_| Rejection::Timestamp)?;
    if now_secs.abs_diff(at) > SLACK_WINDOW_SECS {
        return Err(Rejection::Timestamp);
    }
    Ok(())
}

/// Linear: `Linear-Signature: <hex HMAC-SHA256(secret, body)>`.
pub fn verify_linear(secret: &str, signature: Option<&str>, body: &[u8]) -> Result<(), Rejection> {
    let tag = signature.ok_or(Rejection::Signature)?;
    if signed(secret, &[body], tag) {
        Ok(())
    } else {
        Err(Rejection::Signature)
    }
}

/// Linear's replay window, checked on the (signed) payload's `webhookTimestamp` (ms).
pub fn linear_fresh(payload: &Value, now_ms: i64) -> Result<(), Rejection> {
    let at = payload
        .get("webhookTimestamp")
        .and_then(Value::as_i64)
        .ok_or(Rejection::Timestamp)?;
    if now_ms.abs_diff(at) > LINEAR_WINDOW_MS {
        return Err(Rejection::Timestamp);
    }
    Ok(())
}

/// True when `text` mentions `mention` (ASCII case-insensitive) as a whole word: not inside a
/// longer name (`@tetherbot`, `me@tether`), but before punctuation (`@tether,`).
pub fn mentions(text: &str, mention: &str) -> bool {
    if mention.is_empty() {
        return false;
    }
    let text = text.to_ascii_lowercase();
    let mention = mention.to_ascii_lowercase();
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    text.match_indices(&mention).any(|(at, _)| {
        let before = text.get(..at).and_then(|s| s.chars().next_back());
        let after = text
            .get(at + mention.len()..)
            .and_then(|s| s.chars().next());
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// A Slack message without its user mentions (`<@U123>`, `<@U123|ada>`).
pub fn strip_slack_mentions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((before, after)) = rest.split_once("<@") {
        out.push_str(before);
        match after.split_once('>') {
            Some((_, tail)) => rest = tail,
            None => {
                out.push_str("<@");
                rest = after;
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A task title from any text: one line, whitespace collapsed, no control characters, at most
/// the task title limit; `fallback` when nothing is left.
pub fn title(text: &str, fallback: &str) -> String {
    let line = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(TITLE_MAX)
        .collect::<String>();
    let line = line.trim();
    if line.is_empty() {
        fallback.to_owned()
    } else {
        line.to_owned()
    }
}

/// A task description: the text (control characters other than newlines and tabs dropped),
/// then the link on its own line, within the description limit.
pub fn description(text: &str, link: &str) -> String {
    let mut out = text.trim().to_owned();
    if !link.is_empty() {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(link);
    }
    out.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
        .take(DESCRIPTION_MAX)
        .collect()
}

/// What a webhook looks for in events.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Comments that mention this (e.g. `@tether`) become tasks.
    pub mention: &'a str,
    /// Issues given this label become tasks (GitHub); new issues need it (Linear).
    pub label: Option<&'a str>,
}

/// A task an event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDraft {
    pub title: String,
    pub description: String,
}

/// What to do with a verified delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Answer this JSON with 200 and do nothing else (a ping, Slack's URL check).
    Reply(Value),
    /// Create this task (once per delivery id).
    Task(TaskDraft),
    /// Nothing to do, and why.
    Ignored(String),
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn draft(title_from: &str, fallback: &str, body: &str, link: &str) -> Outcome {
    Outcome::Task(TaskDraft {
        title: title(title_from, fallback),
        description: description(body, link),
    })
}

/// A GitHub event (`X-GitHub-Event`) and its payload.
pub fn github(event: &str, payload: &Value, rules: Rules<'_>) -> Outcome {
    let action = text(payload, "/action");
    let not_mentioned =
        || Outcome::Ignored(format!("the comment does not mention {}", rules.mention));
    let by_bot = text(payload, "/comment/user/type") == "Bot";
    match (event, action) {
        ("ping", _) => Outcome::Reply(json!({"status": "pong"})),
        ("issue_comment" | "pull_request_review_comment", "created") if by_bot => {
            Outcome::Ignored("comments by bots are ignored".into())
        }
        ("issue_comment", "created") => {
            let body = text(payload, "/comment/body");
            if !mentions(body, rules.mention) {
                return not_mentioned();
            }
            draft(
                text(payload, "/issue/title"),
                "GitHub issue comment",
                body,
                text(payload, "/comment/html_url"),
            )
        }
        ("pull_request_review_comment", "created") => {
            let body = text(payload, "/comment/body");
            if !mentions(body, rules.mention) {
                return not_mentioned();
            }
            draft(
                text(payload, "/pull_request/title"),
                "GitHub review comment",
                body,
                text(payload, "/comment/html_url"),
            )
        }
        ("issues", "labeled") => match rules.label {
            None => Outcome::Ignored("this webhook has no label configured".into()),
            Some(label) if text(payload, "/label/name").eq_ignore_ascii_case(label) => draft(
                text(payload, "/issue/title"),
                "GitHub issue",
                text(payload, "/issue/body"),
                text(payload, "/issue/html_url"),
            ),
            Some(label) => Outcome::Ignored(format!("the label is not {label:?}")),
        },
        _ => {
            Outcome::Ignored(format!("{event} {action} events are not handled").replace("  ", " "))
        }
    }
}

/// A Slack Events API payload.
pub fn slack(payload: &Value) -> Outcome {
    match text(payload, "/type") {
        "url_verification" => match payload.get("challenge") {
            Some(Value::String(c)) => Outcome::Reply(json!({ "challenge": c })),
            _ => Outcome::Ignored("url_verification without a challenge".into()),
        },
        "event_callback" => match text(payload, "/event/type") {
            "app_mention" => {
                let said = strip_slack_mentions(text(payload, "/event/text"));
                let origin = format!(
                    "Slack: channel {}, user {}",
                    text(payload, "/event/channel"),
                    text(payload, "/event/user")
                );
                draft(&said, "Slack mention", &said, &origin)
            }
            other => Outcome::Ignored(format!("Slack event {other:?} is not handled")),
        },
        other => Outcome::Ignored(format!("Slack payload type {other:?} is not handled")),
    }
}

/// A Linear webhook payload.
pub fn linear(payload: &Value, rules: Rules<'_>) -> Outcome {
    let link = text(payload, "/url");
    match (text(payload, "/type"), text(payload, "/action")) {
        ("Issue", "create") => {
            if let Some(label) = rules.label {
                let has = payload
                    .pointer("/data/labels")
                    .and_then(Value::as_array)
                    .is_some_and(|labels| {
                        labels
                            .iter()
                            .any(|l| text(l, "/name").eq_ignore_ascii_case(label))
                    });
                if !has {
                    return Outcome::Ignored(format!("the issue is not labelled {label:?}"));
                }
            }
            draft(
                text(payload, "/data/title"),
                "Linear issue",
                text(payload, "/data/description"),
                link,
            )
        }
        ("Comment", "create") => {
            let body = text(payload, "/data/body");
            if !mentions(body, rules.mention) {
                return Outcome::Ignored(format!("the comment does not mention {}", rules.mention));
            }
            let issue = text(payload, "/data/issue/title");
            draft(
                if issue.is_empty() { body } else { issue },
                "Linear comment",
                body,
                link,
            )
        }
        (kind, action) => Outcome::Ignored(format!("Linear {kind} {action} is not handled")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, parts: &[&[u8]]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
        for p in parts {
            mac.update(p);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    const RULES: Rules<'static> = Rules {
        mention: "@tether",
        label: Some("tether"),
    };

    #[test]
    fn github_signatures() {
        let body = br#"{"action":"created"}"#;
        let good = format!("sha256={}", sign("s3cret", &[body]));
        assert_eq!(verify_github("s3cret", Some(&good), body), Ok(()));
        // GitHub's documented test vector.
        assert_eq!(
            verify_github(
                "It's a Secret to Everybody",
                Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
                b"Hello, World!"
            ),
            Ok(())
        );
        let bad = Err(Rejection::Signature);
        assert_eq!(
            verify_github("other", Some(&good), body),
            bad,
            "wrong secret"
        );
        assert_eq!(
            verify_github("s3cret", Some(&good), br#"{"action":"deleted"}"#),
            bad,
            "tampered body"
        );
        assert_eq!(verify_github("s3cret", None, body), bad, "missing header");
        let bare = good.trim_start_matches("sha256=");
        assert_eq!(verify_github("s3cret", Some(bare), body), bad, "no prefix");
        assert_eq!(
            verify_github("s3cret", Some(&good[..good.len() - 2]), body),
            bad,
            "truncated"
        );
        assert_eq!(verify_github("s3cret", Some("sha256=zz"), body), bad);
    }

    #[test]
    fn slack_signatures_and_window() {
        let body = br#"{"type":"event_callback"}"#;
        let now = 1_700_000_000;
        let at = |ts: i64| {
            let t = ts.to_string();
            let sig = format!("v0={}", sign("slk", &[b"v0:", t.as_bytes(), b":", body]));
            verify_slack("slk", Some(&t), Some(&sig), body, now)
        };
        assert_eq!(at(now), Ok(()));
        assert_eq!(at(now - 300), Ok(()), "300 s old is inside the window");
        assert_eq!(at(now + 300), Ok(()), "300 s ahead is inside the window");
        assert_eq!(at(now - 301), Err(Rejection::Timestamp), "stale");
        assert_eq!(at(now + 301), Err(Rejection::Timestamp), "future");
        let t = now.to_string();
        let sig = format!("v0={}", sign("slk", &[b"v0:", t.as_bytes(), b":", body]));
        let bad = Err(Rejection::Signature);
        assert_eq!(verify_slack("other", Some(&t), Some(&sig), body, now), bad);
        assert_eq!(
            verify_slack("slk", Some(&t), Some(&sig), b"{}", now),
            bad,
            "tampered body"
        );
        let later = (now + 1).to_string();
        assert_eq!(
            verify_slack("slk", Some(&later), Some(&sig), body, now),
            bad,
            "the timestamp is signed too"
        );
        assert_eq!(verify_slack("slk", None, Some(&sig), body, now), bad);
        assert_eq!(verify_slack("slk", Some(&t), None, body, now), bad);
    }

    #[test]
    fn linear_signatures_and_window() {
        let body = br#"{"type":"Issue"}"#;
        let sig = sign("lin", &[body]);
        assert_eq!(verify_linear("lin", Some(&sig), body), Ok(()));
        assert_eq!(
            verify_linear("lin", Some(&sig), br#"{"type":"Comment"}"#),
            Err(Rejection::Signature)
        );
        assert_eq!(
            verify_linear("nil", Some(&sig), body),
            Err(Rejection::Signature)
        );
        assert_eq!(verify_linear("lin", None, body), Err(Rejection::Signature));
        let now = 1_700_000_000_000;
        let fresh = |ts: i64| linear_fresh(&json!({ "webhookTimestamp": ts }), now);
        assert_eq!(fresh(now - 60_000), Ok(()));
        assert_eq!(fresh(now - 60_001), Err(Rejection::Timestamp));
        assert_eq!(fresh(now + 60_001), Err(Rejection::Timestamp));
        assert_eq!(linear_fresh(&json!({}), now), Err(Rejection::Timestamp));
    }

    #[test]
    fn mentions_are_whole_words_in_any_case() {
        for yes in [
            "@tether fix it",
            "hey @Tether, please",
            "(@TETHER)",
            "ping @tether.",
            "line one\n@tether",
        ] {
            assert!(mentions(yes, "@tether"), "{yes}");
        }
        for no in [
            "@tetherbot fix",
            "me@tether.dev",
            "tether fix",
            "@tether_x",
            "@tether-ci",
            "",
        ] {
            assert!(!mentions(no, "@tether"), "{no}");
        }
        assert!(!mentions("anything", ""));
    }

    #[test]
    fn slack_text_loses_its_mentions_and_titles_are_capped() {
        assert_eq!(
            strip_slack_mentions("<@U0LAN0Z89> fix <@U1|ada> the build <@"),
            " fix  the build <@"
        );
        assert_eq!(title("  a\n\tb  ", "x"), "a b");
        assert_eq!(title(" \n ", "fallback"), "fallback");
        assert_eq!(title(&"é".repeat(500), "x").chars().count(), TITLE_MAX);
        assert_eq!(description("body", "https://x"), "body\n\nhttps://x");
        assert_eq!(description("a\u{7}b", ""), "ab");
    }

    #[test]
    fn github_events() {
        let comment = |body: &str| {
            json!({"action": "created", "issue": {"title": "Spelling error"},
                   "comment": {"body": body, "html_url": "https://github.com/o/r/issues/1#c1",
                               "user": {"type": "User"}}})
        };
        match github("issue_comment", &comment("@tether fix it"), RULES) {
            Outcome::Task(t) => {
                assert_eq!(t.title, "Spelling error");
                assert!(t.description.starts_with("@tether fix it"));
                assert!(
                    t.description
                        .ends_with("https://github.com/o/r/issues/1#c1")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            github("issue_comment", &comment("no mention"), RULES),
            Outcome::Ignored(_)
        ));
        let mut bot = comment("@tether again");
        bot["comment"]["user"]["type"] = json!("Bot");
        assert!(matches!(
            github("issue_comment", &bot, RULES),
            Outcome::Ignored(_)
        ));
        let labeled = |name: &str| {
            json!({"action": "labeled", "label": {"name": name},
                   "issue": {"title": "Crash", "body": null, "html_url": "https://x/1"}})
        };
        assert!(matches!(
            github("issues", &labeled("Tether"), RULES),
            Outcome::Task(TaskDraft { ref title, .. }) if title == "Crash"
        ));
        assert!(matches!(
            github("issues", &labeled("bug"), RULES),
            Outcome::Ignored(_)
        ));
        let no_label = Rules {
            mention: "@tether",
            label: None,
        };
        assert!(matches!(
            github("issues", &labeled("tether"), no_label),
            Outcome::Ignored(_)
        ));
        assert_eq!(
            github("ping", &json!({"zen": "x"}), RULES),
            Outcome::Reply(json!({"status": "pong"}))
        );
        assert!(matches!(
            github("push", &json!({}), RULES),
            Outcome::Ignored(_)
        ));
    }

    #[test]
    fn slack_and_linear_events() {
        assert_eq!(
            slack(&json!({"type": "url_verification", "challenge": "abc"})),
            Outcome::Reply(json!({"challenge": "abc"}))
        );
        let mention = json!({"type": "event_callback", "event_id": "Ev1",
            "event": {"type": "app_mention", "text": "<@U0LAN0Z89> deploy the docs", "user": "U1", "channel": "C1"}});
        match slack(&mention) {
            Outcome::Task(t) => assert_eq!(t.title, "deploy the docs"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            slack(&json!({"type": "event_callback", "event": {"type": "message"}})),
            Outcome::Ignored(_)
        ));
        let issue = |labels: Value| {
            json!({"type": "Issue", "action": "create",
                   "data": {"title": "Broken link", "description": "in docs", "labels": labels}})
        };
        assert!(matches!(
            linear(&issue(json!([{"name": "Tether"}])), RULES),
            Outcome::Task(_)
        ));
        assert!(matches!(
            linear(&issue(json!([{"name": "bug"}])), RULES),
            Outcome::Ignored(_)
        ));
        let any = Rules {
            mention: "@tether",
            label: None,
        };
        assert!(matches!(linear(&issue(json!([])), any), Outcome::Task(_)));
        let comment = |body: &str| {
            json!({"type": "Comment", "action": "create",
                   "data": {"body": body, "issue": {"title": "Broken link"}}})
        };
        assert!(matches!(
            linear(&comment("@tether take it"), RULES),
            Outcome::Task(TaskDraft { ref title, .. }) if title == "Broken link"
        ));
        assert!(matches!(
            linear(&comment("thanks"), RULES),
            Outcome::Ignored(_)
        ));
        assert!(matches!(
            linear(&json!({"type": "Issue", "action": "update"}), RULES),
            Outcome::Ignored(_)
        ));
    }
}
