//! The SECS-I block codec and protocol state machine (`secsgate::secs1`) driven
//! deterministically: no ports, no threads, no sleeps. Time is a fixed `t0` plus durations.
//! Byte-level tests script one side of the line by hand; pair tests connect a host and an
//! equipment protocol and pass bytes both ways until the line is quiet.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use secsgate::secs1::block::{
    self, ACK, Block, BlockError, ENQ, EOT, HEADER_LEN, Header, MAX_DATA, NAK,
};
use secsgate::secs1::protocol::{
    Config, Event, LineState, Protocol, SendError, TransactionFailure,
};
use secsgate::secs2::{DecodeLimits, Item, Message, StreamFunction};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const DEVICE: u16 = 10;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn sf(stream: u8, function: u8) -> StreamFunction {
    StreamFunction::new(stream, function).unwrap()
}

fn msg(stream: u8, function: u8, w_bit: bool, body: Option<Item>) -> Message {
    Message::new(sf(stream, function), w_bit, body)
}

fn host() -> Protocol {
    Protocol::new(Config::host(DEVICE))
}

fn equipment() -> Protocol {
    Protocol::new(Config::equipment(DEVICE))
}

/// Everything the protocol wants to transmit.
fn tx<T>(p: &mut Protocol<T>) -> Vec<u8> {
    let mut out = Vec::new();
    let any = p.take_transmit(&mut out);
    assert_eq!(any, !out.is_empty());
    out
}

fn events<T>(p: &mut Protocol<T>) -> Vec<Event<T>> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

fn warnings<T>(events: &[Event<T>]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Warning(w) => Some(w.as_str()),
            _ => None,
        })
        .collect()
}

fn no_warnings<T>(events: Vec<Event<T>>) -> Vec<Event<T>> {
    events
        .into_iter()
        .filter(|e| !matches!(e, Event::Warning(_)))
        .collect()
}

fn header(r_bit: bool, w_bit: bool, stream: u8, function: u8, system_bytes: u32) -> Header {
    Header {
        r_bit,
        device_id: DEVICE,
        w_bit,
        stream,
        function,
        e_bit: true,
        block_number: 1,
        system_bytes,
    }
}

fn frame(header: Header, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Block {
        header,
        data: data.to_vec(),
    }
    .encode(&mut out);
    out
}

/// The frames of a message as the peer with `r_bit` would send them.
fn frames(header: Header, body: Option<&Item>) -> Vec<Vec<u8>> {
    let bytes = body.map(|b| b.encode().unwrap()).unwrap_or_default();
    block::split(header, &bytes)
        .into_iter()
        .map(|b| {
            let mut out = Vec::new();
            b.encode(&mut out);
            out
        })
        .collect()
}

/// Delivers one block to a receiver the way a sender would: ENQ, then (after EOT) the
/// frame. Asserts the EOT and returns what the receiver sent after the frame.
fn deliver<T>(p: &mut Protocol<T>, frame: &[u8], now: Instant) -> Vec<u8> {
    p.handle_input(&[ENQ], now);
    assert_eq!(tx(p), [EOT], "ENQ answered with EOT");
    p.handle_input(frame, now);
    tx(p)
}

/// Sends one block from `p` (which must have just transmitted ENQ) and acknowledges it;
/// returns the decoded block.
fn take_block<T>(p: &mut Protocol<T>, now: Instant) -> Block {
    p.handle_input(&[EOT], now);
    let bytes = tx(p);
    let block = Block::decode(&bytes).expect("a whole block after EOT");
    p.handle_input(&[ACK], now);
    block
}

/// Two protocols joined by a perfect line. Bytes that both sides transmit in the same step
/// cross on the line (that is how contention happens).
struct Pair {
    host: Protocol,
    equipment: Protocol,
    now: Instant,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            host: host(),
            equipment: equipment(),
            now: Instant::now(),
        }
    }

    /// Passes bytes both ways until neither side has anything to send.
    fn run(&mut self) {
        for _ in 0..100_000_000u64 {
            let to_equipment = tx(&mut self.host);
            let to_host = tx(&mut self.equipment);
            if to_equipment.is_empty() && to_host.is_empty() {
                return;
            }
            self.equipment.handle_input(&to_equipment, self.now);
            self.host.handle_input(&to_host, self.now);
        }
        panic!("the line never went quiet");
    }
}

fn shared_vectors() -> Option<serde_json::Value> {
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
    Some(serde_json::from_str(&text).expect("vector file is JSON"))
}

/// A body of about `size` bytes shaped like an S6F11 event report.
fn big_report(size: usize) -> Item {
    let values = size / 20;
    Item::L(vec![
        Item::U4(vec![1]),
        Item::U4(vec![4001]),
        Item::L(
            (0..values)
                .map(|i| {
                    Item::L(vec![
                        Item::U4(vec![i as u32]),
                        Item::A(format!("V{:07}", i % 10_000_000).into_bytes()),
                    ])
                })
                .collect(),
        ),
    ])
}

// ---------------------------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------------------------

