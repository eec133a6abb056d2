//! Every vector in `../shared/vectors/secs2_vectors.json` (byte vectors from public projects'
//! tests): items encode to exactly the given bytes and decode back, headers and frames decode
//! to the right fields, must-reject bytes are rejected, decode-only bytes decode.
//!
//! The file is read at test time from the sibling `shared` folder (or `$SECSGATE_SHARED`);
//! when it is absent the tests fail and say where they looked: a check that did not run must
//! not pass.

use std::path::PathBuf;

use secsgate::hsms::frame::{self, Header, SType};
use secsgate::secs2::codec::{self, DecodeLimits};
use secsgate::secs2::{Format, Item, sml};
use serde_json::Value;

struct Vector {
    sml: Option<String>,
    bytes: Vec<u8>,
    kind: String,
    note: String,
    source: String,
}

fn load() -> Vec<Vector> {
    let path = std::env::var_os("SECSGATE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
        .join("vectors/secs2_vectors.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; the vectors are needed: set SECSGATE_SHARED to the shared folder",
            path.display()
        )
    });
    let all: Vec<Value> = serde_json::from_str(&text).expect("vector file is JSON");
    all.iter()
        .map(|v| Vector {
            sml: v["sml"].as_str().map(str::to_owned),
            bytes: secsgate::cli::from_hex(v["hex"].as_str().expect("hex")).expect("hex"),
            kind: v["kind"].as_str().expect("kind").to_owned(),
            note: v["note"].as_str().unwrap_or("").to_owned(),
            source: v["source"].as_str().unwrap_or("").to_owned(),
        })
        .collect()
}

fn of_kind<'a>(all: &'a [Vector], kind: &str) -> Vec<&'a Vector> {
    let found: Vec<_> = all.iter().filter(|v| v.kind == kind).collect();
    assert!(!found.is_empty(), "no vectors of kind {kind}");
    found
}

/// The item an SML vector describes: an item, or the body of a message. Vectors with a
/// parenthesised comment after the SML (SECS-I block parts) are not SML and give `None`.
fn sml_item(text: &str) -> Item {
    match sml::parse_message_or_item(text).unwrap_or_else(|e| panic!("{text:?}: {e}")) {
        sml::Either::Item(item) => item,
        sml::Either::Message(m) => m.body.expect("message vector has a body"),
    }
}

#[test]
fn items_encode_exactly_and_decode_back() {
    let all = load();
    let limits = DecodeLimits::default();
    for v in of_kind(&all, "secs2_item") {
        let decoded =
            Item::decode(&v.bytes, &limits).unwrap_or_else(|e| panic!("{}: {e}", v.source));
        assert_eq!(decoded.encode().unwrap(), v.bytes, "{}", v.source);
        let text = v.sml.as_deref().expect("item vectors have SML");
        let parsed = sml_item(text);
        match (&parsed, &decoded) {
            // The SML of a localized string does not say its header; compare the text.
            (Item::W { bytes: a, .. }, Item::W { bytes: b, .. }) => assert_eq!(a, b, "{text}"),
            _ => assert_eq!(parsed.encode().unwrap(), v.bytes, "{text} ({})", v.source),
        }
        // Our own printing re-parses to the same bytes.
        let printed = decoded.to_string();
        assert_eq!(sml_item(&printed).encode().unwrap(), v.bytes, "{printed}");
    }
}

#[test]
fn item_headers() {
    let all = load();
    for v in of_kind(&all, "item_header") {
        let length = v.bytes[1..]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        let format = Format::from_code(v.bytes[0] >> 2).expect("known format");
        let mut buf = Vec::new();
        codec::encode_header(&mut buf, format, length).unwrap();
        assert_eq!(buf, v.bytes, "{}", v.note);
        // The decoder reads the same length: it reports it as running past the end.
        if length > 0 {
            let err = Item::decode(&v.bytes, &DecodeLimits::default()).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("declares {length} bytes")),
                "{err}"
            );
        }
    }
    // One past the 3-byte maximum is refused.
    assert!(codec::encode_header(&mut Vec::new(), Format::U4, 0x100_0000).is_err());
}

