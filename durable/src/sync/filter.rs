//! A shape's `where`: only `column = 'literal'` or `column = $n` conditions joined by AND, on
//! the columns [`Table::filterable`] allows.
//!
//! A tiny strict parser of exactly that grammar, so no user text ever reaches SQL: the store
//! binds the values as parameters and takes the column names from the table definition.
//! Anything else (OR, LIKE, functions, comparisons, parentheses, other columns) is refused
//! with a message saying what is allowed.

use super::table::Table;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The longest `where` accepted, in bytes.
pub const WHERE_MAX: usize = 1_000;
/// The most conditions in one `where`.
pub const MAX_CONDITIONS: usize = 10;
/// The most `params[n]`, and the longest value one may hold (bytes).
pub const MAX_PARAMS: usize = 10;
pub const PARAM_MAX: usize = 1_000;

/// A parsed `where`: conditions as (column, value), sorted and without duplicates, so two
/// spellings of the same filter are equal (and hash alike).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    conditions: Vec<(String, String)>,
}

/// Why a `where` or its params were refused; the message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FilterError {
    pub message: String,
}

impl Filter {
    /// Parses `where` (absent: every row) with its `params[n]` for `table`.
    pub fn parse(
        table: Table,
        where_: Option<&str>,
        params: &BTreeMap<u32, String>,
    ) -> Result<Self, FilterError> {
        let refuse = |what: &str| FilterError {
            message: format!(
                "{what}; `where` accepts only `column = 'value'` or `column = $1` conditions \
                 joined by AND, on the columns {} of {}",
                table.filterable().join(", "),
                table.name()
            ),
        };
        if params.len() > MAX_PARAMS {
            return Err(refuse(&format!("at most {MAX_PARAMS} params")));
        }
        if params.values().any(|v| v.len() > PARAM_MAX) {
            return Err(refuse(&format!(
                "a param is at most {PARAM_MAX} bytes long"
            )));
        }
        let Some(text) = where_.filter(|w| !w.trim().is_empty()) else {
            return match params.keys().next() {
                Some(n) => Err(refuse(&format!("params[{n}] is not used"))),
                None => Ok(Self::default()),
            };
        };
        if text.len() > WHERE_MAX {
            return Err(refuse(&format!(
                "`where` is at most {WHERE_MAX} bytes long"
            )));
        }
        let mut used = BTreeMap::new();
        let mut lexer = Lexer { rest: text };
        let mut conditions = Vec::new();
        loop {
            let column = match lexer.next().map_err(|m| refuse(&m))? {
                Some(Token::Ident(c)) => c,
                other => {
                    return Err(refuse(&format!(
                        "expected a column, found {}",
                        show(&other)
                    )));
                }
            };
            let column = table
                .filter_column(&column)
                .ok_or_else(|| refuse(&format!("`{column}` cannot be filtered on")))?;
            match lexer.next().map_err(|m| refuse(&m))? {
                Some(Token::Eq) => {}
                other => return Err(refuse(&format!("expected `=`, found {}", show(&other)))),
            }
            let value = match lexer.next().map_err(|m| refuse(&m))? {
                Some(Token::Literal(v)) => v,
                Some(Token::Param(n)) => {
                    let v = params
                        .get(&n)
                        .ok_or_else(|| refuse(&format!("${n} has no params[{n}]")))?;
                    used.insert(n, ());
                    v.clone()
                }
                other => {
                    return Err(refuse(&format!(
                        "expected a quoted value or $n, found {}",
                        show(&other)
                    )));
                }
            };
            conditions.push((column.to_owned(), value));
            if conditions.len() > MAX_CONDITIONS {
                return Err(refuse(&format!("at most {MAX_CONDITIONS} conditions")));
            }
            match lexer.next().map_err(|m| refuse(&m))? {
                None => break,
                Some(Token::And) => {}
                other => return Err(refuse(&format!("expected AND, found {}", show(&other)))),
            }
        }
        if let Some(n) = params.keys().find(|n| !used.contains_key(*n)) {
            return Err(refuse(&format!("params[{n}] is not used")));
        }
        conditions.sort();
        conditions.dedup();
        Ok(Self { conditions })
    }

