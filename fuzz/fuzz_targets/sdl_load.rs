//! The SDL loader on arbitrary text: errors and warnings, never a panic. What loads is asked
//! about every message it defines (matching, check, annotate, CommonID) with a few bodies,
//! remote commands and event reports among them.
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
        // S2F41-shaped: RCMD and a CPNAME/CPVAL pair.
        Some(Item::L(vec![
            Item::ascii("START"),
            Item::L(vec![Item::L(vec![Item::ascii("P"), Item::U4(vec![1])])]),
        ])),
        // S6F11-shaped: DATAID, CEID, one report.
        Some(Item::L(vec![
            Item::U4(vec![1]),
            Item::U4(vec![100]),
            Item::L(vec![Item::L(vec![Item::U4(vec![9]), Item::L(vec![])])]),
        ])),
    ];
    let functions = (0..16u8).chain([41, 49]);
    for stream in 0..7u8 {
        for function in functions.clone() {
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
                for by_host in [true, false] {
                    if let Err(rejection) = sdl.matching(&message, by_host) {
                        let _ = (rejection.stream_nine(), rejection.reply_body());
                    }
                }
                let _ = sdl.common_id_value(&message);
                let mut value = secsgate::secs2::json::message_to_json(&message);
                sdl.annotate(&message, &mut value);
            }
        }
    }
});
