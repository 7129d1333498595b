//! `tether chat SESSION`: a chat session's conversation in this terminal, from any machine with
//! a key.
//!
//! The events come from the session's JSON stream: catch-up reads from `--from` until up to
//! date, then long-polls until the stream is closed. Each is rendered as lines ([`render`], a
//! pure function of the event and a [`RenderState`]) or, with `--json`, passed on as one JSON
//! line. Events this build does not know (a newer type, or a newer schema version) are skipped.
//!
//! With a terminal on stdin, once caught up, approval requests still open are asked about
//! (`Allow Bash? [y]es / [n]o / [s]kip: `) and other lines typed go to the agent as follow-ups.
//! Stdin is read on a thread of its own, not with tokio's stdin: its blocking read cannot be
//! cancelled and would hold the runtime's shutdown until the next Enter.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::HashSet;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use tether::api::ApiClient;
use tether::paths::Paths;
use tether::streams::{Offset, StreamClient, StreamError};
use tether_durable::chat::{
    Answerer, ApprovalSource, Decision, Event, EventBody, Role, SCHEMA_VERSION, ToolStatus, Usage,
};
use tether_durable::session::{Session, SessionKind};
use tokio::sync::mpsc;

pub struct ChatArgs {
    pub server: Option<String>,
    pub key: Option<String>,
    pub session: String,
    pub from: String,
    pub no_follow: bool,
    pub json: bool,
    pub no_input: bool,
}

/// The agent's name until `session_started` gives it.
const DEFAULT_AGENT: &str = "agent";
/// How much of a thinking block is shown.
const THINKING_CHARS: usize = 300;
/// How much of a tool's input (compact JSON) is shown.
const INPUT_CHARS: usize = 200;
/// How many lines of a tool's output are shown, and how much of each.
const OUTPUT_LINES: usize = 5;
const OUTPUT_LINE_CHARS: usize = 200;

/// `start` (the default), `now`, or an offset as the stream writes them. (Byte counts, which
/// `tether attach` takes, could land inside a JSON message.)
fn parse_from(from: &str) -> Result<Offset> {
    match from {
        "start" | "-1" => Ok(Offset::start()),
        "now" => Ok(Offset::now()),
        o if tether_durable::stream::Offset::parse(o).is_some() => Ok(Offset::from(o)),
        _ => bail!("--from: start, now, or a stream offset (0000000000000000_0000000000001024)"),
    }
}

/// A stream message as an event this build understands; None for an unknown type or a newer
/// schema version.
pub fn parse_event(message: &Value) -> Option<Event> {
    let v = message.get("v")?.as_u64()?;
    if v > u64::from(SCHEMA_VERSION) {
        return None;
    }
    serde_json::from_value(message.clone()).ok()
}

/// A request the chat may still ask about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenApproval {
    pub request_id: String,
    pub tool: String,
}

/// What [`render`] remembers between events.
#[derive(Debug)]
pub struct RenderState {
    color: bool,
    session_id: String,
    agent: String,
    /// The message whose deltas are on the current line, which is not ended yet.
    line: Option<String>,
    /// Messages shown through their deltas: their final `message` only ends the line.
    streamed: HashSet<String>,
    /// Approval requests not answered yet, oldest first.
    approvals: Vec<OpenApproval>,
}

impl RenderState {
    pub fn new(session_id: &str, color: bool) -> Self {
        Self {
            color,
            session_id: session_id.to_owned(),
            agent: DEFAULT_AGENT.to_owned(),
            line: None,
            streamed: HashSet::new(),
            approvals: Vec::new(),
        }
    }

    /// Whether the last output left a line open (a message still streaming).
    pub fn line_open(&self) -> bool {
        self.line.is_some()
    }

    /// Forgets the open line (something else ends it); whether there was one.
    fn end_line(&mut self) -> bool {
        self.line.take().is_some()
    }

    pub fn open_approvals(&self) -> &[OpenApproval] {
        &self.approvals
    }

    fn is_open(&self, request_id: &str) -> bool {
        self.approvals.iter().any(|a| a.request_id == request_id)
    }
}

#[derive(Clone, Copy)]
enum Tone {
    Dim,
    Bold,
    Red,
    Green,
    Yellow,
    Alert,
}

fn paint(color: bool, tone: Tone, text: &str) -> String {
    use crossterm::style::Stylize;
    if !color {
        return text.to_owned();
    }
    match tone {
        Tone::Dim => text.dim().to_string(),
        Tone::Bold => text.bold().to_string(),
        Tone::Red => text.red().to_string(),
        Tone::Green => text.green().to_string(),
        Tone::Yellow => text.yellow().to_string(),
        Tone::Alert => text.yellow().bold().to_string(),
    }
}

