//! The agents' structured protocols, turned into the chat event schema
//! ([`tether_durable::chat::EventBody`]).
//!
//! - [`claude`]: Claude Code's `stream-json` (one long-lived process; messages and permission
//!   answers go in on stdin, events come out on stdout).
//! - [`codex`]: `codex exec --json` (one process per turn, follow-ups through `resume`).
//!
//! Everything here is pure: no I/O, no async. The daemon's session runner feeds each normalizer
//! the agent's stdout, one line at a time, and appends what comes back to the session's chat
//! stream; it writes the encoded stdin lines itself.

pub mod claude;
pub mod codex;

use tether_durable::chat::EventBody;

/// The most bytes of a tool's output an event carries (the schema's limit), note included.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// How many characters of an unparsable line an error event quotes.
const QUOTED_LINE_CHARS: usize = 200;

/// Room kept for the truncation note: `"\n… ("`, 20 digits, `" bytes more)"`.
const NOTE_RESERVE: usize = 40;

/// `text` cut to at most [`MAX_OUTPUT`] bytes: at a char boundary, followed by a
/// `… (N bytes more)` note naming how much was left out. Shorter text is returned whole.
pub fn truncate_output(text: &str) -> String {
    if text.len() <= MAX_OUTPUT {
        return text.to_owned();
    }
    let cut = text.floor_char_boundary(MAX_OUTPUT - NOTE_RESERVE);
    let (kept, rest) = text.split_at(cut);
    format!("{kept}\n… ({} bytes more)", rest.len())
}

/// The error event for a line the agent wrote outside its protocol (`what` names the
/// protocol's format). Its code is `unparsed_output`.
fn unparsed_line(what: &str, line: &str) -> EventBody {
    let quoted: String = line.chars().take(QUOTED_LINE_CHARS).collect();
    EventBody::Error {
        message: format!("the agent wrote a line that is not {what}: {quoted}"),
        code: Some("unparsed_output".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_output_is_cut_at_a_char_boundary_with_a_note() {
        assert_eq!(truncate_output("short"), "short");
        let exact = "x".repeat(MAX_OUTPUT);
        assert_eq!(truncate_output(&exact), exact);

        let long = "é".repeat(MAX_OUTPUT); // two bytes each
        let cut = truncate_output(&long);
        assert!(cut.len() <= MAX_OUTPUT, "{}", cut.len());
        let (kept, note) = cut.split_once('\n').unwrap_or_default();
        assert!(kept.chars().all(|c| c == 'é'));
        assert_eq!(note, format!("… ({} bytes more)", long.len() - kept.len()));
    }

    #[test]
    fn unparsed_lines_are_quoted_briefly() {
        let line = "y".repeat(500);
        let EventBody::Error { message, code } = unparsed_line("JSON", &line) else {
            unreachable!("always an error event")
        };
        assert_eq!(code.as_deref(), Some("unparsed_output"));
        assert_eq!(
            message,
            format!(
                "the agent wrote a line that is not JSON: {}",
                "y".repeat(200)
            )
        );
    }
}
