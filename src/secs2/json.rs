//! The JSON form of SECS messages used by the `system.secsgem` scripting API:
//!
//! ```json
//! {"header": {"doc": "...", "stream": 1, "function": 11, "reply": true},
//!  "body": [ {"format": "U4", "value": 4} ]}
//! ```
//!
//! The body is the root item: a JSON array is a list (`L`), an object is any other item. An
//! item's `value` is a scalar when it holds one element and an array otherwise (`[]` for none);
//! `A` and `J` values are strings. `""` and `null` mean no body. On input `doc` and `codeDesc`
//! are optional, `{"format": "L", "value": [...]}` is also a list, the format names are
//! case-insensitive with the aliases `Bool`/`Boolean`/`BOOLEAN`, and `B` takes a `"0x0102"` hex
//! or base64 string. Errors name the JSON path of the offending item.
//!
//! Text mapping matches SML: `A` is Latin-1, `J` is JIS X 0201, `W` is decoded by its header
//! (`"lsh"` key, 2 = UTF-8 when absent). Text that cannot be shown as a string round-trips as an
//! array of byte values. Floats that JSON cannot hold are the strings `"NaN"`, `"Infinity"`
//! and `"-Infinity"`, and a NaN other than the plain one is `"NaN=0x7FC00001"` (its bit
//! pattern, as in SML). A float beyond its format's range is an error, not infinity. BOOLEAN
//! values are `true`/`false` for the bytes 1/0 and the byte's number for any other byte.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::item::{Format, Item, LSH_UTF8};
use super::message::{Message, StreamFunction};
use super::sml::{
    Float, decode_localized, encode_localized_char, float_text, jis8_byte, jis8_char, parse_bool,
    parse_float,
};

/// Deepest list nesting accepted on input.
pub const MAX_DEPTH: usize = 256;

/// A JSON value did not describe a SECS message or item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct JsonError {
    /// Where in the document, e.g. `body[0][2].value`.
    pub path: String,
    pub message: String,
}

fn fail<T>(path: &str, message: impl Into<String>) -> Result<T, JsonError> {
    Err(JsonError {
        path: path.to_string(),
        message: message.into(),
    })
}

// ---------------------------------------------------------------- item -> JSON

/// The JSON form of an item (lists as arrays).
pub fn item_to_json(item: &Item) -> Value {
    match item {
        Item::L(children) => Value::Array(children.iter().map(item_to_json).collect()),
        other => {
            let mut obj = Map::new();
            obj.insert(
                "format".into(),
                Value::String(json_format_name(other.format()).into()),
            );
            if let Item::W { lsh, .. } = other
                && *lsh != LSH_UTF8
            {
                obj.insert("lsh".into(), Value::from(*lsh));
            }
            obj.insert("value".into(), leaf_value(other));
            Value::Object(obj)
        }
    }
}

/// The format name written in JSON (`Bool` for BOOLEAN, as Ignition writes it).
pub fn json_format_name(format: Format) -> &'static str {
    match format {
        Format::Boolean => "Bool",
        other => other.name(),
    }
}

/// The JSON form of an optional body: `""` when there is none.
pub fn body_to_json(body: Option<&Item>) -> Value {
    body.map_or_else(|| Value::String(String::new()), item_to_json)
}

/// `{"header": {...}, "body": ...}` for a message.
pub fn message_to_json(message: &Message) -> Value {
    let mut header = Map::new();
    header.insert("stream".into(), Value::from(message.stream));
    header.insert("function".into(), Value::from(message.function));
    header.insert("reply".into(), Value::Bool(message.w_bit));
    let mut obj = Map::new();
    obj.insert("header".into(), Value::Object(header));
    obj.insert("body".into(), body_to_json(message.body.as_ref()));
    Value::Object(obj)
}