/// What an event shows, as pieces to write one after the other: whole lines end in `\n`; a
/// message's deltas are written as they come, and the line is ended by its final `message`
/// (which is then not repeated) or by whatever is shown next.
pub fn render(event: &Event, st: &mut RenderState) -> Vec<String> {
    let c = st.color;
    let mut lines: Vec<String> = Vec::new();
    match &event.body {
        EventBody::MessageDelta {
            message_id,
            role,
            text,
        } => {
            if text.is_empty() {
                return Vec::new();
            }
            let mut out = Vec::new();
            if st.line.as_deref() != Some(message_id.as_str()) {
                if st.end_line() {
                    out.push("\n".to_owned());
                }
                out.push(speaker(st, *role));
                st.line = Some(message_id.clone());
            }
            st.streamed.insert(message_id.clone());
            out.push(clean(text));
            return out;
        }
        EventBody::Message {
            message_id,
            role,
            text,
            attachments,
            sent_by,
        } => {
            if st.streamed.remove(message_id) {
                // Its text is on screen already.
                return if st.line.as_deref() == Some(message_id.as_str()) {
                    st.line = None;
                    vec!["\n".to_owned()]
                } else {
                    Vec::new()
                };
            }
            lines.push(format!("{}{}", speaker(st, *role), clean(text)));
            if let Some(by) = sent_by {
                lines.push(paint(c, Tone::Dim, &format!("  sent by {}", clean(by))));
            }
            for a in attachments {
                lines.push(paint(
                    c,
                    Tone::Dim,
                    &format!(
                        "  attached {} at {} ({} bytes)",
                        clean(&a.name),
                        clean(&a.path),
                        group(a.bytes)
                    ),
                ));
            }
        }
        EventBody::SessionStarted {
            agent,
            protocol,
            model,
            ..
        } => {
            st.agent = clean(agent);
            let mut head = format!("── {} ({})", st.agent, clean(protocol));
            if let Some(m) = model {
                head.push_str(&format!(" · {}", clean(m)));
            }
            head.push_str(&format!(" · started {}", clock(&event.at)));
            lines.push(paint(c, Tone::Dim, &head));
        }
        // Reasoning is shown once whole.
        EventBody::ThinkingDelta { .. } => return Vec::new(),
        EventBody::Thinking { text, .. } => {
            let text = truncate(&clean(text), THINKING_CHARS);
            for l in format!("thinking› {text}").lines() {
                lines.push(paint(c, Tone::Dim, l));
            }
        }
        EventBody::Tool {
            name,
            status,
            input,
            output,
            reason,
            ..
        } => {
            let name = clean(name);
            match status {
                ToolStatus::Created => lines.push(match input {
                    Some(i) => format!("⚙ {name} {}", compact(i)),
                    None => format!("⚙ {name}"),
                }),
                ToolStatus::AwaitingApproval => lines.push(paint(
                    c,
                    Tone::Yellow,
                    &format!("? {name} awaiting approval"),
                )),
                ToolStatus::Running => {
                    lines.push(paint(c, Tone::Dim, &format!("… {name} running")));
                }
                ToolStatus::Succeeded => {
                    lines.push(paint(c, Tone::Green, &format!("✓ {name} succeeded")));
                    output_lines(c, output.as_deref(), &mut lines);
                }
                ToolStatus::Failed => {
                    let head = because(format!("✗ {name} failed"), reason.as_deref());
                    lines.push(paint(c, Tone::Red, &head));
                    output_lines(c, output.as_deref(), &mut lines);
                }
                ToolStatus::Denied => {
                    let head = because(format!("⊘ {name} denied"), reason.as_deref());
                    lines.push(paint(c, Tone::Yellow, &head));
                }
            }
        }
        EventBody::ApprovalRequested {
            request_id,
            tool,
            input,
            source,
            reason,
            expires_at,
            default,
            role,
            ..
        } => {
            let tool = clean(tool);
            let request_id = clean(request_id);
            lines.push(paint(
                c,
                Tone::Alert,
                &format!("▶ approval requested: {tool} ({request_id})"),
            ));
            let mut field = |name: &str, value: String| {
                lines.push(paint(c, Tone::Yellow, &format!("  {name:<8} {value}")));
            };
            field("input", compact(input));
            if let Some(r) = reason {
                field("reason", clean(r));
            }
            field(
                "source",
                match source {
                    ApprovalSource::Agent => "the agent's permission check",
                    ApprovalSource::Guardrail => "a guardrail policy",
                }
                .to_owned(),
            );
            field(
                "expires",
                format!("{}, then {}", clock(expires_at), default.as_str()),
            );
            if role != "member" {
                field("needs", format!("{} or above", clean(role)));
            }
            field(
                "answer",
                format!(
                    "tether approve {} {request_id} allow|deny",
                    clean(&st.session_id)
                ),
            );
            if !st.is_open(&request_id) {
                st.approvals.push(OpenApproval {
                    request_id: request_id.clone(),
                    tool: tool.clone(),
                });
            }
        }
        EventBody::ApprovalAnswered {
            request_id,
            decision,
            reason,
            answered_by,
        } => {
            let request_id = clean(request_id);
            let tool = st
                .approvals
                .iter()
                .position(|a| a.request_id == request_id)
                .map(|i| st.approvals.remove(i).tool);
            let (mark, verb, tone) = match decision {
                Decision::Allow => ("✔", "allowed", Tone::Green),
                Decision::Deny => ("✘", "denied", Tone::Red),
            };
            let who = match answered_by {
                Answerer::Member { id, role } => format!("by {} ({})", clean(id), clean(role)),
                Answerer::Timeout => "by its timeout (default)".to_owned(),
                Answerer::SessionEnded => "as the session ended".to_owned(),
                Answerer::Withdrawn => "as the agent stopped waiting".to_owned(),
            };
            let head = match tool {
                Some(t) => format!("{mark} {t} {verb} {who}"),
                None => format!("{mark} {verb} {who}"),
            };
            lines.push(paint(c, tone, &because(head, reason.as_deref())));
        }
        EventBody::TurnEnded {
            is_error,
            duration_ms,
            ..
        } => {
            let took = duration_ms
                .map(|ms| format!(" ({:.1} s)", ms as f64 / 1000.0))
                .unwrap_or_default();
            lines.push(if *is_error {
                paint(c, Tone::Red, &format!("── turn ended with an error{took}"))
            } else {
                paint(c, Tone::Dim, &format!("── turn ended{took}"))
            });
        }
        EventBody::Usage(u) => lines.push(paint(c, Tone::Dim, &usage(u))),
        EventBody::Error { message, code } => {
            let code = code
                .as_deref()
                .map(|c| format!(" ({})", clean(c)))
                .unwrap_or_default();
            lines.push(paint(
                c,
                Tone::Red,
                &format!("error: {}{code}", clean(message)),
            ));
        }
        EventBody::Title { title, .. } => {
            lines.push(paint(c, Tone::Dim, &format!("title: {}", clean(title))));
        }
        EventBody::SessionEnded {
            status,
            exit_code,
            reason,
        } => {
            let mut head = format!("── session {}", clean(status));
            if let Some(code) = exit_code {
                head.push_str(&format!(" (code {code})"));
            }
            let tone = if status == "failed" {
                Tone::Red
            } else {
                Tone::Bold
            };
            lines.push(paint(c, tone, &because(head, reason.as_deref())));
        }
    }
    let mut out = Vec::with_capacity(lines.len() + 1);
    if !lines.is_empty() && st.end_line() {
        out.push("\n".to_owned());
    }
    out.extend(lines.into_iter().map(|l| l + "\n"));
    out
}