    /// (column, value) pairs, sorted; empty for every row.
    pub fn conditions(&self) -> &[(String, String)] {
        &self.conditions
    }

    /// Whether a row (native values by column) passes: every condition's column holds that
    /// text (null never does).
    pub fn matches(&self, row: &Map<String, Value>) -> bool {
        self.conditions
            .iter()
            .all(|(col, want)| matches!(row.get(col), Some(Value::String(s)) if s == want))
    }

    /// A stable spelling for the shape's hash.
    pub fn canonical(&self) -> String {
        serde_json::to_string(&self.conditions).unwrap_or_default()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Eq,
    Literal(String),
    Param(u32),
    And,
}

fn show(t: &Option<Token>) -> String {
    match t {
        None => "the end".into(),
        Some(Token::Ident(i)) => format!("`{i}`"),
        Some(Token::Eq) => "`=`".into(),
        Some(Token::Literal(_)) => "a quoted value".into(),
        Some(Token::Param(n)) => format!("${n}"),
        Some(Token::And) => "AND".into(),
    }
}

struct Lexer<'a> {
    rest: &'a str,
}

impl Lexer<'_> {
    fn next(&mut self) -> Result<Option<Token>, String> {
        self.rest = self.rest.trim_start();
        let mut chars = self.rest.char_indices();
        let Some((_, first)) = chars.next() else {
            return Ok(None);
        };
        match first {
            '=' => {
                self.rest = self.rest.get(1..).unwrap_or("");
                Ok(Some(Token::Eq))
            }
            '\'' | '"' => {
                let (text, rest) = quoted(self.rest, first)
                    .ok_or_else(|| format!("unterminated {first}...{first}"))?;
                self.rest = rest;
                Ok(Some(if first == '\'' {
                    Token::Literal(text)
                } else {
                    // A quoted identifier keeps its case, like Postgres.
                    Token::Ident(text)
                }))
            }
            '$' => {
                let digits: &str = self
                    .rest
                    .get(1..)
                    .unwrap_or("")
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap_or("");
                let n: u32 = digits
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PARAMS as u32).contains(n))
                    .ok_or_else(|| format!("`${digits}` is not a parameter $1..${MAX_PARAMS}"))?;
                self.rest = self.rest.get(1 + digits.len()..).unwrap_or("");
                Ok(Some(Token::Param(n)))
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let end = self
                    .rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(self.rest.len());
                let word = self.rest.get(..end).unwrap_or("");
                self.rest = self.rest.get(end..).unwrap_or("");
                // Unquoted identifiers fold to lower case, like Postgres.
                Ok(Some(if word.eq_ignore_ascii_case("and") {
                    Token::And
                } else {
                    Token::Ident(word.to_ascii_lowercase())
                }))
            }
            other => Err(format!("unexpected `{other}`")),
        }
    }
}

