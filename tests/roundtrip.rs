//! Property tests: any item round-trips through the binary form, SML (one-line and indented)
//! and the JSON form; the decoder and parsers return errors, never panic, on random input.

use proptest::prelude::*;
use secsgate::hsms::frame;
use secsgate::secs2::codec::DecodeLimits;
use secsgate::secs2::{Item, json, sml};

/// Every float keeps its bits through text: ordinary values, the plain NaN, NaNs with any
/// payload and sign, -0.0 and the infinities.
fn f32s() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => any::<f32>(),
        1 => Just(f32::NAN),
        2 => (any::<bool>(), 1u32..0x80_0000)
            .prop_map(|(sign, fraction)| f32::from_bits(u32::from(sign) << 31 | 0x7F80_0000 | fraction)),
        1 => prop::sample::select(vec![-0.0, f32::INFINITY, f32::NEG_INFINITY]),
    ]
}

fn f64s() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => any::<f64>(),
        1 => Just(f64::NAN),
        2 => (any::<bool>(), 1u64..0x10_0000_0000_0000).prop_map(|(sign, fraction)| {
            f64::from_bits(u64::from(sign) << 63 | 0x7FF0_0000_0000_0000 | fraction)
        }),
        1 => prop::sample::select(vec![-0.0, f64::INFINITY, f64::NEG_INFINITY]),
    ]
}

/// BOOLEAN bytes: mostly 0 and 1, sometimes any other byte (kept as sent).
fn booleans() -> impl Strategy<Value = u8> {
    prop_oneof![4 => 0u8..=1, 1 => any::<u8>()]
}

fn leaf() -> impl Strategy<Value = Item> {
    let n = 0..6usize;
    prop_oneof![
        prop::collection::vec(any::<u8>(), n.clone()).prop_map(Item::B),
        prop::collection::vec(booleans(), n.clone()).prop_map(Item::Boolean),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(Item::A),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(Item::J),
        "[a-zA-Z0-9 ü日本\"\\\\\n]{0,8}".prop_map(|s| Item::localized(&s)),
        (any::<u16>(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(lsh, bytes)| Item::W { lsh, bytes }),
        prop::collection::vec(any::<i8>(), n.clone()).prop_map(Item::I1),
        prop::collection::vec(any::<i16>(), n.clone()).prop_map(Item::I2),
        prop::collection::vec(any::<i32>(), n.clone()).prop_map(Item::I4),
        prop::collection::vec(any::<i64>(), n.clone()).prop_map(Item::I8),
        prop::collection::vec(any::<u8>(), n.clone()).prop_map(Item::U1),
        prop::collection::vec(any::<u16>(), n.clone()).prop_map(Item::U2),
        prop::collection::vec(any::<u32>(), n.clone()).prop_map(Item::U4),
        prop::collection::vec(any::<u64>(), n.clone()).prop_map(Item::U8),
        prop::collection::vec(f32s(), n.clone()).prop_map(Item::F4),
        prop::collection::vec(f64s(), n).prop_map(Item::F8),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(Item::L)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn binary_round_trip(item in item()) {
        let bytes = item.encode().unwrap();
        prop_assert_eq!(bytes.len(), item.encoded_len());
        let back = Item::decode(&bytes, &DecodeLimits::default()).unwrap();
        prop_assert_eq!(back.encode().unwrap(), bytes);
    }

    #[test]
    fn sml_round_trip(item in item()) {
        let bytes = item.encode().unwrap();
        for text in [item.to_string(), format!("{item:#}")] {
            let parsed = sml::parse_item(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(parsed.encode().unwrap(), bytes.clone(), "{}", text);
            // Printing is stable.
            prop_assert_eq!(parsed.to_string(), item.to_string());
        }
    }

    #[test]
    fn json_round_trip(item in item()) {
        let bytes = item.encode().unwrap();
        let value = json::item_to_json(&item);
        // Through text, as scripts see it.
        let reparsed: serde_json::Value = serde_json::from_str(&value.to_string()).unwrap();
        let back = json::item_from_json(&reparsed).map_err(|e| TestCaseError::fail(format!("{value}: {e}")))?;
        prop_assert_eq!(back.encode().unwrap(), bytes, "{}", value);
    }

    #[test]
    fn message_sml_and_json_round_trip(item in proptest::option::of(item()), stream in 0u8..128, function: u8, w: bool) {
        let message = secsgate::secs2::Message::new(
            secsgate::secs2::StreamFunction { stream, function }, w, item);
        let parsed = sml::parse_message(&format!("{message:#}")).unwrap();
        prop_assert_eq!(parsed.to_string(), message.to_string());
        let from_json = json::message_from_json(&json::message_to_json(&message)).unwrap();
        prop_assert_eq!(from_json.to_string(), message.to_string());
        let mut frame_bytes = Vec::new();
        frame::encode_message(&message, &mut frame_bytes).unwrap();
        let (header, body) = frame::split_frame(&frame_bytes).unwrap();
        let back = header.into_message(Item::decode_body(body, &DecodeLimits::default()).unwrap());
        prop_assert_eq!(back.to_string(), message.to_string());
    }

    #[test]
    fn direct_json_text_matches_the_value_form(item in proptest::option::of(item()), w: bool) {
        let message = secsgate::secs2::Message::new(
            secsgate::secs2::StreamFunction { stream: 6, function: 11 }, w, item);
        prop_assert_eq!(json::message_to_json_string(&message), json::message_to_json(&message).to_string());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let tight = DecodeLimits { max_bytes: 200, max_depth: 4, max_items: 50 };
        let _ = Item::decode(&bytes, &DecodeLimits::default());
        let _ = Item::decode(&bytes, &tight);
        let _ = frame::split_frame(&bytes);
    }

    #[test]
    fn truncated_encodings_are_errors(item in item(), cut in any::<prop::sample::Index>()) {
        let bytes = item.encode().unwrap();
        let at = cut.index(bytes.len());
        let err = Item::decode(&bytes[..at], &DecodeLimits::default());
        prop_assert!(err.is_err(), "decoding {} of {} bytes succeeded", at, bytes.len());
        if let Err(e) = err {
            prop_assert!(e.offset <= at);
        }
    }

    #[test]
    fn random_text_never_panics(text in "[<>\\[\\]LUABIFW0-9x .\"'\\\\/*:,=a-z\n-]{0,64}") {
        let _ = sml::parse_message_or_item(&text);
        let _ = sml::parse_messages(&text);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            let _ = json::body_from_json(&v);
        }
    }

    #[test]
    fn random_json_never_panics(value in json_value()) {
        let _ = json::body_from_json(&value);
        let _ = json::message_from_json(&value);
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|n| json!(n)),
        "[A-Za-z0-9]{0,4}".prop_map(Value::String),
        prop::sample::select(vec!["U4", "A", "B", "Bool", "L", "F4", "W", "J", "I8", "X"])
            .prop_map(|f| Value::String(f.into())),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            (
                prop::sample::select(vec![
                    "format", "value", "header", "body", "stream", "function", "reply", "lsh"
                ]),
                inner.clone(),
                inner
            )
                .prop_map(|(k, v, f)| json!({ k: v, "format": f })),
        ]
    })
}