/// `you› ` or `claude› `.
fn speaker(st: &RenderState, role: Role) -> String {
    let who = match role {
        Role::User => "you›".to_owned(),
        Role::Assistant => format!("{}›", st.agent),
    };
    format!("{} ", paint(st.color, Tone::Bold, &who))
}

fn because(head: String, reason: Option<&str>) -> String {
    match reason.filter(|r| !r.is_empty()) {
        Some(r) => format!("{head}: {}", clean(r)),
        None => head,
    }
}

fn output_lines(color: bool, output: Option<&str>, lines: &mut Vec<String>) {
    let Some(output) = output else { return };
    let all: Vec<&str> = output.lines().collect();
    for l in all.iter().take(OUTPUT_LINES) {
        let l = truncate(&clean(l), OUTPUT_LINE_CHARS);
        lines.push(paint(color, Tone::Dim, &format!("  {l}")));
    }
    if all.len() > OUTPUT_LINES {
        let more = all.len() - OUTPUT_LINES;
        lines.push(paint(color, Tone::Dim, &format!("  … {more} more lines")));
    }
}

/// `tokens: in 1 234 · out 567 · cache 0 · $0.0123`.
fn usage(u: &Usage) -> String {
    let mut parts = vec![
        format!("in {}", group(u.input_tokens)),
        format!("out {}", group(u.output_tokens)),
    ];
    parts.push(format!("cache {}", group(u.cache_read_tokens.unwrap_or(0))));
    if let Some(w) = u.cache_write_tokens.filter(|w| *w > 0) {
        parts.push(format!("cache write {}", group(w)));
    }
    if let Some(cost) = u.cost_usd {
        parts.push(format!("${cost:.4}"));
    }
    format!("tokens: {}", parts.join(" · "))
}

/// `1234567` as `1 234 567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(d);
    }
    out
}

/// The time of day of an RFC 3339 stamp, in UTC (the stamp itself when it does not parse).
fn clock(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or_else(|_| clean(at))
}

/// A JSON value on one line, cut to [`INPUT_CHARS`].
fn compact(v: &Value) -> String {
    truncate(&clean(&v.to_string()), INPUT_CHARS)
}

fn truncate(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or(s)),
        None => s.to_owned(),
    }
}

/// Agents write what they like: no escape sequences or other control characters reach the
/// terminal (newlines and tabs do).
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect()
}

