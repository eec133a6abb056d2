//! The simulator config parser on arbitrary text: errors with file, line and key, never a
//! panic. A config that parses also drives an equipment model through a short session (online,
//! status and constant requests, timers), which must not panic either.
#![no_main]

use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use secsgate::gem::spool::MemorySpool;
use secsgate::gem::{Equipment, MemoryPrograms};
use secsgate::secs2::{Item, Message, StreamFunction};
use secsgate::sim::SimConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = SimConfig::parse(text, "fuzz.toml", None) else {
        return;
    };
    let _ = (config.device_id(), config.run_names());
    let mut now = Instant::now();
    let mut eq = Equipment::new(
        config.model,
        Box::new(MemorySpool::default()),
        Box::new(MemoryPrograms::default()),
        now,
        SystemTime::now(),
    );
    eq.link_up(now);
    let requests = [
        (1, 13),
        (1, 1),
        (1, 3),
        (1, 11),
        (2, 13),
        (2, 29),
        (1, 21),
        (1, 23),
        (5, 5),
    ];
    for (i, (stream, function)) in requests.into_iter().enumerate() {
        let body = (function != 13 && function != 1).then(|| Item::L(vec![]));
        let message = Message {
            system_bytes: 100 + i as u32,
            ..Message::new(StreamFunction { stream, function }, true, body)
        };
        eq.receive(message, now);
        while eq.poll_action().is_some() {}
        now += Duration::from_millis(700);
        eq.handle_timeout(now);
        while eq.poll_action().is_some() {}
    }
});
