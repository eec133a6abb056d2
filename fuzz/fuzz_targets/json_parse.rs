//! The JSON form on arbitrary text: reading a body or a message never panics, and whatever
//! reads writes (as a value and as direct text) to JSON that reads back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secsgate::secs2::{Item, StreamFunction, json};
use serde_json::Value;

fn same_bytes_after_json(item: &Item) {
    let Ok(bytes) = item.encode() else {
        return;
    };
    let value = json::item_to_json(item);
    let text = value.to_string();
    let reread: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let back = json::item_from_json(&reread).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(back.encode().unwrap(), bytes, "{text}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(Some(item)) = json::body_from_json(&value) {
        same_bytes_after_json(&item);
        let message = secsgate::secs2::Message::new(
            StreamFunction {
                stream: 6,
                function: 11,
            },
            true,
            Some(item),
        );
        assert_eq!(
            json::message_to_json_string(&message),
            json::message_to_json(&message).to_string()
        );
    }
    if let Ok(message) = json::message_from_json(&value) {
        let text = json::message_to_json_string(&message);
        assert_eq!(text, json::message_to_json(&message).to_string());
        let reread: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let back = json::message_from_json(&reread).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            (back.stream, back.function, back.w_bit),
            (message.stream, message.function, message.w_bit)
        );
        assert_eq!(
            back.body.map(|b| b.encode().ok()),
            message.body.as_ref().map(|b| b.encode().ok()),
            "{text}"
        );
    }
});
