//! `tether approve SESSION REQUEST allow|deny`: a member's answer to a chat session's approval
//! request (`POST /v1/sessions/{id}/approvals/{request}`), as one line. `tether chat` answers
//! its prompts through the same call.

use anyhow::{Result, bail};
use std::process::ExitCode;
use tether::api::{self, ApiClient};
use tether::paths::Paths;
use tether_durable::chat::{Answerer, ApprovalRecord, Decision};

pub struct ApproveArgs {
    pub server: Option<String>,
    pub key: Option<String>,
    pub session: String,
    pub request: String,
    /// `allow` or `deny` (clap checks it).
    pub decision: String,
    pub reason: Option<String>,
}

pub async fn approve(paths: &Paths, args: ApproveArgs) -> Result<ExitCode> {
    let decision = match args.decision.as_str() {
        "allow" => Decision::Allow,
        "deny" => Decision::Deny,
        other => bail!("allow or deny, not {other:?}"),
    };
    let client = super::hosts::client(paths, args.server, args.key)?;
    let reason = args.reason.as_deref();
    match answer(&client, &args.session, &args.request, decision, reason).await {
        Ok(a) => {
            println!("{}", outcome_line(&a, None));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}", error_message(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Answers one approval request with the client's key.
pub(super) async fn answer(
    client: &ApiClient,
    session: &str,
    request: &str,
    decision: Decision,
    reason: Option<&str>,
) -> Result<ApprovalRecord, tether::Error> {
    let path = format!(
        "/v1/sessions/{}/approvals/{}",
        segment(session),
        segment(request)
    );
    let mut body = serde_json::Map::new();
    body.insert("decision".into(), decision.as_str().into());
    if let Some(r) = reason {
        body.insert("reason".into(), r.into());
    }
    client.post_json(&path, &body.into()).await
}

/// `allowed apr_1 (Bash) — answered by mem_1`, with the reason after a colon.
pub(super) fn outcome_line(record: &ApprovalRecord, tool: Option<&str>) -> String {
    let verb = match record.decision {
        Decision::Allow => "allowed",
        Decision::Deny => "denied",
    };
    let tool = tool.map(|t| format!(" ({t})")).unwrap_or_default();
    let by = match &record.answered_by {
        Answerer::Member { id, .. } => id.as_str(),
        Answerer::Timeout => "its timeout",
        Answerer::SessionEnded => "the session's end",
        Answerer::Withdrawn => "its withdrawal",
    };
    let reason = record
        .reason
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    format!(
        "{verb} {}{tool} — answered by {by}{reason}",
        record.request_id
    )
}

/// The server's own sentence for an API error; a hint for a refused key.
pub(super) fn error_message(e: &tether::Error) -> String {
    match e {
        tether::Error::Api { message, .. } if api::is_unauthorized(e) => {
            format!("{message}; log in again with `tether login` (or pass --key)")
        }
        tether::Error::Api { message, .. } => message.clone(),
        other => {
            // The whole chain, as `{:#}` shows it for anyhow errors.
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// Ids come from the command line: escaped so they stay one path segment.
fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(decision: Decision, answered_by: Answerer, reason: Option<&str>) -> ApprovalRecord {
        ApprovalRecord {
            request_id: "apr_1".into(),
            session_id: "ses_1".into(),
            decision,
            reason: reason.map(str::to_owned),
            answered_by,
            answered_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn outcome_lines_say_what_who_and_why() {
        let member = Answerer::Member {
            id: "mem_1".into(),
            role: "member".into(),
        };
        assert_eq!(
            outcome_line(&record(Decision::Allow, member.clone(), None), Some("Bash")),
            "allowed apr_1 (Bash) — answered by mem_1"
        );
        assert_eq!(
            outcome_line(&record(Decision::Deny, member, Some("not on main")), None),
            "denied apr_1 — answered by mem_1: not on main"
        );
        assert_eq!(
            outcome_line(&record(Decision::Deny, Answerer::Timeout, None), None),
            "denied apr_1 — answered by its timeout"
        );
    }

    #[test]
    fn api_errors_print_the_servers_sentence() {
        let e = tether::Error::Api {
            status: 409,
            code: "already_answered".into(),
            message: "apr_1 was already allowed by mem_2".into(),
        };
        assert_eq!(error_message(&e), "apr_1 was already allowed by mem_2");
        assert_eq!(segment("apr_1/../x"), "apr_1%2F..%2Fx");
    }
}
