//! `tether attach SESSION`: a session's terminal in this one, from any machine with a key.
//!
//! Output comes from the session's stream (a catch-up read from `--from`, then long-polls), so
//! attaching replays the session and then follows it live; it ends when the stream is closed.
//! When stdin is a terminal it is put in raw mode: keystrokes go to the agent
//! (`POST /v1/sessions/{id}/input`), this terminal's size follows to the agent's on attach and
//! on every resize, and the detach keys (default Ctrl-]) leave the agent running. Without a
//! terminal, stdin is forwarded as it comes, and its end just stops the forwarding.

use anyhow::{Context, Result, bail};
use base64::Engine;
use std::io::Write;
use std::process::ExitCode;
use tether::api::ApiClient;
use tether::paths::Paths;
use tether::streams::{Offset, StreamClient, StreamError};
use tether_durable::session::Session;
use tokio::io::AsyncReadExt;

pub struct AttachArgs {
    pub server: Option<String>,
    pub key: Option<String>,
    pub session: String,
    pub from: String,
    pub detach_keys: String,
    pub no_input: bool,
}

/// `start` (the default), `now`, a byte count, or an offset as the stream writes them.
fn parse_from(from: &str) -> Result<Offset> {
    match from {
        "start" | "-1" => Ok(Offset::start()),
        "now" => Ok(Offset::now()),
        n if n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() => {
            let bytes: i64 = n.parse().context("--from: too large")?;
            Ok(Offset::from(
                tether_durable::stream::Offset(bytes).to_string(),
            ))
        }
        o if tether_durable::stream::Offset::parse(o).is_some() => Ok(Offset::from(o)),
        _ => bail!("--from: start, now, a byte offset (e.g. 1024) or a stream offset"),
    }
}

/// `ctrl-]` or `ctrl-p,ctrl-q` (a sequence), or single characters: the bytes to watch for.
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>> {
    spec.split(',')
        .map(|k| {
            let k = k.trim();
            match k.strip_prefix("ctrl-") {
                Some(c) if c.len() == 1 => {
                    let b = c
                        .as_bytes()
                        .first()
                        .copied()
                        .unwrap_or(0)
                        .to_ascii_uppercase();
                    if (b'@'..=b'_').contains(&b) {
                        Ok(b & 0x1f)
                    } else {
                        bail!("--detach-keys: no control key for {c:?}")
                    }
                }
                None if k.len() == 1 => Ok(k.as_bytes().first().copied().unwrap_or(0)),
                _ => bail!("--detach-keys: keys like ctrl-] or ctrl-p,ctrl-q"),
            }
        })
        .collect()
}

/// Restores the terminal when attach ends, however it ends.
struct RawMode;

impl RawMode {
    fn enable() -> Result<Self> {
        crossterm::terminal::enable_raw_mode().context("putting the terminal in raw mode")?;
        Ok(Self)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

pub async fn attach(paths: &Paths, args: AttachArgs) -> Result<ExitCode> {
    let client = super::hosts::client(paths, args.server.clone(), args.key.clone())?;
    // The streams take the same key as the API.
    let key = client.bearer().context("not logged in")?.to_owned();
    let session: Session = client
        .get_json(&format!("/v1/sessions/{}", args.session))
        .await?;
    let offset = parse_from(&args.from)?;
    let detach = parse_detach_keys(&args.detach_keys)?;
    let streams = StreamClient::new(client.server(), &key)?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let interactive = !args.no_input && !session.status.is_final();
    let _raw = if tty && interactive {
        eprint!(
            "[tether: attached to {} ({}); detach with {}]\r\n",
            session.id,
            session.status.as_str(),
            args.detach_keys
        );
        Some(RawMode::enable()?)
    } else {
        None
    };
    let input = async {
        if !interactive {
            return std::future::pending::<Result<()>>().await;
        }
        if tty {
            let _ = send_size(&client, &session.id).await;
        }
        forward_input(&client, &session.id, &detach, tty).await
    };
    tokio::select! {
        r = output(&streams, &session.stream_path, offset) => {
            r?;
            let ended: Session = client.get_json(&format!("/v1/sessions/{}", session.id)).await?;
            eprint!("\r\n[tether: session {}: {}{}]\r\n", ended.id, ended.status.as_str(),
                ended.exit_code.map(|c| format!(", exit code {c}")).unwrap_or_default());
        }
        r = input => {
            r?;
            eprint!("\r\n[tether: detached from {}; it keeps running]\r\n", session.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies the stream to stdout from `offset` until the stream is closed.
async fn output(streams: &StreamClient, path: &str, mut offset: Offset) -> Result<()> {
    let mut stdout = std::io::stdout();
    let mut cursor: Option<String> = None;
    loop {
        let chunk = match streams.long_poll(path, &offset, cursor.as_deref()).await {
            Ok(c) => c,
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(e.retry_after().unwrap_or(std::time::Duration::from_secs(1)))
                    .await;
                continue;
            }
            Err(StreamError::NotFound { .. }) => bail!("the session's terminal stream is gone"),
            Err(e) => return Err(e.into()),
        };
        if !chunk.data.is_empty() {
            stdout.write_all(&chunk.data)?;
            stdout.flush()?;
        }
        offset = chunk.next_offset;
        cursor = chunk.cursor;
        if chunk.closed {
            return Ok(());
        }
    }
}

/// Forwards stdin to the session until the detach keys (or, without a terminal, the end of
/// stdin).
async fn forward_input(client: &ApiClient, id: &str, detach: &[u8], tty: bool) -> Result<()> {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 4096];
    let mut detector = Detach::new(detach);
    #[cfg(unix)]
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    loop {
        #[cfg(unix)]
        let n = tokio::select! {
            n = stdin.read(&mut buf) => n?,
            _ = winch.recv() => { let _ = send_size(client, id).await; continue; }
        };
        #[cfg(not(unix))]
        let n = stdin.read(&mut buf).await?;
        if n == 0 {
            if tty {
                return Ok(());
            }
            // Piped input ran out: keep showing the output.
            return std::future::pending().await;
        }
        let (out, detached) = match buf.get(..n) {
            Some(keys) if tty => detector.feed(keys),
            Some(keys) => (keys.to_vec(), false),
            None => (Vec::new(), false),
        };
        send(client, id, &out).await?;
        if detached {
            return Ok(());
        }
    }
}

/// Watches keystrokes for the detach sequence, across reads.
struct Detach<'a> {
    keys: &'a [u8],
    matched: usize,
}

impl<'a> Detach<'a> {
    fn new(keys: &'a [u8]) -> Self {
        Self { keys, matched: 0 }
    }

    /// The bytes to send on, and whether the sequence completed (what follows it is dropped).
    /// A partial sequence that does not complete is sent after all.
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.keys.get(self.matched) == Some(&b) {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return (out, true);
                }
                continue;
            }
            out.extend(self.keys.iter().take(self.matched));
            self.matched = 0;
            // The byte that broke a partial match may start a new one (a one-key sequence
            // always matched above).
            if self.keys.first() == Some(&b) {
                self.matched = 1;
                continue;
            }
            out.push(b);
        }
        (out, false)
    }
}

