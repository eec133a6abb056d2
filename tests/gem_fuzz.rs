//! Whatever body a host sends with any message of the GEM tool table, the equipment answers
//! (a reply, SxF0 or S9Fx) and never panics.

mod gem_common;

use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use secsgate::gem::spool::MemorySpool;
use secsgate::gem::{Action, Equipment, MemoryPrograms, Outcome};
use secsgate::secs2::{Item, Message, StreamFunction};
use secsgate::sim::SimConfig;

fn leaf() -> impl Strategy<Value = Item> {
    let n = 0..4usize;
    prop_oneof![
        prop::collection::vec(any::<u8>(), n.clone()).prop_map(Item::B),
        prop::collection::vec(any::<u8>(), n.clone()).prop_map(Item::Boolean),
        prop::collection::vec(b'0'..=b'z', 0..18).prop_map(Item::A),
        prop::collection::vec(any::<i8>(), n.clone()).prop_map(Item::I1),
        prop::collection::vec(any::<i64>(), n.clone()).prop_map(Item::I8),
        prop::collection::vec(0u8..40, n.clone()).prop_map(Item::U1),
        prop::collection::vec(0u32..3000, n.clone()).prop_map(Item::U4),
        prop::collection::vec(any::<u64>(), n.clone()).prop_map(Item::U8),
        prop::collection::vec(any::<f32>(), n.clone()).prop_map(Item::F4),
        prop::collection::vec(any::<f64>(), n).prop_map(Item::F8),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    leaf().prop_recursive(5, 48, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(Item::L)
    })
}

const REQUESTS: &[(u8, u8)] = &[
    (1, 1),
    (1, 3),
    (1, 11),
    (1, 13),
    (1, 15),
    (1, 17),
    (1, 21),
    (1, 23),
    (2, 13),
    (2, 15),
    (2, 17),
    (2, 23),
    (2, 25),
    (2, 29),
    (2, 31),
    (2, 33),
    (2, 35),
    (2, 37),
    (2, 41),
    (2, 43),
    (2, 45),
    (2, 47),
    (2, 49),
    (5, 3),
    (5, 5),
    (5, 7),
    (6, 15),
    (6, 17),
    (6, 19),
    (6, 21),
    (6, 23),
    (7, 1),
    (7, 3),
    (7, 5),
    (7, 17),
    (7, 19),
    (10, 3),
    (42, 1),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn any_body_is_answered_without_panic(
        requests in prop::collection::vec((0..REQUESTS.len(), prop::option::of(item())), 1..12),
    ) {
        let config = SimConfig::parse(gem_common::TEST_CONFIG, "test.toml", None).unwrap();
        let mut now = Instant::now();
        let mut eq = Equipment::new(
            config.model,
            Box::new(MemorySpool::default()),
            Box::new(MemoryPrograms::default()),
            now,
            SystemTime::now(),
        );
        eq.link_up(now);
        eq.receive(Message::new(StreamFunction { stream: 1, function: 13 }, true, None), now);
        while eq.poll_action().is_some() {}
        let mut pending = Vec::new();
        for (i, (index, body)) in requests.into_iter().enumerate() {
            let (stream, function) = REQUESTS[index];
            let system_bytes = 1000 + i as u32;
            let message = Message {
                system_bytes,
                ..Message::new(StreamFunction { stream, function }, true, body)
            };
            eq.receive(message, now);
            let mut answered = false;
            while let Some(action) = eq.poll_action() {
                if let Action::Send { message: m, tag } = action {
                    answered |= (m.system_bytes == system_bytes && !m.w_bit) || m.stream == 9;
                    if let Some(tag) = tag {
                        pending.push((tag, m));
                    }
                }
            }
            // A reply (SxF0 while OFF-LINE) or a stream 9 error, every time.
            prop_assert!(answered, "S{}F{} unanswered", stream, function);
            for (tag, m) in pending.drain(..) {
                let reply = m.reply_with(Some(Item::L(vec![Item::B(vec![0]), Item::L(vec![])])));
                eq.outcome(tag, Outcome::Reply(reply), now);
            }
            now += Duration::from_millis(30);
            eq.handle_timeout(now);
            while eq.poll_action().is_some() {}
        }
    }
}