#[test]
fn block_vectors_decode_and_re_encode() {
    let all = shared_vectors().unwrap();
    let vectors: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"] == "secs1_block")
        .collect();
    assert!(vectors.len() >= 5, "secs1_block vectors present");
    for v in vectors {
        let bytes = secsgate::cli::from_hex(v["hex"].as_str().unwrap()).unwrap();
        let note = v["note"].as_str().unwrap_or("");
        let block = Block::decode(&bytes).unwrap_or_else(|e| panic!("{note}: {e}"));
        let mut again = Vec::new();
        block.encode(&mut again);
        assert_eq!(again, bytes, "{note}");
        assert_eq!(usize::from(bytes[0]), HEADER_LEN + block.data.len());
        let sum = u16::from_be_bytes([bytes[bytes.len() - 2], bytes[bytes.len() - 1]]);
        assert_eq!(block::checksum(&bytes[1..bytes.len() - 2]), sum, "{note}");
        if let Some(sml) = v["sml"].as_str()
            && let Some(head) = sml.split_whitespace().next()
        {
            let expected: StreamFunction = head.parse().unwrap();
            assert_eq!(block.header.stream_function(), expected, "{note}");
            assert_eq!(block.header.w_bit, sml.contains(" W"), "{note}");
        }
    }
    // The J8 block with the bad checksum from the same test file.
    let bad = secsgate::cli::from_hex("0c800b81020002000a00010100011d").unwrap();
    assert_eq!(
        Block::decode(&bad),
        Err(BlockError::Checksum {
            expected: 0x011D,
            got: 0x011C
        })
    );
    // The go-secs block: every field.
    let go =
        Block::decode(&secsgate::cli::from_hex("0c923486118203aabbccdd41420573").unwrap()).unwrap();
    assert_eq!(
        go.header,
        Header {
            r_bit: true,
            device_id: 0x1234,
            w_bit: true,
            stream: 6,
            function: 0x11,
            e_bit: true,
            block_number: 0x0203,
            system_bytes: 0xAABB_CCDD,
        }
    );
    assert_eq!(go.data, b"AB");
}

#[test]
fn multi_block_vector_reassembles_to_an_empty_list() {
    // J8: S1F2 <L[0]> sent one body byte per block, R=1 device 10.
    let mut p = host();
    let now = Instant::now();
    for hex in [
        "0b800a0102000100000001010090",
        "0b800a0102800200000001000110",
    ] {
        let frame = secsgate::cli::from_hex(hex).unwrap();
        assert_eq!(deliver(&mut p, &frame, now), [ACK]);
    }
    let mut expected = msg(1, 2, false, Some(Item::L(vec![])));
    expected.device_id = DEVICE;
    expected.system_bytes = 1;
    assert_eq!(no_warnings(events(&mut p)), [Event::Received(expected)]);
}

#[test]
fn a_314_byte_body_splits_into_244_and_70() {
    let body = Item::L(vec![
        Item::A(b"RECIPE".to_vec()),
        Item::B((0..301).map(|i| i as u8).collect()),
    ]);
    let bytes = body.encode().unwrap();
    assert_eq!(bytes.len(), 314);
    let h = header(false, true, 7, 3, 0x0000_0001);
    let blocks = block::split(h, &bytes);
    assert_eq!(
        blocks.iter().map(|b| b.data.len()).collect::<Vec<_>>(),
        [MAX_DATA, 70]
    );
    assert_eq!(blocks[0].header.block_number, 1);
    assert!(!blocks[0].header.e_bit);
    assert_eq!(blocks[1].header.block_number, 2);
    assert!(blocks[1].header.e_bit);
    let joined: Vec<u8> = blocks.iter().flat_map(|b| b.data.clone()).collect();
    assert_eq!(joined, bytes);

    // The protocol sends the same two blocks.
    let now = Instant::now();
    let mut p = host();
    p.send(msg(7, 3, true, Some(body)), now).unwrap();
    assert_eq!(tx(&mut p), [ENQ]);
    let first = take_block(&mut p, now);
    assert_eq!(tx(&mut p), [ENQ], "each block takes its own bid");
    let second = take_block(&mut p, now);
    assert_eq!(vec![first, second], blocks);
}

// ---------------------------------------------------------------------------------------------
// Sending and receiving single blocks
// ---------------------------------------------------------------------------------------------