async fn send(client: &ApiClient, id: &str, bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    for piece in bytes.chunks(tether_durable::session::MAX_INPUT) {
        let body = serde_json::json!({
            "data_base64": base64::engine::general_purpose::STANDARD.encode(piece)
        });
        let sent: Result<serde_json::Value, _> = client
            .post_json(&format!("/v1/sessions/{id}/input"), &body)
            .await;
        match sent {
            Ok(_) => {}
            // Not running yet, or the host is away: say so, keep the attach.
            Err(e) if matches!(e.status(), Some(409 | 503)) => {
                eprint!("\r\n[tether: input not delivered: {e}]\r\n");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn send_size(client: &ApiClient, id: &str) -> Result<()> {
    let (cols, rows) = crossterm::terminal::size()?;
    let _: serde_json::Value = client
        .post_json(
            &format!("/v1/sessions/{id}/resize"),
            &serde_json::json!({ "cols": cols, "rows": rows }),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_detach_sequence_is_found_across_reads_and_partial_ones_are_typed() {
        let keys = parse_detach_keys("ctrl-p,ctrl-q").unwrap();
        let mut d = Detach::new(&keys);
        assert_eq!(d.feed(b"ls\r"), (b"ls\r".to_vec(), false));
        // Ctrl-P then something else: both are typed.
        assert_eq!(d.feed(&[0x10, b'x']), (vec![0x10, b'x'], false));
        // Ctrl-P, Ctrl-P, Ctrl-Q: the first Ctrl-P is typed, the rest detaches.
        assert_eq!(d.feed(&[b'a', 0x10]), (vec![b'a'], false));
        assert_eq!(d.feed(&[0x10, 0x11, b'z']), (vec![0x10], true));
        let single = parse_detach_keys("ctrl-]").unwrap();
        let mut d = Detach::new(&single);
        assert_eq!(d.feed(b"ab\x1dcd"), (b"ab".to_vec(), true));
    }

    #[test]
    fn detach_keys_and_offsets_parse() {
        assert_eq!(parse_detach_keys("ctrl-]").unwrap(), vec![0x1d]);
        assert_eq!(
            parse_detach_keys("ctrl-p,ctrl-q").unwrap(),
            vec![0x10, 0x11]
        );
        assert_eq!(parse_detach_keys("ctrl-P, q").unwrap(), vec![0x10, b'q']);
        assert!(parse_detach_keys("ctrl-").is_err() && parse_detach_keys("meta-x").is_err());
        assert_eq!(parse_from("start").unwrap().as_str(), "-1");
        assert_eq!(
            parse_from("1024").unwrap().as_str(),
            "0000000000000000_0000000000001024"
        );
        assert!(parse_from("0000000000000000_0000000000000007").is_ok());
        assert!(parse_from("x").is_err() && parse_from("99999999999999999999999").is_err());
    }
}