/// What the stream reader hands over.
enum Feed {
    /// The messages of one read, as JSON.
    Messages(Vec<Value>),
    /// The first read that was up to date: everything before this offset was handed over.
    CaughtUp(Offset),
    Closed,
    Failed(anyhow::Error),
}

/// How a chat ended.
enum End {
    /// The stream is closed: the session is over.
    Closed,
    /// `--no-follow` and up to date at this offset.
    CaughtUp(Offset),
    /// Stdin ended (Ctrl-D), or stdout went away.
    Left,
}

/// Reads the stream into `tx`: catch-up reads until up to date, then (following) long-polls
/// until the stream is closed. Retries what is retryable.
async fn read_stream(
    streams: StreamClient,
    path: String,
    offset: Offset,
    follow: bool,
    tx: mpsc::Sender<Feed>,
) {
    if let Err(e) = pump(&streams, &path, offset, follow, &tx).await {
        let _ = tx.send(Feed::Failed(e)).await;
    }
}

async fn pump(
    streams: &StreamClient,
    path: &str,
    mut offset: Offset,
    follow: bool,
    tx: &mpsc::Sender<Feed>,
) -> Result<()> {
    let mut live = false;
    let mut cursor: Option<String> = None;
    loop {
        let read = if live {
            streams.long_poll(path, &offset, cursor.as_deref()).await
        } else {
            streams.read(path, &offset).await
        };
        let chunk = match read {
            Ok(c) => c,
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(e.retry_after().unwrap_or(std::time::Duration::from_secs(1)))
                    .await;
                continue;
            }
            Err(StreamError::NotFound { .. }) => bail!("the session's chat stream is gone"),
            Err(e) => return Err(e.into()),
        };
        let messages = messages(&chunk.data).context("the chat stream holds no JSON array")?;
        if !messages.is_empty() && tx.send(Feed::Messages(messages)).await.is_err() {
            return Ok(());
        }
        // A read that does not move the offset cannot make progress: up to date too.
        let stalled = chunk.next_offset == offset;
        offset = chunk.next_offset;
        cursor = chunk.cursor;
        if chunk.closed {
            let _ = tx.send(Feed::Closed).await;
            return Ok(());
        }
        if !live && (chunk.up_to_date || stalled) {
            live = true;
            if tx.send(Feed::CaughtUp(offset.clone())).await.is_err() || !follow {
                return Ok(());
            }
        }
    }
}

/// A JSON stream's read: an array of messages (an empty body is none).
fn messages(data: &[u8]) -> Result<Vec<Value>, serde_json::Error> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    serde_json::from_slice(data)
}

pub async fn chat(paths: &Paths, args: ChatArgs) -> Result<ExitCode> {
    let client = super::hosts::client(paths, args.server.clone(), args.key.clone())?;
    // The streams take the same key as the API.
    let key = client.bearer().context("not logged in")?.to_owned();
    let session: Session = client
        .get_json(&format!("/v1/sessions/{}", args.session))
        .await?;
    if session.kind != SessionKind::Chat {
        bail!(
            "{} is a {} session: use `tether attach {}`",
            session.id,
            session.kind.as_str(),
            session.id
        );
    }
    let offset = parse_from(&args.from)?;
    let streams = StreamClient::new(client.server(), &key)?;
    let follow = !args.no_follow;
    let (tx, feed) = mpsc::channel(16);
    tokio::spawn(read_stream(
        streams,
        session.stream_path.clone(),
        offset,
        follow,
        tx,
    ));
    let ended = if args.json {
        print_json(feed, follow)
            .await
            .or_else(|e| broken_pipe(e, End::Left))?
    } else {
        let color = std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let interactive = follow
            && !args.no_input
            && !session.status.is_final()
            && std::io::stdin().is_terminal();
        let mut screen = Screen::new(&session.id, color);
        let r = converse(&mut screen, &client, &session.id, feed, follow, interactive).await;
        let _ = screen.finish();
        r.or_else(|e| broken_pipe(e, End::Left))?
    };
    match ended {
        End::Closed => match client
            .get_json::<Session>(&format!("/v1/sessions/{}", session.id))
            .await
        {
            Ok(s) => eprintln!(
                "[tether: session {}: {}{}]",
                s.id,
                s.status.as_str(),
                s.exit_code
                    .map(|c| format!(", exit code {c}"))
                    .unwrap_or_default()
            ),
            Err(_) => eprintln!("[tether: session {} ended]", session.id),
        },
        End::CaughtUp(at) => eprintln!(
            "[tether: caught up; go on with `tether chat {} --from {at}`]",
            session.id
        ),
        End::Left => eprintln!("[tether: left {}; it keeps running]", session.id),
    }
    Ok(ExitCode::SUCCESS)
}

