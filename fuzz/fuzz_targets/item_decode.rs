//! The SECS-II decoder on arbitrary bytes: never panics, and whatever decodes re-encodes to
//! bytes that decode to the same item again. The decoded item also prints as SML and as the
//! JSON form, and both read back to the same bytes (text forms keep every byte).
#![no_main]

use libfuzzer_sys::fuzz_target;
use secsgate::secs2::codec::DecodeLimits;
use secsgate::secs2::{Item, json, sml};

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_bytes: 1 << 20,
        max_depth: 32,
        max_items: 100_000,
    };
    let Ok(item) = Item::decode(data, &limits) else {
        return;
    };
    let bytes = item.encode().expect("a decoded item encodes");
    assert_eq!(bytes.len(), item.encoded_len());
    let again = Item::decode(&bytes, &limits).expect("a re-encoded item decodes");
    assert_eq!(
        again.encode().unwrap(),
        bytes,
        "decode(encode(item)) changed"
    );

    for text in [item.to_string(), format!("{item:#}")] {
        let parsed = sml::parse_item(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(parsed.encode().unwrap(), bytes, "SML {text}");
    }
    let value = json::item_to_json(&item);
    let reread: serde_json::Value = serde_json::from_str(&value.to_string()).unwrap();
    let back = json::item_from_json(&reread).unwrap_or_else(|e| panic!("{value}: {e}"));
    assert_eq!(back.encode().unwrap(), bytes, "JSON {value}");
});
