//! The SML parser on arbitrary text: never panics, and whatever parses prints (one line and
//! indented) to text that parses to the same bytes and prints the same again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secsgate::secs2::sml::{self, Either};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = sml::parse_messages(text);
    match sml::parse_message_or_item(text) {
        Ok(Either::Item(item)) => {
            let Ok(bytes) = item.encode() else {
                return;
            };
            let printed = item.to_string();
            for text in [printed.clone(), format!("{item:#}")] {
                let parsed = sml::parse_item(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(parsed.encode().unwrap(), bytes, "{text}");
                assert_eq!(parsed.to_string(), printed, "printing is not stable");
            }
        }
        Ok(Either::Message(message)) => {
            let printed = message.to_string();
            for text in [printed.clone(), format!("{message:#}")] {
                let parsed = sml::parse_message(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(parsed.to_string(), printed, "{text}");
                assert_eq!(
                    parsed.body.map(|b| b.encode().ok()),
                    message.body.as_ref().map(|b| b.encode().ok()),
                    "{text}"
                );
            }
        }
        Err(_) => {}
    }
});