/// A reader that went away (`| head`) ends the chat quietly.
fn broken_pipe(e: anyhow::Error, end: End) -> Result<End> {
    match e.downcast_ref::<std::io::Error>() {
        Some(io) if io.kind() == std::io::ErrorKind::BrokenPipe => Ok(end),
        _ => Err(e),
    }
}

/// `--json`: every message as it is, one per line.
async fn print_json(mut feed: mpsc::Receiver<Feed>, follow: bool) -> Result<End> {
    while let Some(f) = feed.recv().await {
        match f {
            Feed::Messages(messages) => {
                let mut out = std::io::stdout().lock();
                for m in &messages {
                    writeln!(out, "{m}")?;
                }
                out.flush()?;
            }
            Feed::CaughtUp(at) if !follow => return Ok(End::CaughtUp(at)),
            Feed::CaughtUp(_) => {}
            Feed::Closed => return Ok(End::Closed),
            Feed::Failed(e) => return Err(e),
        }
    }
    Ok(End::Closed)
}

/// The terminal: rendered events, notes, and at most one approval prompt, kept apart.
struct Screen {
    state: RenderState,
    color: bool,
    /// The request being asked about.
    prompt: Option<OpenApproval>,
    /// Whether the prompt is the last thing on screen (the cursor after it).
    prompt_shown: bool,
    /// A request whose prompt someone else's answer cancelled: a bare `y` typed for it is
    /// dropped, not sent to the agent.
    cancelled: Option<String>,
    /// Requests not to ask about: skipped, or being answered.
    settled: HashSet<String>,
}

impl Screen {
    fn new(session_id: &str, color: bool) -> Self {
        Self {
            state: RenderState::new(session_id, color),
            color,
            prompt: None,
            prompt_shown: false,
            cancelled: None,
            settled: HashSet::new(),
        }
    }

    fn write(&mut self, pieces: &[String]) -> std::io::Result<()> {
        if pieces.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        if self.prompt_shown {
            out.write_all(b"\n")?;
            self.prompt_shown = false;
        }
        for p in pieces {
            out.write_all(p.as_bytes())?;
        }
        out.flush()
    }

    fn event(&mut self, event: &Event) -> std::io::Result<()> {
        let pieces = render(event, &mut self.state);
        self.write(&pieces)?;
        if let Some(p) = &self.prompt
            && !self.state.is_open(&p.request_id)
        {
            // Answered elsewhere: the line just shown says by whom.
            self.cancelled = Some(p.request_id.clone());
            self.prompt = None;
        }
        Ok(())
    }

    /// A line of our own (not the session's), on a line of its own.
    fn note(&mut self, line: &str) -> std::io::Result<()> {
        let mut pieces = Vec::with_capacity(2);
        if self.state.end_line() {
            pieces.push("\n".to_owned());
        }
        pieces.push(format!("{line}\n"));
        self.write(&pieces)
    }

    /// Asks about the oldest open request not settled, unless a message is mid-line.
    fn ask(&mut self) -> std::io::Result<()> {
        if self.prompt.is_none() {
            self.prompt = self
                .state
                .open_approvals()
                .iter()
                .find(|a| !self.settled.contains(&a.request_id))
                .cloned();
            if self.prompt.is_some() {
                self.cancelled = None;
            }
        }
        let Some(p) = &self.prompt else {
            return Ok(());
        };
        if self.prompt_shown || self.state.line_open() {
            return Ok(());
        }
        let text = format!("Allow {}? [y]es / [n]o / [s]kip:", p.tool);
        let mut out = std::io::stdout().lock();
        write!(out, "{} ", paint(self.color, Tone::Alert, &text))?;
        out.flush()?;
        self.prompt_shown = true;
        Ok(())
    }

    /// Enter was pressed: the cursor is at the start of a line.
    fn typed(&mut self) {
        self.prompt_shown = false;
        self.state.end_line();
    }

    /// Leaves the cursor on a line of its own.
    fn finish(&mut self) -> std::io::Result<()> {
        if self.prompt_shown || self.state.end_line() {
            self.prompt_shown = false;
            let mut out = std::io::stdout().lock();
            out.write_all(b"\n")?;
            out.flush()?;
        }
        Ok(())
    }
}

/// What a spawned request came back with.
struct Reply {
    line: String,
    /// A request to ask about again (its answer did not get through).
    ask_again: Option<String>,
}

