//! Bodies and values going out: read bodies, SSE events, cursors, ETags.

use super::Offset;
use super::store::Row;
use base64::Engine;

/// The body of a read: the bytes in order, or for a JSON stream one array of every message.
pub fn body(json: bool, rows: &[Row]) -> Vec<u8> {
    let len: usize = rows.iter().map(|r| r.data.len()).sum();
    let mut out = Vec::with_capacity(len + 2);
    if json {
        out.push(b'[');
    }
    for r in rows {
        out.extend_from_slice(&r.data);
    }
    if json {
        // Stored messages each end with a comma; the last one's becomes the closing bracket.
        if out.last() == Some(&b',') {
            out.pop();
        }
        out.push(b']');
    }
    out
}

/// How SSE data events carry a stream's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseData {
    /// `text/*`: the text itself.
    Text,
    /// `application/json`: each append as a JSON array.
    Json,
    /// Anything else: base64 (the answer carries `Stream-SSE-Data-Encoding: base64`).
    Base64,
}

impl SseData {
    pub fn for_type(content_type: &str) -> Self {
        let e = super::essence(content_type);
        if e == "application/json" {
            Self::Json
        } else if e.starts_with("text/") {
            Self::Text
        } else {
            Self::Base64
        }
    }
}

/// One SSE event. Every line of `payload` becomes its own `data:` line, so a payload can never
/// end the event early or inject another one (CR, LF and CRLF all count as line ends).
pub fn sse_event(out: &mut String, event: &str, payload: &str) {
    out.push_str("event: ");
    out.push_str(event);
    out.push('\n');
    let mut rest = payload;
    loop {
        let cut = rest.find(['\r', '\n']);
        let (line, next) = match cut {
            Some(i) => {
                let skip = if rest.get(i..i + 2) == Some("\r\n") {
                    2
                } else {
                    1
                };
                (rest.get(..i).unwrap_or_default(), rest.get(i + skip..))
            }
            None => (rest, None),
        };
        out.push_str("data:");
        out.push_str(line);
        out.push('\n');
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    out.push('\n');
}

/// The data event for one append.
pub fn sse_data(out: &mut String, mode: SseData, row: &Row) {
    let payload = match mode {
        SseData::Text => String::from_utf8_lossy(&row.data).into_owned(),
        SseData::Json => {
            String::from_utf8_lossy(&body(true, std::slice::from_ref(row))).into_owned()
        }
        SseData::Base64 => base64::engine::general_purpose::STANDARD.encode(&row.data),
    };
    sse_event(out, "data", &payload);
}

/// A control event: where to resume, and whether the reader is caught up. A closed stream's
/// final control event carries `streamClosed` and no cursor.
pub fn sse_control(out: &mut String, next: Offset, cursor: &str, up_to_date: bool, closed: bool) {
    let mut v = serde_json::Map::new();
    v.insert("streamNextOffset".into(), next.to_string().into());
    if closed {
        v.insert("streamClosed".into(), true.into());
    } else {
        v.insert("streamCursor".into(), cursor.into());
        if up_to_date {
            v.insert("upToDate".into(), true.into());
        }
    }
    sse_event(out, "control", &serde_json::Value::Object(v).to_string());
}

/// 2024-10-09T00:00:00Z: cursors count 20-second intervals from here.
const CURSOR_EPOCH_MS: i64 = 1_728_432_000_000;
const CURSOR_INTERVAL_MS: i64 = 20_000;

/// The cursor for a live answer: the current interval number, or when the client already holds
/// that (or a later) one, its cursor plus 1 to 3600 seconds of jitter, so CDN-cached long-polls
/// never loop on one cache entry. `random` picks the jitter.
pub fn cursor(now_ms: i64, client: Option<&str>, random: u32) -> String {
    let current = (now_ms - CURSOR_EPOCH_MS).div_euclid(CURSOR_INTERVAL_MS);
    match client.and_then(|c| c.parse::<i64>().ok()) {
        Some(c) if c >= current => {
            let jitter_secs = 1 + i64::from(random % 3600);
            let intervals =
                ((jitter_secs * 1000 + CURSOR_INTERVAL_MS - 1) / CURSOR_INTERVAL_MS).max(1);
            c.saturating_add(intervals).to_string()
        }
        _ => current.to_string(),
    }
}

/// `"<base64 path>:<start>:<end>"`, with `:c` when the answer ends a closed stream.
pub fn etag(public_path: &str, start: &str, end: Offset, closed: bool) -> String {
    format!(
        "\"{}:{start}:{end}{}\"",
        base64::engine::general_purpose::STANDARD.encode(public_path),
        if closed { ":c" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_are_arrays() {
        let rows = [
            Row {
                end: 2,
                data: b"1,".to_vec(),
            },
            Row {
                end: 10,
                data: b"{\"a\":[2]},".to_vec(),
            },
        ];
        assert_eq!(body(true, &rows), b"[1,{\"a\":[2]}]");
        assert_eq!(body(true, &[]), b"[]");
        assert_eq!(body(false, &[]), b"");
    }

    #[test]
    fn sse_payloads_cannot_break_out_of_their_event() {
        let mut out = String::new();
        sse_event(&mut out, "data", "a\r\nevent: control\rb\nc");
        assert_eq!(
            out,
            "event: data\ndata:a\ndata:event: control\ndata:b\ndata:c\n\n"
        );
        let mut empty = String::new();
        sse_event(&mut empty, "data", "");
        assert_eq!(empty, "event: data\ndata:\n\n");
    }

    #[test]
    fn control_events() {
        let mut out = String::new();
        sse_control(&mut out, Offset(3), "9", true, false);
        assert!(
            out.contains(r#""streamCursor":"9""#) && out.contains(r#""upToDate":true"#),
            "{out}"
        );
        let mut closed = String::new();
        sse_control(&mut closed, Offset(3), "9", true, true);
        assert!(closed.contains(r#""streamClosed":true"#) && !closed.contains("streamCursor"));
    }

    #[test]
    fn cursors_move_forward_past_the_clients() {
        let now = CURSOR_EPOCH_MS + 100 * CURSOR_INTERVAL_MS + 5;
        assert_eq!(cursor(now, None, 0), "100");
        assert_eq!(cursor(now, Some("42"), 0), "100");
        assert_eq!(cursor(now, Some("junk"), 0), "100");
        assert_eq!(cursor(now, Some("100"), 0), "101");
        assert_eq!(cursor(now, Some("100"), 3599), "280");
    }

    #[test]
    fn etags_mark_closed_ends() {
        assert_eq!(
            etag("/v1/stream/a", "-1", Offset(1), true),
            "\"L3YxL3N0cmVhbS9h:-1:0000000000000000_0000000000000001:c\""
        );
    }
}
