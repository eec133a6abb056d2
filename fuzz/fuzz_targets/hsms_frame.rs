//! HSMS framing on arbitrary bytes: splitting a frame never panics, a header reads back from
//! the bytes it writes, and a data frame whose body decodes re-encodes to a frame that splits
//! to the same header fields and body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secsgate::hsms::frame::{self, HEADER_LEN, Header, SType};
use secsgate::secs2::Item;
use secsgate::secs2::codec::DecodeLimits;

fuzz_target!(|data: &[u8]| {
    if let Some(raw) = data.first_chunk::<HEADER_LEN>() {
        let header = Header::from_bytes(raw);
        assert_eq!(&header.to_bytes(), raw, "header bytes changed");
    }
    let Ok((header, body)) = frame::split_frame(data) else {
        return;
    };
    if header.stype != SType::Data {
        if body.is_empty() {
            let mut out = Vec::new();
            frame::encode_control(&header, &mut out);
            assert_eq!(out, data, "control frame changed");
        }
        return;
    }
    let Ok(item) = Item::decode_body(body, &DecodeLimits::default()) else {
        return;
    };
    let message = header.into_message(item);
    let mut out = Vec::new();
    frame::encode_message(&message, &mut out).expect("a decoded message encodes");
    let (header2, body2) = frame::split_frame(&out).expect("our own frame splits");
    assert_eq!(header2.device_id(), header.device_id());
    assert_eq!(
        (
            header2.byte2,
            header2.byte3,
            header2.ptype,
            header2.stype,
            header2.system_bytes
        ),
        (
            header.byte2,
            header.byte3,
            0,
            SType::Data,
            header.system_bytes
        )
    );
    let back = Item::decode_body(body2, &DecodeLimits::default()).expect("our body decodes");
    let mut again = Vec::new();
    frame::encode_message(&header2.into_message(back), &mut again).unwrap();
    assert_eq!(again, out, "frame changed on a second round trip");
});