fn stype_named(note: &str) -> Option<SType> {
    [
        ("Select.req", SType::SelectReq),
        ("Select.rsp", SType::SelectRsp),
        ("Deselect.req", SType::DeselectReq),
        ("Deselect.rsp", SType::DeselectRsp),
        ("Linktest.req", SType::LinktestReq),
        ("Linktest.rsp", SType::LinktestRsp),
        ("Reject.req", SType::RejectReq),
        ("Separate.req", SType::SeparateReq),
    ]
    .into_iter()
    .find(|(name, _)| note.starts_with(name) || note.contains(&format!("{name} ")))
    .map(|(_, s)| s)
}

fn check_header(header: &Header, v: &Vector, body: Option<&[u8]>) {
    if let Some(expected) = stype_named(&v.note) {
        assert_eq!(header.stype, expected, "{}", v.note);
    }
    if let Some(text) = v.sml.as_deref() {
        let msg = sml::parse_message(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(header.stype, SType::Data, "{text}");
        assert_eq!(
            (header.stream(), header.function(), header.w_bit()),
            (msg.stream, msg.function, msg.w_bit),
            "{text}"
        );
        if let Some(body) = body {
            let decoded = Item::decode_body(body, &DecodeLimits::default()).unwrap();
            assert_eq!(decoded, msg.body, "{text}");
        }
    }
}

#[test]
fn hsms_frames_decode_to_their_fields_and_re_encode() {
    let all = load();
    for v in of_kind(&all, "hsms_frame") {
        let (header, body) =
            frame::split_frame(&v.bytes).unwrap_or_else(|e| panic!("{}: {e}", v.note));
        check_header(&header, v, Some(body));
        let mut again = Vec::new();
        if header.stype == SType::Data {
            let body = Item::decode_body(body, &DecodeLimits::default()).unwrap();
            let mut message = header.into_message(body);
            message.device_id = header.session_id; // keep the raw session ID for re-encoding
            frame::encode_message(&message, &mut again).unwrap();
        } else {
            frame::encode_control(&header, &mut again);
        }
        assert_eq!(again, v.bytes, "{}", v.note);
    }
}

#[test]
fn hsms_headers_decode_to_their_fields() {
    let all = load();
    for v in of_kind(&all, "hsms_header") {
        let bytes: [u8; 10] = v.bytes.as_slice().try_into().expect("10-byte header");
        let header = Header::from_bytes(&bytes);
        assert_eq!(header.to_bytes(), bytes);
        check_header(&header, v, None);
        if v.note.starts_with("decode-only") {
            // A session ID with its top bit set is device 1, S6F11 W.
            assert_eq!(header.device_id(), 1);
            assert_eq!(
                (header.stream(), header.function(), header.w_bit()),
                (6, 11, true)
            );
        }
        if v.note.contains("Reject.req") && v.note.contains("reason") {
            let reason = v
                .note
                .split("reason ")
                .nth(1)
                .and_then(|r| r[..1].parse::<u8>().ok());
            assert_eq!(Some(header.byte3), reason, "{}", v.note);
        }
    }
}

#[test]
fn invalid_bytes_are_rejected() {
    let all = load();
    for v in of_kind(&all, "secs2_decode_invalid") {
        let err = Item::decode(&v.bytes, &DecodeLimits::default());
        assert!(err.is_err(), "{} decoded: {:?}", v.note, err);
    }
}

#[test]
fn decode_only_bytes_decode() {
    let all = load();
    for v in of_kind(&all, "secs2_decode_only") {
        let decoded = Item::decode(&v.bytes, &DecodeLimits::default()).unwrap();
        assert_eq!(decoded, sml_item(v.sml.as_deref().unwrap()), "{}", v.note);
    }
}
