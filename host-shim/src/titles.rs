//! Session titles from a small model, when this machine has an API key for one.
//!
//! The edge gives every session with a prompt a deterministic title at once
//! ([`tether_durable::chat::fallback_title`]). When the daemon's environment has
//! `ANTHROPIC_API_KEY` (model `claude-haiku-4-5`, endpoint `ANTHROPIC_BASE_URL` or the
//! public one) or else `OPENAI_API_KEY` (model `gpt-4o-mini`, `OPENAI_BASE_URL`), the daemon
//! asks that model for a better one when the session starts and reports it
//! (`PUT /v1/hosts/{host}/sessions/{id}/title`). `TETHER_TITLE_MODEL` picks another model;
//! `titles = false` under `[chat]` in config.toml turns it off. Any failure keeps the
//! fallback: nothing else needs a key.

use crate::host_auth::HostAuth;
use serde_json::{Value, json};
use std::time::Duration;
use tether_durable::chat::MAX_TITLE;
use tracing::{debug, warn};

/// How long the model may take.
const TIMEOUT: Duration = Duration::from_secs(15);
/// The most of the prompt the model sees.
const PROMPT_CHARS: usize = 4000;
const INSTRUCTIONS: &str = "You name coding-agent sessions. Reply with a title of at most \
    8 words for the task below: no quotes, no trailing period, nothing else.";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Provider {
    Anthropic,
    OpenAi,
}

/// The title maker: a provider, its key, endpoint and model; or none. It asks through the
/// daemon's own HTTP client.
pub struct Titles {
    provider: Option<(Provider, String, String, String)>,
}

impl Titles {
    /// No model: every title is the fallback.
    pub fn none() -> Self {
        Self { provider: None }
    }

    /// From the environment (see the module documentation).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let model = var("TETHER_TITLE_MODEL");
        let provider = if let Some(key) = var("ANTHROPIC_API_KEY") {
            let base =
                var("ANTHROPIC_BASE_URL").unwrap_or_else(|| "https://api.anthropic.com".into());
            Some((
                Provider::Anthropic,
                key,
                format!("{}/v1/messages", base.trim_end_matches('/')),
                model.unwrap_or_else(|| "claude-haiku-4-5".into()),
            ))
        } else {
            var("OPENAI_API_KEY").map(|key| {
                let base =
                    var("OPENAI_BASE_URL").unwrap_or_else(|| "https://api.openai.com/v1".into());
                (
                    Provider::OpenAi,
                    key,
                    format!("{}/chat/completions", base.trim_end_matches('/')),
                    model.unwrap_or_else(|| "gpt-4o-mini".into()),
                )
            })
        };
        Self { provider }
    }

    /// The model's title for `prompt`, cleaned up; None without a model or on any failure.
    pub async fn generate(&self, http: &reqwest::Client, prompt: &str) -> Option<String> {
        let (provider, key, url, model) = self.provider.as_ref()?;
        let prompt: String = prompt.chars().take(PROMPT_CHARS).collect();
        let request = match provider {
            Provider::Anthropic => http
                .post(url)
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01")
                .json(&json!({
                    "model": model, "max_tokens": 40, "system": INSTRUCTIONS,
                    "messages": [{"role": "user", "content": prompt}],
                })),
            Provider::OpenAi => http.post(url).bearer_auth(key).json(&json!({
                "model": model, "max_tokens": 40,
                "messages": [{"role": "system", "content": INSTRUCTIONS},
                             {"role": "user", "content": prompt}],
            })),
        };
        let answer = async {
            let response = request.timeout(TIMEOUT).send().await.ok()?;
            if !response.status().is_success() {
                debug!(status = %response.status(), "the title model refused");
                return None;
            }
            response.json::<Value>().await.ok()
        }
        .await?;
        let text = match provider {
            Provider::Anthropic => answer.pointer("/content/0/text"),
            Provider::OpenAi => answer.pointer("/choices/0/message/content"),
        }?
        .as_str()?;
        clean(text)
    }
}

/// Tells the edge a session's title (with the host's token); a few tries, then the fallback
/// stays.
pub async fn report(http: &reqwest::Client, auth: &HostAuth, session: &str, title: &str) {
    let url = format!(
        "{}/v1/hosts/{}/sessions/{session}/title",
        auth.server.trim_end_matches('/'),
        auth.host_id
    );
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(2 << attempt)).await;
        }
        let Ok(token) = auth.token().await else {
            continue;
        };
        match http
            .put(&url)
            .bearer_auth(token)
            .json(&json!({ "title": title }))
            .timeout(TIMEOUT)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return,
            Ok(r) if r.status().is_client_error() && r.status() != 401 => {
                warn!(status = %r.status(), "the edge refused the session's title");
                return;
            }
            Ok(r) => {
                if r.status() == 401 {
                    auth.invalidate();
                }
            }
            Err(e) => debug!(error = %e, "reporting a title failed"),
        }
    }
}

/// One line, no quotes or trailing period, whitespace collapsed, at most [`MAX_TITLE`]
/// characters; None when nothing is left.
fn clean(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line = line
        .trim_start_matches(|c: char| {
            matches!(c, '"' | '\'' | '*' | '#' | '`') || c.is_whitespace()
        })
        .trim_end_matches(|c: char| matches!(c, '"' | '\'' | '*' | '`' | '.') || c.is_whitespace());
    let line = line.strip_prefix("Title:").unwrap_or(line).trim();
    let words: Vec<&str> = line.split_whitespace().collect();
    let joined = words.join(" ");
    let title: String = joined.chars().take(MAX_TITLE).collect();
    let title = title.trim_end();
    (!title.is_empty()).then(|| title.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn model_answers_are_cleaned() {
        assert_eq!(
            clean("\"Fix flaky login test.\"\n").unwrap(),
            "Fix flaky login test"
        );
        assert_eq!(
            clean("\n  Title: Add  dark mode  \nmore").unwrap(),
            "Add dark mode"
        );
        let long = clean(&"word ".repeat(100)).unwrap();
        assert!(
            long.chars().count() <= MAX_TITLE && !long.ends_with(' '),
            "{long}"
        );
        assert_eq!(clean(" \"\" "), None);
    }
}