#[test]
fn single_block_send_byte_by_byte() {
    let now = Instant::now();
    let mut p = host();
    let sb = p.send(msg(1, 1, true, None), now).unwrap();
    assert_eq!(sb, 1, "host system bytes: source 0, counter from 1");
    assert_eq!(p.queued_messages(), 1);
    assert_eq!(p.open_transactions(), 1);
    assert_eq!(tx(&mut p), [ENQ]);
    assert_eq!(p.line_state(), LineState::WaitingEot);
    assert_eq!(p.poll_timeout(), Some(now + secs(10)), "T2 for the EOT");
    p.handle_input(&[EOT], now + ms(5));
    // J8's vector: S1F1 W, device 10, system bytes 1, checksum 0x010E.
    assert_eq!(
        tx(&mut p),
        secsgate::cli::from_hex("0a000a8101800100000001010e").unwrap()
    );
    assert_eq!(p.line_state(), LineState::WaitingAck);
    assert_eq!(p.poll_timeout(), Some(now + ms(5) + secs(10)), "T2 for ACK");
    p.handle_input(&[ACK], now + ms(10));
    assert_eq!(p.line_state(), LineState::Idle);
    assert_eq!(p.queued_messages(), 0);
    assert_eq!(
        p.poll_timeout(),
        Some(now + ms(10) + secs(45)),
        "T3 from the ACK of the last block"
    );
    assert!(events(&mut p).is_empty());

    // The reply.
    let reply = frames(
        header(true, false, 1, 2, sb),
        Some(&Item::L(vec![Item::A(b"MDLN".to_vec())])),
    );
    assert_eq!(deliver(&mut p, &reply[0], now + ms(20)), [ACK]);
    match events(&mut p).as_slice() {
        [Event::Reply(m, ())] => {
            assert_eq!(m.stream_function(), sf(1, 2));
            assert_eq!(m.system_bytes, sb);
            assert_eq!(m.device_id, DEVICE);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.open_transactions(), 0);
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn equipment_system_bytes_carry_its_device_id() {
    let now = Instant::now();
    let mut p = equipment();
    assert_eq!(
        p.send(msg(1, 1, true, None), now).unwrap(),
        u32::from(DEVICE) << 16 | 1
    );
    assert_eq!(
        p.send(msg(6, 11, true, None), now).unwrap(),
        u32::from(DEVICE) << 16 | 2
    );
    // A secondary keeps its system bytes.
    let mut reply = msg(1, 14, false, None);
    reply.system_bytes = 0x0000_0077;
    assert_eq!(p.send(reply, now).unwrap(), 0x77);
    assert_eq!(p.queued_messages(), 3);
    assert_eq!(tx(&mut p), [ENQ]);
    let block = take_block(&mut p, now);
    assert!(block.header.r_bit, "equipment sends R-bit 1");
    assert_eq!(block.header.device_id, DEVICE);
}

#[test]
fn pair_single_block_transaction() {
    let mut pair = Pair::new();
    let sb = pair
        .host
        .send(msg(1, 1, true, None), pair.now)
        .expect("queued");
    pair.run();
    let primary = match no_warnings(events(&mut pair.equipment)).as_slice() {
        [Event::Received(m)] => m.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!((primary.stream_function(), primary.w_bit), (sf(1, 1), true));
    assert_eq!(primary.system_bytes, sb);
    let body = Some(Item::L(vec![
        Item::A(b"MDLN".to_vec()),
        Item::A(b"1.0".to_vec()),
    ]));
    pair.equipment
        .send(primary.reply_with(body.clone()), pair.now)
        .unwrap();
    pair.run();
    match events(&mut pair.host).as_slice() {
        [Event::Reply(m, ())] => assert_eq!((m.stream_function(), &m.body), (sf(1, 2), &body)),
        other => panic!("{other:?}"),
    }
    assert_eq!(pair.host.open_transactions(), 0);
}

// ---------------------------------------------------------------------------------------------
// Multi-block messages
// ---------------------------------------------------------------------------------------------

#[test]
fn a_megabyte_both_ways() {
    let mut pair = Pair::new();
    let report = big_report(1_200_000);
    let size = report.encode().unwrap().len();
    assert!(size > 1_000_000, "{size}");
    let sb = pair
        .equipment
        .send(msg(6, 11, true, Some(report.clone())), pair.now)
        .unwrap();
    pair.run();
    let received = match no_warnings(events(&mut pair.host)).as_slice() {
        [Event::Received(m)] => m.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(received.system_bytes, sb);
    assert_eq!(received.body.as_ref(), Some(&report));
    // The host answers with a megabyte too (an unusual S6F12, but the line does not care).
    pair.host
        .send(received.reply_with(Some(report.clone())), pair.now)
        .unwrap();
    pair.run();
    match no_warnings(events(&mut pair.equipment)).as_slice() {
        [Event::Reply(m, ())] => assert_eq!(m.body.as_ref(), Some(&report)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn interleaved_multi_block_messages_reassemble_separately() {
    let now = Instant::now();
    let mut p = host();
    let a = frames(header(true, false, 6, 11, 1), Some(&Item::B(vec![1; 400])));
    let b = frames(header(true, false, 6, 11, 2), Some(&Item::B(vec![2; 400])));
    for f in [&a[0], &b[0], &a[1], &b[1]] {
        assert_eq!(deliver(&mut p, f, now), [ACK]);
    }
    let got: Vec<u32> = no_warnings(events(&mut p))
        .into_iter()
        .map(|e| match e {
            Event::Received(m) => m.system_bytes,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got, [1, 2]);
}

#[test]
fn out_of_order_block_discards_the_partial_message() {
    let now = Instant::now();
    let mut p = host();
    let f = frames(header(true, false, 6, 11, 1), Some(&Item::B(vec![1; 800])));
    assert_eq!(f.len(), 4);
    assert_eq!(deliver(&mut p, &f[0], now), [ACK]);
    assert_eq!(deliver(&mut p, &f[2], now), [ACK], "good at block level");
    let ev = events(&mut p);
    assert!(
        warnings(&ev)
            .iter()
            .any(|w| w.contains("block 3") && w.contains("block 2 was due")),
        "{ev:?}"
    );
    // The rest of that message belongs to nothing now.
    assert_eq!(deliver(&mut p, &f[3], now), [ACK]);
    let ev = events(&mut p);
    assert!(no_warnings(ev.clone()).is_empty(), "{ev:?}");
    assert_eq!(warnings(&ev).len(), 1);
    assert_eq!(p.poll_timeout(), None, "no partial message left");
}

#[test]
fn t4_discards_a_partial_message() {
    let now = Instant::now();
    let mut p = host();
    let f = frames(header(true, false, 6, 11, 5), Some(&Item::B(vec![1; 300])));
    assert_eq!(deliver(&mut p, &f[0], now), [ACK]);
    assert_eq!(p.poll_timeout(), Some(now + secs(45)), "T4");
    p.handle_timeout(now + secs(44));
    assert!(events(&mut p).is_empty());
    p.handle_timeout(now + secs(45));
    let mut first = [0; HEADER_LEN];
    first.copy_from_slice(&f[0][1..1 + HEADER_LEN]);
    assert_eq!(
        events(&mut p),
        [Event::InterBlockTimeout {
            header: first,
            stream_function: sf(6, 11),
            system_bytes: 5
        }]
    );
    assert_eq!(p.poll_timeout(), None);
    // The last block alone is now out of order.
    assert_eq!(deliver(&mut p, &f[1], now + secs(46)), [ACK]);
    assert!(no_warnings(events(&mut p)).is_empty());
}

#[test]
fn multi_block_reply_stops_t3_and_t4_takes_over() {
    let now = Instant::now();
    let mut p = host();
    let sb = p.send(msg(6, 5, true, None), now).unwrap();
    assert_eq!(tx(&mut p), [ENQ]);
    take_block(&mut p, now);
    assert_eq!(p.poll_timeout(), Some(now + secs(45)));
    let f = frames(header(true, false, 6, 6, sb), Some(&Item::B(vec![1; 300])));
    let later = now + secs(40);
    assert_eq!(deliver(&mut p, &f[0], later), [ACK]);
    assert_eq!(p.poll_timeout(), Some(later + secs(45)), "T4, not T3");
    p.handle_timeout(now + secs(46));
    assert!(events(&mut p).is_empty(), "T3 stopped");
    p.handle_timeout(later + secs(45));
    let ev = events(&mut p);
    assert!(matches!(ev[0], Event::InterBlockTimeout { system_bytes, .. } if system_bytes == sb));
    assert!(matches!(ev[1], Event::ReplyTimeout { system_bytes, .. } if system_bytes == sb));
    assert_eq!(p.open_transactions(), 0);
}

#[test]
fn oversized_message_is_discarded() {
    let now = Instant::now();
    let mut config = Config::host(DEVICE);
    config.max_message_size = 500;
    let mut p = Protocol::new(config);
    let f = frames(header(true, false, 6, 11, 1), Some(&Item::B(vec![1; 800])));
    for frame in &f {
        assert_eq!(deliver(&mut p, frame, now), [ACK]);
    }
    let ev = events(&mut p);
    assert_eq!(warnings(&ev).len(), 1, "{ev:?}");
    assert!(warnings(&ev)[0].contains("over the limit of 500"));
    assert!(no_warnings(ev).is_empty());
    assert_eq!(p.poll_timeout(), None);
    // Sending is limited too.
    assert_eq!(
        p.send(msg(6, 11, false, Some(Item::B(vec![0; 600]))), now),
        Err(SendError::TooLarge {
            length: 603,
            max: 500
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Contention
// ---------------------------------------------------------------------------------------------

#[test]
fn contention_master_keeps_waiting_for_eot() {
    let now = Instant::now();
    let mut p = equipment();
    p.send(msg(6, 11, true, None), now).unwrap();
    assert_eq!(tx(&mut p), [ENQ]);
    p.handle_input(&[ENQ], now); // the host's bid crossed ours
    assert!(tx(&mut p).is_empty(), "the master ignores it");
    assert_eq!(p.line_state(), LineState::WaitingEot);
    assert!(events(&mut p).is_empty());
    let block = take_block(&mut p, now);
    assert_eq!(block.header.stream_function(), sf(6, 11));
    // Then the host bids again and the equipment receives.
    let f = frames(header(false, true, 1, 1, 1), None);
    assert_eq!(deliver(&mut p, &f[0], now), [ACK]);
    assert!(matches!(events(&mut p).as_slice(), [Event::Received(_)]));
}

#[test]
fn contention_slave_yields_receives_then_bids_again() {
    let now = Instant::now();
    let mut p = host();
    p.send(msg(1, 1, true, None), now).unwrap();
    assert_eq!(tx(&mut p), [ENQ]);
    p.handle_input(&[ENQ], now); // the equipment's bid crossed ours
    assert_eq!(tx(&mut p), [EOT], "the slave yields");
    assert_eq!(p.line_state(), LineState::WaitingLength);
    let f = frames(header(true, true, 6, 11, 0x000A_0001), None);
    p.handle_input(&f[0], now);
    assert_eq!(tx(&mut p), [ACK, ENQ], "ACK, then its own bid from ENQ");
    assert!(matches!(events(&mut p).as_slice(), [Event::Received(m)] if m.stream == 6));
    let block = take_block(&mut p, now);
    assert_eq!(block.header.stream_function(), sf(1, 1));
    assert!(events(&mut p).is_empty(), "the yield counted no retry");
}

#[test]
fn contention_in_a_pair() {
    let mut pair = Pair::new();
    pair.host.send(msg(1, 1, true, None), pair.now).unwrap();
    pair.equipment
        .send(msg(6, 11, true, Some(Item::B(vec![3; 1000]))), pair.now)
        .unwrap();
    pair.run();
    let h = no_warnings(events(&mut pair.host));
    let e = no_warnings(events(&mut pair.equipment));
    assert!(
        matches!(h.as_slice(), [Event::Received(m)] if m.stream == 6),
        "{h:?}"
    );
    assert!(
        matches!(e.as_slice(), [Event::Received(m)] if m.stream == 1),
        "{e:?}"
    );
}

#[test]
fn two_slaves_fail_the_send_instead_of_looping() {
    // A misconfigured peer that also yields (both ends slave): each bid ends in a yield and a
    // failed reception, which counts as a retry, so the sends fail after RTY.
    let mut pair = Pair::new();
    pair.equipment = Protocol::new(Config {
        master: false,
        ..Config::equipment(DEVICE)
    });
    pair.host.send(msg(1, 1, true, None), pair.now).unwrap();
    pair.equipment
        .send(msg(6, 11, true, None), pair.now)
        .unwrap();
    let mut host_events = Vec::new();
    for _ in 0..100 {
        pair.run();
        host_events.extend(events(&mut pair.host));
        events(&mut pair.equipment);
        if pair.host.queued_messages() == 0 {
            break;
        }
        let next = [pair.host.poll_timeout(), pair.equipment.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .expect("a timer runs");
        pair.now = next;
        pair.host.handle_timeout(next);
        pair.equipment.handle_timeout(next);
    }
    assert!(
        no_warnings(host_events.clone())
            .iter()
            .any(|e| matches!(e, Event::SendFailed { error, .. } if error.contains("slave"))),
        "{host_events:?}"
    );
    assert_eq!(pair.host.open_transactions(), 0);
}

// ---------------------------------------------------------------------------------------------
// Faults and retries
// ---------------------------------------------------------------------------------------------

#[test]
fn t2_waiting_for_eot_retries_to_the_limit_then_fails() {
    let now = Instant::now();
    let mut p = Protocol::<&str>::with_context(Config::host(DEVICE));
    let sb = p.send_with(msg(1, 3, true, None), "ctx", now).unwrap();
    p.send_with(msg(1, 5, false, None), "unused", now).unwrap();
    assert_eq!(tx(&mut p), [ENQ]);
    let mut t = now;
    for retry in 1..=3 {
        t += secs(10);
        assert_eq!(p.poll_timeout(), Some(t));
        p.handle_timeout(t);
        assert_eq!(tx(&mut p), [ENQ], "retry {retry} from ENQ");
        let ev = events(&mut p);
        assert_eq!(warnings(&ev).len(), 1);
        assert!(warnings(&ev)[0].contains(&format!("retry {retry} of 3")));
    }
    t += secs(10);
    p.handle_timeout(t);
    let ev = no_warnings(events(&mut p));
    assert!(
        matches!(&ev[0], Event::SendFailed { system_bytes, stream_function, error }
            if *system_bytes == sb && *stream_function == sf(1, 3) && error.contains("T2")),
        "{ev:?}"
    );
    assert!(
        matches!(&ev[1], Event::TransactionFailed { system_bytes, reason: TransactionFailure::SendFailed(_), context: "ctx", .. }
            if *system_bytes == sb),
        "{ev:?}"
    );
    assert_eq!(ev.len(), 2);
    assert_eq!(p.open_transactions(), 0);
    // The next message starts with a fresh retry count.
    assert_eq!(tx(&mut p), [ENQ]);
    assert_eq!(p.queued_messages(), 1);
    let block = take_block(&mut p, t);
    assert_eq!(block.header.stream_function(), sf(1, 5));
    assert_eq!(p.queued_messages(), 0);
}

#[test]
fn nak_and_t2_waiting_for_ack_retry() {
    let now = Instant::now();
    let mut p = host();
    p.send(msg(1, 1, true, None), now).unwrap();
    assert_eq!(tx(&mut p), [ENQ]);
    p.handle_input(&[EOT], now);
    let block = tx(&mut p);
    p.handle_input(&[NAK], now);
    assert_eq!(tx(&mut p), [ENQ]);
    assert!(warnings(&events(&mut p))[0].contains("NAK"));
    p.handle_input(&[EOT], now);
    assert_eq!(tx(&mut p), block, "the same block again");
    p.handle_timeout(now + secs(10));
    assert_eq!(tx(&mut p), [ENQ]);
    assert!(warnings(&events(&mut p))[0].contains("retry 2 of 3"));
    take_block(&mut p, now + secs(10));
    assert!(events(&mut p).is_empty());
    assert_eq!(p.queued_messages(), 0);
}

#[test]
fn retry_limit_zero_fails_at_the_first_fault() {
    let now = Instant::now();
    let mut config = Config::host(DEVICE);
    config.retry = 0;
    let mut p = Protocol::new(config);
    p.send(msg(1, 1, false, None), now).unwrap();
    assert_eq!(tx(&mut p), [ENQ]);
    p.handle_input(&[EOT], now);
    tx(&mut p);
    p.handle_input(&[0x99], now); // anything but ACK
    let ev = events(&mut p);
    assert!(
        matches!(ev.as_slice(), [Event::SendFailed { .. }]),
        "{ev:?}"
    );
    assert!(tx(&mut p).is_empty());
}

#[test]
fn bad_checksum_is_naked_after_t1_of_silence_then_the_retry_is_accepted() {
    let now = Instant::now();
    let mut p = equipment();
    let good = frames(header(false, true, 1, 1, 1), None).remove(0);
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 0xFF;
    assert!(deliver(&mut p, &bad, now).is_empty(), "no ACK");
    assert_eq!(p.line_state(), LineState::Discarding);
    assert_eq!(p.poll_timeout(), Some(now + ms(500)), "T1 of silence");
    p.handle_input(&[0x00, 0x01], now + ms(300)); // more garbage restarts the wait
    assert_eq!(p.poll_timeout(), Some(now + ms(800)));
    p.handle_timeout(now + ms(800));
    assert_eq!(tx(&mut p), [NAK]);
    assert!(warnings(&events(&mut p))[0].contains("checksum"));
    assert_eq!(deliver(&mut p, &good, now + secs(1)), [ACK]);
    assert!(matches!(events(&mut p).as_slice(), [Event::Received(_)]));
}

#[test]
fn pair_recovers_from_a_corrupted_block() {
    let mut pair = Pair::new();
    pair.host
        .send(msg(1, 1, true, Some(Item::A(b"hello".to_vec()))), pair.now)
        .unwrap();
    // ENQ, EOT by hand; then corrupt the block on the way.
    pair.equipment.handle_input(&tx(&mut pair.host), pair.now);
    pair.host.handle_input(&tx(&mut pair.equipment), pair.now);
    let mut block = tx(&mut pair.host);
    block[12] ^= 0x01;
    pair.equipment.handle_input(&block, pair.now);
    assert!(tx(&mut pair.equipment).is_empty());
    pair.now += ms(500);
    pair.equipment.handle_timeout(pair.now);
    pair.run(); // NAK, retry
    let e = events(&mut pair.equipment);
    assert!(
        matches!(no_warnings(e).as_slice(), [Event::Received(m)] if m.body == Some(Item::A(b"hello".to_vec())))
    );
    assert!(warnings(&events(&mut pair.host))[0].contains("NAK"));
}

#[test]
fn bad_length_byte_is_discarded_and_naked() {
    let now = Instant::now();
    let mut p = equipment();
    p.handle_input(&[ENQ], now);
    assert_eq!(tx(&mut p), [EOT]);
    p.handle_input(&[255, 1, 2, 3], now);
    assert_eq!(p.line_state(), LineState::Discarding);
    p.handle_timeout(now + ms(500));
    assert_eq!(tx(&mut p), [NAK]);
    assert!(warnings(&events(&mut p))[0].contains("255"));
}

#[test]
fn t1_expiry_mid_block_naks() {
    let now = Instant::now();
    let mut p = equipment();
    let f = frames(header(false, true, 1, 1, 1), None).remove(0);
    p.handle_input(&[ENQ], now);
    assert_eq!(tx(&mut p), [EOT]);
    p.handle_input(&f[..5], now + ms(100));
    assert_eq!(p.line_state(), LineState::Receiving);
    assert_eq!(p.poll_timeout(), Some(now + ms(600)));
    p.handle_input(&f[5..8], now + ms(400));
    assert_eq!(
        p.poll_timeout(),
        Some(now + ms(900)),
        "T1 restarts per character"
    );
    p.handle_timeout(now + ms(899));
    assert!(tx(&mut p).is_empty());
    p.handle_timeout(now + ms(900));
    assert_eq!(tx(&mut p), [NAK]);
    assert!(warnings(&events(&mut p))[0].contains("T1"));
    assert_eq!(p.line_state(), LineState::Idle);
    // The retried block is accepted.
    assert_eq!(deliver(&mut p, &f, now + secs(1)), [ACK]);
}

#[test]
fn t2_waiting_for_the_length_byte_naks() {
    let now = Instant::now();
    let mut p = host();
    p.handle_input(&[ENQ], now);
    assert_eq!(tx(&mut p), [EOT]);
    assert_eq!(p.poll_timeout(), Some(now + secs(10)));
    p.handle_timeout(now + secs(10));
    assert_eq!(tx(&mut p), [NAK]);
    assert_eq!(p.line_state(), LineState::Idle);
}

#[test]
fn lost_ack_makes_the_retried_block_a_duplicate() {
    let now = Instant::now();
    let mut sender = host();
    let mut receiver = equipment();
    sender
        .send(msg(7, 3, true, Some(Item::B(vec![9; 400]))), now)
        .unwrap();
    receiver.handle_input(&tx(&mut sender), now); // ENQ
    sender.handle_input(&tx(&mut receiver), now); // EOT
    receiver.handle_input(&tx(&mut sender), now); // block 1
    assert_eq!(tx(&mut receiver), [ACK], "…which the line loses");
    let t = now + secs(10);
    sender.handle_timeout(t);
    let mut pair = Pair {
        host: sender,
        equipment: receiver,
        now: t,
    };
    pair.run();
    let e = events(&mut pair.equipment);
    assert!(
        warnings(&e).iter().any(|w| w.contains("duplicate block 1")),
        "{e:?}"
    );
    assert!(
        matches!(no_warnings(e).as_slice(), [Event::Received(m)] if m.body == Some(Item::B(vec![9; 400])))
    );
}

#[test]
fn enq_instead_of_ack_takes_the_peers_block_then_retries() {
    // Our last block's ACK was lost and the peer already bids with its reply.
    let now = Instant::now();
    let mut p = host();
    let sb = p.send(msg(1, 1, true, None), now).unwrap();
    assert_eq!(tx(&mut p), [ENQ]);
    p.handle_input(&[EOT], now);
    tx(&mut p);
    p.handle_input(&[ENQ], now);
    assert_eq!(tx(&mut p), [EOT], "the peer's bid is answered");
    assert!(warnings(&events(&mut p))[0].contains("retry 1 of 3"));
    let reply = frames(header(true, false, 1, 2, sb), None).remove(0);
    p.handle_input(&reply, now);
    assert_eq!(tx(&mut p), [ACK, ENQ], "then our block again");
    assert!(matches!(events(&mut p).as_slice(), [Event::Reply(..)]));
    take_block(&mut p, now);
    assert_eq!(p.poll_timeout(), None, "no T3 for an answered transaction");
}

#[test]
fn single_block_numbered_zero_is_accepted() {
    let now = Instant::now();
    let mut p = equipment();
    let mut h = header(false, false, 1, 1, 1);
    h.block_number = 0;
    assert_eq!(deliver(&mut p, &frame(h, &[]), now), [ACK]);
    assert!(matches!(events(&mut p).as_slice(), [Event::Received(_)]));
}

#[test]
fn repeated_block_is_discarded_unless_detection_is_off() {
    let now = Instant::now();
    let f = frames(header(false, false, 5, 1, 7), None).remove(0);
    let mut p = equipment();
    assert_eq!(deliver(&mut p, &f, now), [ACK]);
    assert_eq!(deliver(&mut p, &f, now), [ACK]);
    let ev = events(&mut p);
    assert_eq!(warnings(&ev).len(), 1);
    assert_eq!(no_warnings(ev).len(), 1);

    let mut config = Config::equipment(DEVICE);
    config.duplicate_detection = false;
    let mut p = Protocol::new(config);
    assert_eq!(deliver(&mut p, &f, now), [ACK]);
    assert_eq!(deliver(&mut p, &f, now), [ACK]);
    assert_eq!(events(&mut p).len(), 2);
}

#[test]
fn wrong_r_bit_is_acked_and_dropped() {
    let now = Instant::now();
    let mut p = host();
    let f = frames(header(false, false, 1, 1, 1), None).remove(0); // host's own R-bit
    assert_eq!(deliver(&mut p, &f, now), [ACK]);
    let ev = events(&mut p);
    assert_eq!(ev.len(), 1);
    assert!(warnings(&ev)[0].contains("R-bit 0"));
}

#[test]
fn wrong_device_is_unknown_device() {
    let now = Instant::now();
    let mut p = equipment();
    let mut h = header(false, true, 1, 1, 1);
    h.device_id = 11;
    let f = frames(h, None).remove(0);
    assert_eq!(deliver(&mut p, &f, now), [ACK]);
    assert_eq!(
        events(&mut p),
        [Event::UnknownDevice { header: h.encode() }]
    );
}

#[test]
fn malformed_body_and_malformed_reply() {
    let now = Instant::now();
    let mut p = equipment();
    // <A> claims 5 bytes, carries 1.
    let h = header(false, true, 2, 41, 3);
    let f = frame(h, &[0x41, 0x05, b'x']);
    assert_eq!(deliver(&mut p, &f, now), [ACK]);
    match events(&mut p).as_slice() {
        [
            Event::Malformed {
                header,
                stream_function,
                w_bit: true,
                device_id: DEVICE,
                system_bytes: 3,
                ..
            },
        ] => {
            assert_eq!(*header, h.encode());
            assert_eq!(*stream_function, sf(2, 41));
        }
        other => panic!("{other:?}"),
    }
    // A malformed reply ends its transaction instead.
    let sb = p.send(msg(1, 1, true, None), now).unwrap();
    assert_eq!(tx(&mut p), [ENQ]);
    take_block(&mut p, now);
    let f = frame(header(false, false, 1, 2, sb), &[0x41, 0x05, b'x']);
    assert_eq!(deliver(&mut p, &f, now), [ACK]);
    assert!(matches!(
        events(&mut p).as_slice(),
        [Event::TransactionFailed {
            reason: TransactionFailure::Malformed(_),
            ..
        }]
    ));
    assert_eq!(p.open_transactions(), 0);
}

// ---------------------------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------------------------

#[test]
fn t3_reply_timeout() {
    let now = Instant::now();
    let mut p = Protocol::<u8>::with_context(Config::equipment(DEVICE));
    let a = p.send_with(msg(6, 11, true, None), 1, now).unwrap();
    assert_eq!(tx(&mut p), [ENQ]);
    assert_eq!(
        p.poll_timeout(),
        Some(now + secs(10)),
        "no T3 before it is sent"
    );
    take_block(&mut p, now + secs(1));
    let b = p
        .send_with(msg(5, 1, true, None), 2, now + secs(2))
        .unwrap();
    assert_eq!(tx(&mut p), [ENQ]);
    take_block(&mut p, now + secs(3));
    assert_eq!(p.poll_timeout(), Some(now + secs(46)));
    p.handle_timeout(now + secs(46));
    assert_eq!(
        events(&mut p),
        [Event::ReplyTimeout {
            system_bytes: a,
            stream_function: sf(6, 11),
            context: 1
        }]
    );
    assert_eq!(p.poll_timeout(), Some(now + secs(48)));
    assert_eq!(p.cancel_transaction(b), Some(2));
    assert_eq!(p.poll_timeout(), None);
    assert_eq!(p.cancel_transaction(b), None);
}

#[test]
fn stream_nine_naming_a_transaction_fails_it() {
    let now = Instant::now();
    let mut p = host();
    let sb = p.send(msg(2, 41, true, None), now).unwrap();
    assert_eq!(tx(&mut p), [ENQ]);
    let sent = take_block(&mut p, now);
    let mhead = Item::B(sent.header.encode().to_vec());
    let f = frames(header(true, false, 9, 7, 0x000A_0001), Some(&mhead));
    assert_eq!(deliver(&mut p, &f[0], now), [ACK]);
    let ev = events(&mut p);
    match ev.as_slice() {
        [
            Event::TransactionFailed {
                system_bytes,
                stream_function,
                reason: TransactionFailure::StreamNine(s9),
                context: (),
            },
            Event::Received(m),
        ] => {
            assert_eq!((*system_bytes, *stream_function), (sb, sf(2, 41)));
            assert_eq!(s9.stream_function(), sf(9, 7));
            assert_eq!(**s9, *m);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.open_transactions(), 0);
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn line_closed_fails_everything_open() {
    let now = Instant::now();
    let mut p = Protocol::<u8>::with_context(Config::host(DEVICE));
    let a = p.send_with(msg(1, 1, true, None), 1, now).unwrap();
    assert_eq!(tx(&mut p), [ENQ]);
    take_block(&mut p, now);
    let b = p.send_with(msg(1, 3, true, None), 2, now).unwrap();
    let c = p.send_with(msg(5, 1, false, None), 0, now).unwrap();
    // b is on the line (sent, waiting for its ACK) when the line closes.
    p.handle_input(&[EOT], now);
    tx(&mut p);
    let closed = events(&mut p);
    assert!(closed.is_empty());
    p.line_closed();
    assert!(tx(&mut p).is_empty());
    assert_eq!(p.line_state(), LineState::Idle);
    let ev = events(&mut p);
    let summary: Vec<(u32, &str)> = ev
        .iter()
        .map(|e| match e {
            Event::SendFailed { system_bytes, .. } => (*system_bytes, "send"),
            Event::TransactionFailed {
                system_bytes,
                reason: TransactionFailure::ConnectionClosed,
                ..
            } => (*system_bytes, "closed"),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [(b, "send"), (c, "send"), (a, "closed"), (b, "closed")]
    );
    assert_eq!(p.open_transactions(), 0);
    assert_eq!(p.queued_messages(), 0);
    assert_eq!(p.poll_timeout(), None);
    // The line works again afterwards.
    p.send_with(msg(1, 1, false, None), 0, now).unwrap();
    assert_eq!(tx(&mut p), [ENQ]);
}

// ---------------------------------------------------------------------------------------------
// Flow control and noise
// ---------------------------------------------------------------------------------------------

#[test]
fn hold_input_delays_eot() {
    let now = Instant::now();
    let mut p = host();
    p.hold_input(true, now);
    p.handle_input(&[ENQ], now);
    assert!(tx(&mut p).is_empty(), "not ready: no EOT");
    // Our own sends wait for the peer's bid.
    p.send(msg(1, 1, false, None), now).unwrap();
    assert!(tx(&mut p).is_empty());
    p.hold_input(false, now + secs(2));
    assert_eq!(tx(&mut p), [EOT], "answered when input resumes");
    let f = frames(header(true, false, 6, 11, 1), None).remove(0);
    p.handle_input(&f, now + secs(2));
    assert_eq!(tx(&mut p), [ACK, ENQ]);

    // An ENQ older than T2 is forgotten: the sender has retried or given up.
    let mut p = host();
    p.hold_input(true, now);
    p.handle_input(&[ENQ], now);
    p.send(msg(1, 1, false, None), now).unwrap();
    assert_eq!(p.poll_timeout(), Some(now + secs(10)));
    p.handle_timeout(now + secs(10));
    assert_eq!(tx(&mut p), [ENQ], "bids once the peer's ENQ has expired");
    p.handle_input(&[EOT], now + secs(10));
    assert!(!tx(&mut p).is_empty(), "sending works while input is held");
    // A new ENQ while held, then release after T2: no EOT.
    let mut p = host();
    p.hold_input(true, now);
    p.handle_input(&[ENQ], now);
    p.hold_input(false, now + secs(11));
    assert!(tx(&mut p).is_empty());
}

#[test]
fn noise_is_skipped_with_one_warning_per_run() {
    let now = Instant::now();
    let mut p = equipment();
    p.handle_input(&[0x00, 0xFF, ACK, NAK, EOT], now);
    assert!(tx(&mut p).is_empty());
    assert_eq!(warnings(&events(&mut p)).len(), 1);
    let f = frames(header(false, false, 1, 1, 1), None).remove(0);
    assert_eq!(deliver(&mut p, &f, now), [ACK]);
    assert!(matches!(events(&mut p).as_slice(), [Event::Received(_)]));
    p.handle_input(&[0x42, 0x43], now);
    assert_eq!(warnings(&events(&mut p)).len(), 1, "a new run warns again");
}

// ---------------------------------------------------------------------------------------------
// A busy pair
// ---------------------------------------------------------------------------------------------

/// Answers every received W primary; returns how many replies arrived.
fn answer_all(p: &mut Protocol, now: Instant) -> usize {
    let mut replies = 0;
    for e in events(p) {
        match e {
            Event::Received(m) if m.w_bit => {
                p.send(m.reply_with(m.body.clone()), now).unwrap();
            }
            Event::Reply(..) => replies += 1,
            Event::Warning(_) => {}
            other => panic!("{other:?}"),
        }
    }
    replies
}

#[test]
fn a_thousand_pipelined_transactions_each_way() {
    let mut pair = Pair::new();
    for i in 0..1000u32 {
        let body = Some(Item::U4(vec![i; (i % 150) as usize]));
        pair.host
            .send(msg(1, 3, true, body.clone()), pair.now)
            .unwrap();
        pair.equipment
            .send(msg(6, 11, true, body), pair.now)
            .unwrap();
    }
    let (mut host_replies, mut equipment_replies) = (0, 0);
    for _ in 0..10_000 {
        pair.run();
        host_replies += answer_all(&mut pair.host, pair.now);
        equipment_replies += answer_all(&mut pair.equipment, pair.now);
        if pair.host.queued_messages() == 0 && pair.equipment.queued_messages() == 0 {
            pair.run();
            host_replies += answer_all(&mut pair.host, pair.now);
            equipment_replies += answer_all(&mut pair.equipment, pair.now);
            break;
        }
    }
    assert_eq!((host_replies, equipment_replies), (1000, 1000));
    assert_eq!(pair.host.open_transactions(), 0);
    assert_eq!(pair.equipment.open_transactions(), 0);
    assert_eq!(pair.host.line_state(), LineState::Idle);
    assert_eq!(pair.equipment.line_state(), LineState::Idle);
}

// ---------------------------------------------------------------------------------------------
// Property: any message crosses a pair intact
// ---------------------------------------------------------------------------------------------

fn item() -> impl Strategy<Value = Item> {
    let leaf = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(Item::B),
        proptest::collection::vec(any::<u32>(), 0..100).prop_map(Item::U4),
        proptest::collection::vec(any::<i16>(), 0..100).prop_map(Item::I2),
        "[ -~]{0,300}".prop_map(|s| Item::A(s.into_bytes())),
        proptest::collection::vec(any::<u8>(), 0..10).prop_map(Item::Boolean),
    ];
    leaf.prop_recursive(3, 64, 8, |inner| {
        proptest::collection::vec(inner, 0..8).prop_map(Item::L)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_message_crosses_a_pair(
        body in proptest::option::of(item()),
        stream in 0u8..=127,
        function in 0u8..=255,
        w_bit: bool,
        from_equipment: bool,
    ) {
        let mut pair = Pair::new();
        let message = msg(stream, function, w_bit, body.clone());
        let sender = if from_equipment { &mut pair.equipment } else { &mut pair.host };
        let sb = sender.send(message, pair.now).unwrap();
        pair.run();
        let receiver = if from_equipment { &mut pair.host } else { &mut pair.equipment };
        let ev = events(receiver);
        prop_assert_eq!(ev.len(), 1, "{:?}", ev);
        match &ev[0] {
            Event::Received(m) => {
                prop_assert_eq!(&m.body, &body);
                prop_assert_eq!((m.stream, m.function, m.w_bit), (stream, function, w_bit));
                prop_assert_eq!(m.system_bytes, sb);
                prop_assert_eq!(m.device_id, DEVICE);
            }
            other => prop_assert!(false, "{:?}", other),
        }
        let limits = DecodeLimits::default();
        let encoded = body.as_ref().map(|b| b.encode().unwrap()).unwrap_or_default();
        prop_assert_eq!(Item::decode_body(&encoded, &limits).unwrap(), body);
    }
}
