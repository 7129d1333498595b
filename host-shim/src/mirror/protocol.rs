//! The Electric shape protocol's messages and headers, as the daemon reads them
//! (`../shared/protocols/electric-shapes.md`). Plain data and parsing; no I/O.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The offset of a shape's beginning: the first request, and the one after a 409.
pub const OFFSET_START: &str = "-1";

/// The response headers the protocol defines.
pub mod headers {
    pub const HANDLE: &str = "electric-handle";
    pub const OFFSET: &str = "electric-offset";
    pub const SCHEMA: &str = "electric-schema";
    pub const CURSOR: &str = "electric-cursor";
    pub const UP_TO_DATE: &str = "electric-up-to-date";
}

/// A row's columns as the protocol carries them: Postgres text values, or null.
pub type Row = Map<String, Value>;

/// One message of a response body.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A new row (its every column).
    Insert { key: String, value: Row },
    /// A changed row: the columns given replace the stored ones, the others stay.
    Update { key: String, value: Row },
    /// A row gone; only its key matters.
    Delete { key: String },
    /// The shape is current up to this response's offset.
    UpToDate,
    /// The handle is no longer served: drop the table and start again (the 409 body).
    MustRefetch,
    /// Anything else (`snapshot-end`, move events, newer operations): skipped, so a server
    /// that adds message kinds does not stop an older daemon.
    Other,
}

#[derive(Deserialize)]
struct RawHeaders {
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    control: Option<String>,
}

#[derive(Deserialize)]
struct RawMessage {
    headers: RawHeaders,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<Row>,
}

impl From<RawMessage> for Message {
    fn from(m: RawMessage) -> Self {
        let RawMessage {
            headers,
            key,
            value,
        } = m;
        match (
            headers.operation.as_deref(),
            headers.control.as_deref(),
            key,
        ) {
            (Some("insert"), _, Some(key)) => Self::Insert {
                key,
                value: value.unwrap_or_default(),
            },
            (Some("update"), _, Some(key)) => Self::Update {
                key,
                value: value.unwrap_or_default(),
            },
            (Some("delete"), _, Some(key)) => Self::Delete { key },
            (None, Some("up-to-date"), _) => Self::UpToDate,
            (None, Some("must-refetch"), _) => Self::MustRefetch,
            _ => Self::Other,
        }
    }
}

/// Parses a response body: a JSON array of messages (an empty body is an empty array).
pub fn parse_body(body: &[u8]) -> Result<Vec<Message>, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let raw: Vec<RawMessage> = serde_json::from_slice(body)?;
    Ok(raw.into_iter().map(Message::from).collect())
}

/// One column of `electric-schema`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Column {
    /// The Postgres type name (`text`, `int8`, `bool`, `jsonb`, `timestamptz`, ...).
    #[serde(rename = "type")]
    pub ty: String,
    /// Array dimensions, for array types.
    #[serde(default)]
    pub dims: Option<u32>,
}

/// The `electric-schema` header: each column's type.
pub type Schema = BTreeMap<String, Column>;

/// A text value turned into the JSON value its column's type means: numbers for the integer
/// and float types, booleans, parsed JSON for json/jsonb; the text itself for everything else,
/// and for a value that does not parse as its type.
pub fn typed(text: &str, column: Option<&Column>) -> Value {
    let Some(column) = column.filter(|c| c.dims.unwrap_or(0) == 0) else {
        return Value::String(text.to_owned());
    };
    let parsed = match column.ty.as_str() {
        "int2" | "int4" | "int8" | "oid" => text.parse::<i64>().ok().map(Value::from),
        "float4" | "float8" | "numeric" => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        "bool" => match text {
            "t" | "true" => Some(Value::Bool(true)),
            "f" | "false" => Some(Value::Bool(false)),
            _ => None,
        },
        "json" | "jsonb" => serde_json::from_str(text).ok(),
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::String(text.to_owned()))
}

/// A stored row with its values typed by `schema` (see [`typed`]); null stays null, and a
/// value that is not text (a server that sent JSON values) is kept as it came.
pub fn typed_row(row: &Row, schema: &Schema) -> Row {
    row.iter()
        .map(|(col, v)| {
            let v = match v {
                Value::String(s) => typed(s, schema.get(col)),
                other => other.clone(),
            };
            (col.clone(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_changes_and_controls() {
        let body = br#"[
            {"headers":{"operation":"insert","lsn":"1"},"key":"\"public\".\"tasks\"/\"tsk_1\"","value":{"id":"tsk_1","number":"1","project_id":null}},
            {"headers":{"operation":"update"},"key":"k","value":{"title":"x"}},
            {"headers":{"operation":"delete"},"key":"k","value":{"id":"tsk_1"}},
            {"headers":{"control":"snapshot-end","xmin":"1"}},
            {"headers":{"event":"move-in","patterns":[]}},
            {"headers":{"control":"up-to-date"}}
        ]"#;
        let m = parse_body(body).unwrap();
        assert_eq!(
            m,
            [
                Message::Insert {
                    key: r#""public"."tasks"/"tsk_1""#.into(),
                    value: json!({"id":"tsk_1","number":"1","project_id":null})
                        .as_object()
                        .unwrap()
                        .clone(),
                },
                Message::Update {
                    key: "k".into(),
                    value: json!({"title":"x"}).as_object().unwrap().clone(),
                },
                Message::Delete { key: "k".into() },
                Message::Other,
                Message::Other,
                Message::UpToDate,
            ]
        );
        assert_eq!(
            parse_body(br#"[{"headers":{"control":"must-refetch"}}]"#).unwrap(),
            [Message::MustRefetch]
        );
        assert_eq!(parse_body(b"").unwrap(), []);
        assert_eq!(parse_body(b" \n").unwrap(), []);
        assert!(parse_body(b"{}").is_err());
        assert!(parse_body(b"[{\"key\":\"no headers\"}]").is_err());
    }

    #[test]
    fn values_are_typed_by_the_schema() {
        let schema: Schema = serde_json::from_str(
            r#"{"id":{"type":"text","pk_index":0,"not_null":true},"number":{"type":"int8"},
                "done":{"type":"bool"},"labels":{"type":"jsonb"},"ratio":{"type":"float8"},
                "tags":{"type":"text","dims":1}}"#,
        )
        .unwrap();
        let row = json!({"id":"tsk_1","number":"12","done":"f","labels":"[\"a\",\"b\"]",
                         "ratio":"0.5","tags":"{a,b}","gone":null,"extra":"7"});
        let row = typed_row(row.as_object().unwrap(), &schema);
        assert_eq!(
            Value::Object(row),
            json!({"id":"tsk_1","number":12,"done":false,"labels":["a","b"],"ratio":0.5,
                   "tags":"{a,b}","gone":null,"extra":"7"})
        );
        // A value that does not parse as its type stays text.
        assert_eq!(typed("twelve", schema.get("number")), json!("twelve"));
        assert_eq!(typed("true", schema.get("done")), json!(true));
    }
}