/// The JSON text of a message, written directly (the same text as
/// `message_to_json(m).to_string()`, without building a `Value` tree first).
pub fn message_to_json_string(message: &Message) -> String {
    let mut out = Vec::with_capacity(64 + message.body.as_ref().map_or(0, |b| b.encoded_len() * 3));
    out.extend_from_slice(b"{\"header\":{\"stream\":");
    push_display(&mut out, message.stream);
    out.extend_from_slice(b",\"function\":");
    push_display(&mut out, message.function);
    out.extend_from_slice(if message.w_bit {
        b",\"reply\":true},\"body\":"
    } else {
        b",\"reply\":false},\"body\":"
    });
    match &message.body {
        Some(item) => write_item(&mut out, item),
        None => out.extend_from_slice(b"\"\""),
    }
    out.push(b'}');
    // Only valid UTF-8 was written: JSON punctuation, numbers and serde_json's strings.
    String::from_utf8(out).unwrap_or_default()
}

fn push_display(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    use std::io::Write as _;
    let _ = write!(out, "{v}");
}

fn push_value(out: &mut Vec<u8>, v: &Value) {
    let _ = serde_json::to_writer(&mut *out, v);
}

fn write_values<T>(out: &mut Vec<u8>, values: &[T], one: impl Fn(&mut Vec<u8>, &T)) {
    if let [v] = values {
        return one(out, v);
    }
    out.push(b'[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        one(out, v);
    }
    out.push(b']');
}

fn write_item(out: &mut Vec<u8>, item: &Item) {
    match item {
        Item::L(children) => {
            out.push(b'[');
            for (i, c) in children.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_item(out, c);
            }
            out.push(b']');
        }
        Item::W { lsh, .. } if *lsh != LSH_UTF8 => push_value(out, &item_to_json(item)),
        leaf => {
            out.extend_from_slice(b"{\"format\":\"");
            out.extend_from_slice(json_format_name(leaf.format()).as_bytes());
            out.extend_from_slice(b"\",\"value\":");
            let int = |out: &mut Vec<u8>, v: &dyn std::fmt::Display| push_display(out, v);
            match leaf {
                Item::B(v) | Item::U1(v) => write_values(out, v, |o, x| int(o, x)),
                Item::Boolean(v) => write_values(out, v, |o, b| match b {
                    0 => o.extend_from_slice(b"false"),
                    1 => o.extend_from_slice(b"true"),
                    other => int(o, other),
                }),
                Item::I1(v) => write_values(out, v, |o, x| int(o, x)),
                Item::I2(v) => write_values(out, v, |o, x| int(o, x)),
                Item::I4(v) => write_values(out, v, |o, x| int(o, x)),
                Item::I8(v) => write_values(out, v, |o, x| int(o, x)),
                Item::U2(v) => write_values(out, v, |o, x| int(o, x)),
                Item::U4(v) => write_values(out, v, |o, x| int(o, x)),
                Item::U8(v) => write_values(out, v, |o, x| int(o, x)),
                Item::A(_) | Item::J(_) | Item::W { .. } | Item::F4(_) | Item::F8(_) => {
                    push_value(out, &leaf_value(leaf))
                }
                Item::L(_) => {}
            }
            out.push(b'}');
        }
    }
}

fn scalar_or_array<T>(values: &[T], one: impl Fn(&T) -> Value) -> Value {
    match values {
        [v] => one(v),
        _ => Value::Array(values.iter().map(one).collect()),
    }
}

/// A float as JSON: a number, or `"NaN"`, `"Infinity"`, `"-Infinity"` for what JSON
/// numbers cannot hold. (Items write a NaN with another payload or its sign bit set as
/// `"NaN=0x7FC00001"`, its bit pattern; see [`float_text`].)
pub fn float_value(v: f64) -> Value {
    Number::from_f64(v).map_or_else(
        || {
            Value::String(
                if v.is_nan() {
                    "NaN"
                } else if v > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                }
                .into(),
            )
        },
        Value::Number,
    )
}