/// The text of a `q`-quoted token at the start of `s` (a doubled `q` stands for one) and what
/// follows it.
fn quoted(s: &str, q: char) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut it = s.char_indices().skip(1).peekable();
    while let Some((i, c)) = it.next() {
        if c == q {
            if matches!(it.peek(), Some((_, n)) if *n == q) {
                it.next();
                out.push(q);
            } else {
                return Some((out, s.get(i + 1..).unwrap_or("")));
            }
        } else {
            out.push(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(w: &str, params: &[(u32, &str)]) -> Result<Filter, FilterError> {
        let p = params.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
        Filter::parse(Table::Tasks, Some(w), &p)
    }

    fn pairs(f: &Filter) -> Vec<(&str, &str)> {
        f.conditions()
            .iter()
            .map(|(c, v)| (c.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn equality_conditions_joined_by_and() {
        let f = parse("status_id = 'sts_1'", &[]).unwrap();
        assert_eq!(pairs(&f), [("status_id", "sts_1")]);
        let f = parse(
            "  PROJECT_ID='p''1' and \"assignee_id\" = $1 AND status_id=$2",
            &[(1, "mem_1"), (2, "sts_2")],
        )
        .unwrap();
        assert_eq!(
            pairs(&f),
            [
                ("assignee_id", "mem_1"),
                ("project_id", "p'1"),
                ("status_id", "sts_2")
            ]
        );
        // The same filter spelt another way is the same filter.
        assert_eq!(
            parse(
                "status_id = $1 AND project_id = 'p''1' AND assignee_id = 'mem_1'",
                &[(1, "sts_2")]
            )
            .unwrap(),
            f
        );
        assert_eq!(
            Filter::parse(Table::Tasks, None, &BTreeMap::new()).unwrap(),
            Filter::default()
        );
        assert_eq!(parse("  ", &[]).unwrap(), Filter::default());
        let s = Filter::parse(
            Table::Sessions,
            Some("host_id = 'h' AND status = 'running'"),
            &BTreeMap::new(),
        );
        assert!(s.is_ok());
    }

    #[test]
    fn everything_else_is_refused_with_what_is_allowed() {
        for (w, params) in [
            ("title = 'x'", vec![]),
            ("status_id = 'a' OR status_id = 'b'", vec![]),
            ("status_id LIKE 'a%'", vec![]),
            ("lower(status_id) = 'a'", vec![]),
            ("number > 3", vec![]),
            ("status_id = 3", vec![]),
            ("status_id = status_id", vec![]),
            ("(status_id = 'a')", vec![]),
            ("status_id = 'a' AND", vec![]),
            ("status_id = 'a'; DROP TABLE tasks", vec![]),
            ("status_id = 'unterminated", vec![]),
            ("status_id = $1", vec![]),
            ("status_id = $2", vec![(1, "x")]),
            ("status_id = $0", vec![]),
            ("status_id = $99", vec![]),
            ("status_id = 'a'", vec![(1, "unused")]),
            ("id IN (SELECT id FROM tasks)", vec![]),
            ("\"Status_id\" = 'a'", vec![]),
            ("status_id = 'a' status_id = 'b'", vec![]),
        ] {
            let e = parse(w, &params).unwrap_err();
            assert!(
                e.message.contains("accepts only") && e.message.contains("status_id"),
                "{w}: {e}"
            );
        }
        assert!(parse(&format!("id = '{}'", "x".repeat(WHERE_MAX)), &[]).is_err());
        let many = ["id = 'x'"; MAX_CONDITIONS + 1].join(" AND ");
        assert!(parse(&many, &[]).is_err());
        let long = "x".repeat(PARAM_MAX + 1);
        assert!(parse("id = $1", &[(1, &long)]).is_err());
        let e = Filter::parse(Table::Tasks, None, &[(1, "x".to_owned())].into()).unwrap_err();
        assert!(e.message.contains("params[1]"), "{e}");
        assert!(Filter::parse(Table::Hosts, Some("status_id = 'a'"), &BTreeMap::new()).is_err());
    }

    #[test]
    fn rows_match_on_text_equality() {
        let f = parse("status_id = 'a' AND project_id = 'p'", &[]).unwrap();
        let row = |s: Value, p: Value| json!({"status_id": s, "project_id": p});
        let m = |v: Value| f.matches(v.as_object().unwrap());
        assert!(m(row(json!("a"), json!("p"))));
        assert!(!m(row(json!("a"), json!("q"))));
        assert!(!m(row(json!("a"), Value::Null)));
        assert!(!m(json!({"status_id": "a"})));
        assert!(Filter::default().matches(&Map::new()));
    }
}
