//! Field checks shared by every surface that accepts user input (REST now, MCP later).

use crate::error::StoreError;

pub const NAME_MAX: usize = 200;
pub const TITLE_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 100_000;
pub const URL_MAX: usize = 2048;
pub const BRANCH_MAX: usize = 255;
pub const LABELS_MAX: usize = 20;
pub const LABEL_MAX: usize = 50;
pub const PAGE_DEFAULT: u32 = 50;
pub const PAGE_MAX: u32 = 200;

/// A count cap: 409 `limit_exceeded` once `count` has reached `max` (`what` says of what, e.g.
/// "projects per org").
pub fn cap(count: i64, max: i64, what: &str) -> Result<(), StoreError> {
    if count >= max {
        return Err(StoreError::Conflict {
            code: "limit_exceeded",
            message: format!("at most {max} {what}"),
        });
    }
    Ok(())
}

/// A single-line human text: trimmed, non-empty, at most `max` characters, no control characters.
pub fn line(field: &str, value: &str, max: usize) -> Result<String, StoreError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(StoreError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(v.to_owned())
}

/// A multi-line text such as a description: may be empty, at most `max` characters, and no
/// control characters other than newlines and tabs.
pub fn text(field: &str, value: &str, max: usize) -> Result<String, StoreError> {
    if value.chars().count() > max {
        return Err(StoreError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(StoreError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}

/// A git branch name, checked against the rules of `git check-ref-format --branch` that matter
/// for names people type.
pub fn branch(field: &str, value: &str) -> Result<String, StoreError> {
    let v = value.trim();
    let bad = v.is_empty()
        || v.len() > BRANCH_MAX
        || v.starts_with(['-', '/', '.'])
        || v.ends_with(['/', '.'])
        || v.ends_with(".lock")
        || v.contains("..")
        || v.contains("//")
        || v.contains("@{")
        || v == "@"
        || v.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c));
    if bad {
        return Err(StoreError::invalid(field, "is not a valid git branch name"));
    }
    Ok(v.to_owned())
}

/// A repository URL: https, http, ssh or git scheme, or scp-like `user@host:path`.
pub fn repo_url(field: &str, value: &str) -> Result<String, StoreError> {
    let v = value.trim();
    let schemed = ["https://", "http://", "ssh://", "git://", "file://"]
        .iter()
        .any(|s| v.len() > s.len() && v.starts_with(s));
    let scp_like = v
        .split_once(':')
        .is_some_and(|(host, path)| host.contains('@') && !host.contains('/') && !path.is_empty());
    if v.len() > URL_MAX
        || v.chars().any(|c| c.is_control() || c.is_whitespace())
        || !(schemed || scp_like)
    {
        return Err(StoreError::invalid(
            field,
            "must be a git URL (https://, ssh://, git@host:path, ...)",
        ));
    }
    Ok(v.to_owned())
}

/// `#rrggbb`.
pub fn color(field: &str, value: &str) -> Result<String, StoreError> {
    let ok = value.len() == 7
        && value.starts_with('#')
        && value.bytes().skip(1).all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(StoreError::invalid(field, "must be a colour like #5e6ad2"));
    }
    Ok(value.to_ascii_lowercase())
}

/// Labels: at most [`LABELS_MAX`], each a [`line`] of at most [`LABEL_MAX`]; duplicates dropped
/// (case-insensitively), order kept.
pub fn labels(field: &str, values: &[String]) -> Result<Vec<String>, StoreError> {
    if values.len() > LABELS_MAX {
        return Err(StoreError::invalid(
            field,
            format!("at most {LABELS_MAX} labels"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        let v = line(field, v, LABEL_MAX)?;
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&v)) {
            out.push(v);
        }
    }
    Ok(out)
}

/// A task prefix such as `TET`: 2 to 6 ASCII letters, stored upper-case.
pub fn task_prefix(field: &str, value: &str) -> Result<String, StoreError> {
    let v = value.trim();
    if !(2..=6).contains(&v.len()) || !v.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(StoreError::invalid(field, "must be 2 to 6 letters"));
    }
    Ok(v.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_trimmed_and_capped_in_characters_not_bytes() {
        assert_eq!(line("t", "  hi ", 5).unwrap(), "hi");
        assert!(line("t", "   ", 5).is_err());
        assert!(line("t", &"é".repeat(200), 200).is_ok());
        assert!(line("t", &"é".repeat(201), 200).is_err());
        assert!(line("t", "a\u{0}b", 200).is_err());
    }

    #[test]
    fn branches_follow_git_rules() {
        for ok in ["main", "feature/x-1", "tether/TET-12", "release-1.2"] {
            assert!(branch("b", ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-x", "a..b", "a b", "x.lock", "a/", "a~1", "a:b", "@", "a//b",
        ] {
            assert!(branch("b", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repo_urls() {
        for ok in [
            "https://github.com/a/b.git",
            "git@github.com:a/b.git",
            "ssh://git@h/x",
        ] {
            assert!(repo_url("r", ok).is_ok(), "{ok}");
        }
        for bad in [
            "github.com/a/b",
            "https://",
            "javascript:alert(1)",
            "https://a b",
            "c:\\x",
        ] {
            assert!(repo_url("r", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_are_deduplicated_and_capped() {
        let l = labels("l", &["Bug".into(), "bug".into(), " ui ".into()]).unwrap();
        assert_eq!(l, vec!["Bug", "ui"]);
        assert!(labels("l", &vec!["x".to_owned(); 21]).is_err());
        assert!(labels("l", &["x".repeat(51)]).is_err());
    }

    #[test]
    fn prefixes_and_colours() {
        assert_eq!(task_prefix("p", "tet").unwrap(), "TET");
        assert!(task_prefix("p", "T").is_err());
        assert!(task_prefix("p", "TE1").is_err());
        assert_eq!(color("c", "#AABBCC").unwrap(), "#aabbcc");
        assert!(color("c", "red").is_err());
    }
}