fn bytes_value(bytes: &[u8]) -> Value {
    Value::Array(bytes.iter().map(|&b| Value::from(b)).collect())
}

fn leaf_value(item: &Item) -> Value {
    match item {
        Item::L(_) => unreachable!("lists are arrays"),
        Item::B(v) => scalar_or_array(v, |&b| Value::from(b)),
        Item::Boolean(v) => scalar_or_array(v, |&b| match b {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            other => Value::from(other),
        }),
        Item::A(v) => Value::String(v.iter().map(|&b| char::from(b)).collect()),
        Item::J(v) => v
            .iter()
            .map(|&b| jis8_char(b))
            .collect::<Option<String>>()
            .map_or_else(|| bytes_value(v), Value::String),
        Item::W { lsh, bytes } => {
            decode_localized(*lsh, bytes).map_or_else(|| bytes_value(bytes), Value::String)
        }
        Item::I1(v) => scalar_or_array(v, |&x| Value::from(x)),
        Item::I2(v) => scalar_or_array(v, |&x| Value::from(x)),
        Item::I4(v) => scalar_or_array(v, |&x| Value::from(x)),
        Item::I8(v) => scalar_or_array(v, |&x| Value::from(x)),
        Item::U1(v) => scalar_or_array(v, |&x| Value::from(x)),
        Item::U2(v) => scalar_or_array(v, |&x| Value::from(x)),
        Item::U4(v) => scalar_or_array(v, |&x| Value::from(x)),
        Item::U8(v) => scalar_or_array(v, |&x| Value::from(x)),
        // The shortest text of an f32 read as f64 reads back as the same f32.
        Item::F4(v) => scalar_or_array(v, |&x| {
            if x.is_nan() {
                Value::String(float_text(x))
            } else {
                float_value(x.to_string().parse::<f64>().unwrap_or(f64::from(x)))
            }
        }),
        Item::F8(v) => scalar_or_array(v, |&x| {
            if x.is_nan() {
                Value::String(float_text(x))
            } else {
                float_value(x)
            }
        }),
    }
}

// ---------------------------------------------------------------- JSON -> item

/// Reads a body: `""`/`null` is no body, anything else one root item.
pub fn body_from_json(value: &Value) -> Result<Option<Item>, JsonError> {
    body_at(value, "body")
}

fn body_at(value: &Value, path: &str) -> Result<Option<Item>, JsonError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => {
            // A body passed as JSON text (as scripts often do).
            let inner: Value = serde_json::from_str(s).map_err(|e| JsonError {
                path: path.into(),
                message: format!("a string body must be JSON text or \"\": {e}"),
            })?;
            match inner {
                Value::String(_) => {
                    fail(path, "expected an item object or an array, found a string")
                }
                inner => body_at(&inner, path),
            }
        }
        other => item_at(other, path, 0).map(Some),
    }
}

/// Reads one item (an array is a list).
pub fn item_from_json(value: &Value) -> Result<Item, JsonError> {
    item_at(value, "body", 0)
}

/// Reads a message: `{"header": {"stream", "function", "reply"}, "body": ...}`.
pub fn message_from_json(value: &Value) -> Result<Message, JsonError> {
    let Value::Object(obj) = value else {
        return fail("$", "expected an object with \"header\" and \"body\"");
    };
    let Some(header) = obj.get("header") else {
        return fail("$", "missing \"header\"");
    };
    let Value::Object(header) = header else {
        return fail(
            "header",
            "expected an object with stream, function and reply",
        );
    };
    let number = |key: &str, max: u64| -> Result<u8, JsonError> {
        let path = format!("header.{key}");
        match header.get(key) {
            None => fail(&path, "missing"),
            Some(v) => match v.as_u64() {
                Some(n) if n <= max => Ok(n as u8),
                _ => fail(&path, format!("expected an integer 0..={max}, found {v}")),
            },
        }
    };
    let stream = number("stream", 127)?;
    let function = number("function", 255)?;
    let reply = match header.get("reply") {
        None | Some(Value::Null) => false,
        Some(v) => json_bool(v).ok_or_else(|| JsonError {
            path: "header.reply".into(),
            message: format!("expected true/false (or \"True\"/\"False\"), found {v}"),
        })?,
    };
    let body = match obj.get("body") {
        None => None,
        Some(b) => body_at(b, "body")?,
    };
    Ok(Message::new(
        StreamFunction { stream, function },
        reply,
        body,
    ))
}