/// Renders the feed; when interactive, also prompts and takes typed lines.
async fn converse(
    screen: &mut Screen,
    client: &ApiClient,
    session_id: &str,
    mut feed: mpsc::Receiver<Feed>,
    follow: bool,
    interactive: bool,
) -> Result<End> {
    let mut typed = if interactive {
        Some(read_lines()?)
    } else {
        None
    };
    let (reply_tx, mut replies) = mpsc::unbounded_channel::<Reply>();
    let mut live = false;
    loop {
        if live && interactive {
            screen.ask()?;
        }
        tokio::select! {
            f = feed.recv() => match f {
                Some(Feed::Messages(messages)) => {
                    for event in messages.iter().filter_map(parse_event) {
                        screen.event(&event)?;
                    }
                }
                Some(Feed::CaughtUp(at)) => {
                    if !follow {
                        return Ok(End::CaughtUp(at));
                    }
                    live = true;
                }
                Some(Feed::Closed) | None => return Ok(End::Closed),
                Some(Feed::Failed(e)) => return Err(e),
            },
            line = next_line(&mut typed) => {
                let Some(line) = line else { return Ok(End::Left) };
                screen.typed();
                on_line(screen, client, session_id, &line, &reply_tx)?;
            }
            Some(reply) = replies.recv() => {
                if let Some(id) = reply.ask_again {
                    screen.settled.remove(&id);
                }
                screen.note(&reply.line)?;
            }
        }
    }
}

/// A typed line: the answer to the prompt, or a follow-up.
fn on_line(
    screen: &mut Screen,
    client: &ApiClient,
    session_id: &str,
    line: &str,
    replies: &mpsc::UnboundedSender<Reply>,
) -> std::io::Result<()> {
    let color = screen.color;
    if let Some(p) = screen.prompt.clone() {
        match parse_answer(line) {
            Some(Answer::Skip) => {
                screen.settled.insert(p.request_id);
                screen.prompt = None;
            }
            Some(Answer::Decide(decision, reason)) => {
                screen.settled.insert(p.request_id.clone());
                screen.prompt = None;
                let client = client.clone();
                let session_id = session_id.to_owned();
                let replies = replies.clone();
                tokio::spawn(async move {
                    let answered = super::approve::answer(
                        &client,
                        &session_id,
                        &p.request_id,
                        decision,
                        reason.as_deref(),
                    )
                    .await;
                    let reply = match answered {
                        Ok(a) => Reply {
                            line: super::approve::outcome_line(&a, Some(&p.tool)),
                            ask_again: None,
                        },
                        Err(e) => Reply {
                            line: paint(
                                color,
                                Tone::Red,
                                &format!(
                                    "{} not answered: {}",
                                    p.request_id,
                                    super::approve::error_message(&e)
                                ),
                            ),
                            // Only when trying again may help: no answer, or a 5xx.
                            ask_again: matches!(e.status(), None | Some(500..))
                                .then_some(p.request_id),
                        },
                    };
                    let _ = replies.send(reply);
                });
            }
            None => screen.note(&paint(
                color,
                Tone::Dim,
                "answer y, n (a reason may follow: `n not on main`) or s",
            ))?,
        }
        return Ok(());
    }
    if let Some(id) = screen.cancelled.take()
        && is_bare_answer(line)
    {
        return screen.note(&paint(
            color,
            Tone::Dim,
            &format!(
                "[tether: {id} was answered already; {:?} not sent]",
                line.trim()
            ),
        ));
    }
    if line.trim().is_empty() {
        return Ok(());
    }
    let client = client.clone();
    let path = format!("/v1/sessions/{session_id}/messages");
    let body = serde_json::json!({ "text": line });
    let replies = replies.clone();
    tokio::spawn(async move {
        let sent: Result<Value, _> = client.post_json(&path, &body).await;
        if let Err(e) = sent {
            let _ = replies.send(Reply {
                line: paint(
                    color,
                    Tone::Red,
                    &format!("not sent: {}", super::approve::error_message(&e)),
                ),
                ask_again: None,
            });
        }
    });
    Ok(())
}

#[derive(Debug, PartialEq)]
enum Answer {
    Decide(Decision, Option<String>),
    Skip,
}

/// `y`, `n`, `s` (or `yes`, `allow`, `no`, `deny`, `skip`); a reason may follow the decision.
fn parse_answer(line: &str) -> Option<Answer> {
    let line = line.trim();
    let (word, rest) = line
        .split_once(char::is_whitespace)
        .map_or((line, ""), |(w, r)| (w, r.trim()));
    let reason = (!rest.is_empty()).then(|| rest.to_owned());
    match word.to_ascii_lowercase().as_str() {
        "y" | "yes" | "allow" => Some(Answer::Decide(Decision::Allow, reason)),
        "n" | "no" | "deny" => Some(Answer::Decide(Decision::Deny, reason)),
        "s" | "skip" if reason.is_none() => Some(Answer::Skip),
        _ => None,
    }
}

/// A line that can only have been meant for a prompt.
fn is_bare_answer(line: &str) -> bool {
    matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes" | "n" | "no" | "s" | "skip" | "allow" | "deny"
    )
}

/// Stdin's lines, read on a thread of their own; the channel closes at the end of stdin.
fn read_lines() -> Result<mpsc::UnboundedReceiver<String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("chat-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match stdin.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_owned();
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .context("starting the stdin reader")?;
    Ok(rx)
}

