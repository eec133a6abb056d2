//! The SDL loader on arbitrary text: errors and warnings, never a panic. What loads is asked
//! about every message it defines (check, annotate, CommonID) with a few bodies.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use secsgate::sdl::Sdl;
use secsgate::secs2::{Item, Message, StreamFunction};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((sdl, _warnings)) = Sdl::parse(Path::new("fuzz.sdl"), text) else {
        return;
    };
    let bodies = [
        None,
        Some(Item::L(vec![])),
        Some(Item::U4(vec![1])),
        Some(Item::L(vec![
            Item::U4(vec![1]),
            Item::L(vec![Item::ascii("x")]),
        ])),
    ];
    for stream in 0..4u8 {
        for function in 0..16u8 {
            let sf = StreamFunction { stream, function };
            let _ = (
                sdl.doc(sf),
                sdl.realtime(sf),
                sdl.block(sf),
                sdl.common_id(sf),
            );
            for body in &bodies {
                let message = Message::new(sf, function % 2 == 1, body.clone());
                let _ = sdl.check(&message, true);
                let _ = sdl.check(&message, false);
                let _ = sdl.common_id_value(&message);
                let mut value = secsgate::secs2::json::message_to_json(&message);
                sdl.annotate(&message, &mut value);
            }
        }
    }
});