fn json_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        _ => None,
    }
}

fn item_at(value: &Value, path: &str, depth: usize) -> Result<Item, JsonError> {
    if depth >= MAX_DEPTH {
        return fail(path, format!("lists nest deeper than {MAX_DEPTH}"));
    }
    match value {
        Value::Array(children) => children
            .iter()
            .enumerate()
            .map(|(i, c)| item_at(c, &format!("{path}[{i}]"), depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Item::L),
        Value::Object(obj) => {
            let Some(name) = obj.get("format") else {
                return fail(path, "item object has no \"format\"");
            };
            let Some(name) = name.as_str() else {
                return fail(
                    &format!("{path}.format"),
                    format!("expected a format name, found {name}"),
                );
            };
            let format: Format = name.parse().map_err(|e| JsonError {
                path: format!("{path}.format"),
                message: format!("{e}"),
            })?;
            let vpath = format!("{path}.value");
            let null = Value::Null;
            let v = obj.get("value").unwrap_or(&null);
            if format == Format::List {
                return match v {
                    Value::Array(_) => item_at(v, &vpath, depth),
                    Value::Null => Ok(Item::L(Vec::new())),
                    other => fail(&vpath, format!("expected an array of items, found {other}")),
                };
            }
            let lsh = match obj.get("lsh") {
                None | Some(Value::Null) => LSH_UTF8,
                Some(l) => match l.as_u64().and_then(|n| u16::try_from(n).ok()) {
                    Some(n) if format == Format::Localized => n,
                    _ => {
                        return fail(
                            &format!("{path}.lsh"),
                            "expected an integer 0..=65535 on a W item",
                        );
                    }
                },
            };
            leaf_from_json(format, lsh, v, &vpath)
        }
        other => fail(
            path,
            format!(
                "expected an item object {{\"format\", \"value\"}} or an array (list), found {other}"
            ),
        ),
    }
}

/// The elements of a value: an array's elements, nothing for null, else the value itself.
fn elements(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        Value::Null => &[],
        other => std::slice::from_ref(other),
    }
}

fn element_path(path: &str, v: &Value, i: usize) -> String {
    if v.is_array() {
        format!("{path}[{i}]")
    } else {
        path.to_string()
    }
}

fn ints<T: TryFrom<i128>>(v: &Value, path: &str, format: Format) -> Result<Vec<T>, JsonError> {
    elements(v)
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let p = element_path(path, v, i);
            let n: Option<i128> = match e {
                Value::Number(n) => n
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
                    .or_else(|| {
                        n.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 1e20)
                            .map(|f| f as i128)
                    }),
                Value::Bool(b) => Some(i128::from(*b)),
                Value::String(s) => super::sml::parse_int::<i128>(s.trim()).ok(),
                _ => None,
            };
            match n {
                Some(n) => T::try_from(n).map_err(|_| JsonError {
                    path: p,
                    message: format!("{n} is out of range for {format}"),
                }),
                None => fail(&p, format!("expected an integer for {format}, found {e}")),
            }
        })
        .collect()
}

fn floats<T: Float>(v: &Value, path: &str) -> Result<Vec<T>, JsonError> {
    let format = T::FORMAT;
    elements(v)
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let p = element_path(path, v, i);
            match e {
                Value::Number(n) => match n.as_f64().map(T::from_f64) {
                    Some(x) if x.is_infinite() => fail(
                        &p,
                        format!(
                            "{n} is out of range for {format} (largest magnitude {})",
                            T::MAX
                        ),
                    ),
                    Some(x) => Ok(x),
                    None => fail(&p, format!("expected a number for {format}, found {e}")),
                },
                Value::String(s) => parse_float::<T>(s.trim()).or_else(|m| fail(&p, m)),
                _ => fail(&p, format!("expected a number for {format}, found {e}")),
            }
        })
        .collect()
}