async fn next_line(typed: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match typed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn at(v: Value) -> Value {
        let mut v = v;
        v["v"] = json!(1);
        v["at"] = json!("2026-01-01T12:34:56.789Z");
        v
    }

    /// Renders stream messages, colours off, and answers the text a terminal would show.
    fn transcript(st: &mut RenderState, messages: &[Value]) -> String {
        messages
            .iter()
            .filter_map(parse_event)
            .flat_map(|e| render(&e, st))
            .collect()
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn a_streamed_message_is_shown_once_and_a_whole_one_at_once() {
        let mut st = RenderState::new("ses_1", false);
        let text = transcript(
            &mut st,
            &[
                at(json!({"type": "session_started", "agent": "claude",
                    "protocol": "claude-stream-json", "model": "opus"})),
                at(
                    json!({"type": "message", "message_id": "m0", "role": "user",
                    "text": "list files", "sent_by": "mem_1",
                    "attachments": [{"name": "a.txt", "path": ".tether/attachments/m0/a.txt",
                        "bytes": 1200}]}),
                ),
                at(
                    json!({"type": "message_delta", "message_id": "m1", "role": "assistant",
                    "text": "Here "}),
                ),
                at(json!({"type": "thinking_delta", "message_id": "m1", "text": "hm"})),
                at(
                    json!({"type": "message_delta", "message_id": "m1", "role": "assistant",
                    "text": "they are."}),
                ),
                at(
                    json!({"type": "message", "message_id": "m1", "role": "assistant",
                    "text": "Here they are."}),
                ),
                at(
                    json!({"type": "message", "message_id": "m2", "role": "assistant",
                    "text": "Done."}),
                ),
                at(json!({"type": "turn_ended", "is_error": false, "duration_ms": 1234})),
                at(
                    json!({"type": "usage", "input_tokens": 1234, "output_tokens": 567,
                    "cache_read_tokens": 0, "cost_usd": 0.0123}),
                ),
                at(json!({"type": "title", "title": "List files", "source": "llm"})),
                at(json!({"type": "session_ended", "status": "exited", "exit_code": 0})),
            ],
        );
        assert_eq!(
            lines(&text),
            [
                "── claude (claude-stream-json) · opus · started 12:34:56 UTC",
                "you› list files",
                "  sent by mem_1",
                "  attached a.txt at .tether/attachments/m0/a.txt (1 200 bytes)",
                "claude› Here they are.",
                "claude› Done.",
                "── turn ended (1.2 s)",
                "tokens: in 1 234 · out 567 · cache 0 · $0.0123",
                "title: List files",
                "── session exited (code 0)",
            ]
        );
        assert!(!st.line_open());
    }

    #[test]
    fn deltas_are_written_as_they_come_and_other_output_ends_their_line() {
        let mut st = RenderState::new("ses_1", false);
        let delta = |t: &str| {
            at(
                json!({"type": "message_delta", "message_id": "m1", "role": "assistant",
                "text": t}),
            )
        };
        let first = parse_event(&delta("Hel")).unwrap();
        assert_eq!(render(&first, &mut st), ["agent› ", "Hel"]);
        assert!(st.line_open());
        let text = transcript(
            &mut st,
            &[
                delta("lo"),
                at(json!({"type": "error", "message": "rate limited"})),
                delta(" again"),
                at(
                    json!({"type": "message", "message_id": "m1", "role": "assistant",
                    "text": "Hello again"}),
                ),
            ],
        );
        assert_eq!(
            text, "lo\nerror: rate limited\nagent›  again\n",
            "the final message only ends the line"
        );
    }

    #[test]
    fn a_tool_call_is_one_line_per_status() {
        let mut st = RenderState::new("ses_1", false);
        let tool = |status: &str, extra: Value| {
            let mut v = json!({"type": "tool", "tool_use_id": "t1", "name": "Bash",
                "status": status});
            if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
                v.extend(extra.clone());
            }
            at(v)
        };
        let long = "x".repeat(500);
        let text = transcript(
            &mut st,
            &[
                tool("created", json!({"input": {"command": "ls"}})),
                tool("running", json!({})),
                tool("succeeded", json!({"output": "a\nb\nc\nd\ne\nf\ng"})),
                tool("created", json!({"input": {"command": long}})),
                tool("awaiting_approval", json!({})),
                tool("denied", json!({"reason": "not on main"})),
                tool("failed", json!({"reason": "exit 1", "output": "boom"})),
            ],
        );
        let shown = lines(&text);
        assert_eq!(
            shown.get(..9).unwrap(),
            [
                "⚙ Bash {\"command\":\"ls\"}",
                "… Bash running",
                "✓ Bash succeeded",
                "  a",
                "  b",
                "  c",
                "  d",
                "  e",
                "  … 2 more lines",
            ]
        );
        let cut = shown.get(9).unwrap();
        assert!(cut.ends_with('…'), "{cut}");
        assert_eq!(
            cut.chars().count(),
            "⚙ Bash ".chars().count() + INPUT_CHARS + 1
        );
        assert_eq!(
            shown.get(10..).unwrap(),
            [
                "? Bash awaiting approval",
                "⊘ Bash denied: not on main",
                "✗ Bash failed: exit 1",
                "  boom",
            ]
        );
    }

    #[test]
    fn approvals_show_their_request_and_who_answered() {
        let mut st = RenderState::new("ses_1", false);
        let request = |id: &str| {
            at(
                json!({"type": "approval_requested", "request_id": id, "tool_use_id": "t1",
                "tool": "Bash", "input": {"command": "rm -rf build"}, "source": "guardrail",
                "reason": "deletes files", "expires_at": "2026-01-01T12:44:56.000Z",
                "default": "deny", "role": "admin"}),
            )
        };
        let text = transcript(&mut st, &[request("apr_1"), request("apr_2")]);
        assert!(text.contains("approval requested: Bash (apr_1)"), "{text}");
        assert!(
            text.contains("tether approve ses_1 apr_1 allow|deny"),
            "{text}"
        );
        assert!(text.contains("{\"command\":\"rm -rf build\"}"), "{text}");
        assert!(text.contains("expires  12:44:56 UTC, then deny"), "{text}");
        assert!(text.contains("admin or above") && text.contains("deletes files"));
        assert_eq!(
            st.open_approvals()
                .iter()
                .map(|a| a.request_id.as_str())
                .collect::<Vec<_>>(),
            ["apr_1", "apr_2"]
        );
        let text = transcript(
            &mut st,
            &[
                at(json!({"type": "approval_answered", "request_id": "apr_1",
                    "decision": "allow",
                    "answered_by": {"kind": "member", "id": "mem_1", "role": "member"}})),
                at(json!({"type": "approval_answered", "request_id": "apr_2",
                    "decision": "deny", "answered_by": {"kind": "timeout"}})),
                at(json!({"type": "approval_answered", "request_id": "apr_9",
                    "decision": "deny", "reason": "bye",
                    "answered_by": {"kind": "session_ended"}})),
            ],
        );
        assert_eq!(
            lines(&text),
            [
                "✔ Bash allowed by mem_1 (member)",
                "✘ Bash denied by its timeout (default)",
                "✘ denied as the session ended: bye",
            ]
        );
        assert!(st.open_approvals().is_empty());
    }

    #[test]
    fn unknown_types_and_newer_versions_are_skipped() {
        let mut st = RenderState::new("ses_1", false);
        let text = transcript(
            &mut st,
            &[
                at(json!({"type": "hologram", "pixels": 3})),
                json!({"v": 2, "at": "2026-01-01T00:00:00.000Z", "type": "title",
                    "title": "from the future", "source": "llm"}),
                json!("not an event"),
                at(json!({"type": "title", "title": "ok", "source": "fallback",
                    "new_field": true})),
            ],
        );
        assert_eq!(text, "title: ok\n");
    }

    #[test]
    fn thinking_is_cut_and_control_characters_dropped() {
        let mut st = RenderState::new("ses_1", false);
        let text = transcript(
            &mut st,
            &[at(
                json!({"type": "thinking", "message_id": "m1", "text": "y".repeat(400)}),
            )],
        );
        assert_eq!(text, format!("thinking› {}…\n", "y".repeat(THINKING_CHARS)));
        let text = transcript(
            &mut st,
            &[at(json!({"type": "error", "message": "bad\u{1b}[2Jthing"}))],
        );
        assert_eq!(text, "error: bad[2Jthing\n");
    }

    #[test]
    fn colours_only_when_asked() {
        let mut st = RenderState::new("ses_1", true);
        let text = transcript(
            &mut st,
            &[at(json!({"type": "title", "title": "t", "source": "llm"}))],
        );
        assert!(text.contains('\u{1b}'), "{text:?}");
    }

    #[test]
    fn prompt_answers_parse() {
        assert_eq!(
            parse_answer(" y "),
            Some(Answer::Decide(Decision::Allow, None))
        );
        assert_eq!(
            parse_answer("n because it deletes the cache"),
            Some(Answer::Decide(
                Decision::Deny,
                Some("because it deletes the cache".into())
            ))
        );
        assert_eq!(parse_answer("S"), Some(Answer::Skip));
        assert_eq!(parse_answer("maybe"), None);
        assert_eq!(parse_answer(""), None);
        assert!(is_bare_answer("Yes") && !is_bare_answer("yes, and also fix the tests"));
    }

    #[test]
    fn offsets_and_reads_parse() {
        assert_eq!(parse_from("start").unwrap().as_str(), "-1");
        assert_eq!(parse_from("now").unwrap().as_str(), "now");
        assert!(parse_from("0000000000000000_0000000000000007").is_ok());
        assert!(parse_from("1024").is_err());
        assert!(messages(b"").unwrap().is_empty());
        assert_eq!(messages(b"[{\"a\":1},2]").unwrap().len(), 2);
        assert!(messages(b"{}").is_err());
    }
}