fn text_or_bytes(
    v: &Value,
    path: &str,
    format: Format,
    encode: impl Fn(char, &mut Vec<u8>) -> Result<(), String>,
) -> Result<Vec<u8>, JsonError> {
    match v {
        Value::String(s) => {
            let mut out = Vec::with_capacity(s.len());
            for c in s.chars() {
                encode(c, &mut out).map_err(|m| JsonError {
                    path: path.into(),
                    message: m,
                })?;
            }
            Ok(out)
        }
        Value::Null => Ok(Vec::new()),
        Value::Array(_) | Value::Number(_) => ints::<u8>(v, path, format),
        other => fail(
            path,
            format!("expected a string for {format}, found {other}"),
        ),
    }
}

fn leaf_from_json(format: Format, lsh: u16, v: &Value, path: &str) -> Result<Item, JsonError> {
    Ok(match format {
        Format::List => unreachable!("lists are handled by the caller"),
        Format::Binary => Item::B(match v {
            Value::String(s) => binary_string(s).map_err(|m| JsonError {
                path: path.into(),
                message: m,
            })?,
            _ => ints(v, path, format)?,
        }),
        Format::Boolean => Item::Boolean(
            elements(v)
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    match e {
                        Value::Bool(b) => Some(u8::from(*b)),
                        Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
                        Value::String(s) => parse_bool(s.trim()).ok(),
                        _ => None,
                    }
                    .ok_or_else(|| JsonError {
                        path: element_path(path, v, i),
                        message: format!(
                            "expected true/false or a byte value 0..=255 for BOOLEAN, found {e}"
                        ),
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        Format::Ascii => {
            Item::A(text_or_bytes(v, path, format, |c, out| {
                out.push(u8::try_from(u32::from(c)).map_err(|_| {
                format!("character '{c}' cannot be stored in an A item (one byte per character); use W")
            })?);
                Ok(())
            })?)
        }
        Format::Jis8 => Item::J(text_or_bytes(v, path, format, |c, out| {
            out.push(
                jis8_byte(c)
                    .ok_or_else(|| format!("character '{c}' is not in JIS X 0201 (J item)"))?,
            );
            Ok(())
        })?),
        Format::Localized => Item::W {
            lsh,
            bytes: text_or_bytes(v, path, format, |c, out| {
                encode_localized_char(lsh, c, out).ok_or_else(|| {
                    format!("character '{c}' cannot be written with lsh={lsh}; give byte values")
                })
            })?,
        },
        Format::I1 => Item::I1(ints(v, path, format)?),
        Format::I2 => Item::I2(ints(v, path, format)?),
        Format::I4 => Item::I4(ints(v, path, format)?),
        Format::I8 => Item::I8(ints(v, path, format)?),
        Format::U1 => Item::U1(ints(v, path, format)?),
        Format::U2 => Item::U2(ints(v, path, format)?),
        Format::U4 => Item::U4(ints(v, path, format)?),
        Format::U8 => Item::U8(ints(v, path, format)?),
        Format::F4 => Item::F4(floats(v, path)?),
        Format::F8 => Item::F8(floats(v, path)?),
    })
}

/// `B` given as a string: `"0x0102ff"` hex, or base64.
fn binary_string(s: &str) -> Result<Vec<u8>, String> {
    let t = s.trim();
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        let hex: String = hex
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '_')
            .collect();
        if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "'{s}' is not an even number of hex digits after 0x"
            ));
        }
        return Ok((0..hex.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
            .collect());
    }
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .map_err(|e| format!("'{s}' is neither 0x-prefixed hex nor base64 ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ignition_examples() {
        let s1f12 = json!({"header":{"doc":"Status Variable Namelist Reply","stream":1,"function":12,"reply":false},
            "body":[[{"doc":"SVID, Status Variable ID","format":"U4","value":4},
                     {"doc":"SVNAME","format":"A","value":"RandomBinaryData","codeDesc":"x"},
                     {"format":"A","value":"B"}]]});
        let msg = message_from_json(&s1f12).unwrap();
        assert_eq!((msg.stream, msg.function, msg.w_bit), (1, 12, false));
        assert_eq!(
            msg.body,
            Some(Item::L(vec![Item::L(vec![
                Item::U4(vec![4]),
                Item::A(b"RandomBinaryData".to_vec()),
                Item::A(b"B".to_vec())
            ])]))
        );
        let out = message_to_json(&msg);
        assert_eq!(
            out.to_string(),
            r#"{"header":{"stream":1,"function":12,"reply":false},"body":[[{"format":"U4","value":4},{"format":"A","value":"RandomBinaryData"},{"format":"A","value":"B"}]]}"#
        );
        let reply_text = json!({"header":{"stream":1,"function":3,"reply":"True"},"body":""});
        let msg = message_from_json(&reply_text).unwrap();
        assert!(msg.w_bit);
        assert_eq!(msg.body, None);
    }

    #[test]
    fn bodies_and_aliases() {
        assert_eq!(body_from_json(&json!("")).unwrap(), None);
        assert_eq!(body_from_json(&Value::Null).unwrap(), None);
        assert_eq!(body_from_json(&json!([])).unwrap(), Some(Item::L(vec![])));
        assert_eq!(
            body_from_json(&json!({"format":"U4","value":[]})).unwrap(),
            Some(Item::U4(vec![]))
        );
        assert_eq!(
            body_from_json(&json!("[{\"format\":\"U1\",\"value\":[1,2]}]")).unwrap(),
            Some(Item::L(vec![Item::U1(vec![1, 2])]))
        );
        for alias in ["Bool", "BOOLEAN", "Boolean", "bool"] {
            assert_eq!(
                item_from_json(&json!({"format": alias, "value": [true, 0]})).unwrap(),
                Item::Boolean(vec![1, 0])
            );
        }
        assert_eq!(
            item_from_json(&json!({"format":"B","value":"0x01ff"})).unwrap(),
            Item::B(vec![1, 255])
        );
        assert_eq!(
            item_from_json(&json!({"format":"B","value":"AQI="})).unwrap(),
            Item::B(vec![1, 2])
        );
        assert_eq!(
            item_from_json(&json!({"format":"L","value":[{"format":"U1","value":1}]})).unwrap(),
            Item::L(vec![Item::U1(vec![1])])
        );
        assert_eq!(
            item_from_json(&json!({"format":"W","lsh":3,"value":"ab"})).unwrap(),
            Item::W {
                lsh: 3,
                bytes: b"ab".to_vec()
            }
        );
        assert_eq!(
            item_to_json(&Item::F4(vec![0.1])).to_string(),
            r#"{"format":"F4","value":0.1}"#
        );
        assert_eq!(
            item_to_json(&Item::F8(vec![f64::NAN, f64::NEG_INFINITY])).to_string(),
            r#"{"format":"F8","value":["NaN","-Infinity"]}"#
        );
        assert_eq!(
            item_to_json(&Item::J(vec![0x80])).to_string(),
            r#"{"format":"J","value":[128]}"#
        );
    }

    /// The bytes of an item written as JSON text and read back.
    fn reread_bytes(item: &Item) -> Vec<u8> {
        let text = message_to_json_string(&Message::new(
            StreamFunction {
                stream: 1,
                function: 1,
            },
            false,
            Some(item.clone()),
        ));
        assert_eq!(
            text,
            message_to_json(&Message::new(
                StreamFunction {
                    stream: 1,
                    function: 1
                },
                false,
                Some(item.clone()),
            ))
            .to_string()
        );
        let value: Value = serde_json::from_str(&text).unwrap();
        let back = message_from_json(&value).unwrap_or_else(|e| panic!("{text}: {e}"));
        back.body.unwrap().encode().unwrap()
    }

    #[test]
    fn floats_and_booleans_keep_every_byte() {
        for bits in [
            0x7FC0_0000u32,
            0x7FC0_0001,
            0xFFC0_0000,
            0x7F80_0001,
            0x8000_0000,
            0x7F80_0000,
        ] {
            let item = Item::F4(vec![f32::from_bits(bits), 1.5]);
            assert_eq!(reread_bytes(&item), item.encode().unwrap(), "{item}");
        }
        for bits in [
            0x7FF8_0000_0000_0001u64,
            0xFFF8_0000_0000_0000,
            0x8000_0000_0000_0000,
            0xFFF0_0000_0000_0000,
        ] {
            let item = Item::F8(vec![f64::from_bits(bits)]);
            assert_eq!(reread_bytes(&item), item.encode().unwrap(), "{item}");
        }
        assert_eq!(
            item_to_json(&Item::F4(vec![f32::NAN, f32::from_bits(0x7FC0_0001)])).to_string(),
            r#"{"format":"F4","value":["NaN","NaN=0x7FC00001"]}"#
        );
        let odd = Item::Boolean(vec![1, 0, 2, 0xFF]);
        assert_eq!(
            item_to_json(&odd).to_string(),
            r#"{"format":"Bool","value":[true,false,2,255]}"#
        );
        assert_eq!(reread_bytes(&odd), odd.encode().unwrap());
        assert_eq!(
            item_from_json(&json!({"format":"Bool","value":["0x02", "True", "F"]})).unwrap(),
            Item::Boolean(vec![2, 1, 0])
        );
    }

    #[test]
    fn errors_name_the_path() {
        let cases = [
            (
                json!([[{"format":"U1","value":[1, 300]}]]),
                "body[0][0].value[1]",
                "out of range for U1",
            ),
            (
                json!([{"format":"Q4","value":1}]),
                "body[0].format",
                "unknown SECS-II format",
            ),
            (json!([{"value":1}]), "body[0]", "no \"format\""),
            (json!([1]), "body[0]", "expected an item object"),
            (
                json!({"format":"A","value":"€"}),
                "body.value",
                "cannot be stored in an A item",
            ),
            (
                json!({"format":"BOOLEAN","value":"yes"}),
                "body.value",
                "expected true/false",
            ),
            (
                json!({"format":"F4","value":[1, {}]}),
                "body.value[1]",
                "expected a number for F4",
            ),
            (
                json!({"format":"B","value":"0x123"}),
                "body.value",
                "hex digits",
            ),
            (json!("not json"), "body", "must be JSON text"),
            (
                json!({"format":"Bool","value":[true, 256]}),
                "body.value[1]",
                "byte value 0..=255",
            ),
            (
                json!({"format":"F4","value":1e39}),
                "body.value",
                "out of range for F4",
            ),
            (
                json!({"format":"F8","value":["1", "1e309"]}),
                "body.value[1]",
                "1e309 is out of range for F8",
            ),
            (
                json!({"format":"F4","value":"NaN=0x3F800000"}),
                "body.value",
                "not a NaN of F4",
            ),
        ];
        for (value, path, needle) in cases {
            let err = body_from_json(&value).unwrap_err();
            assert_eq!(err.path, path, "{err}");
            assert!(err.message.contains(needle), "{err}");
        }
        let err = message_from_json(&json!({"header":{"stream":200,"function":1}})).unwrap_err();
        assert_eq!(err.path, "header.stream");
        let err = message_from_json(&json!({"header":{"stream":1,"function":1,"reply":"maybe"}}))
            .unwrap_err();
        assert_eq!(err.path, "header.reply");
    }
}
