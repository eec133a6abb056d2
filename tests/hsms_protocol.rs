//! The HSMS-SS protocol state machine (`secsgate::hsms::protocol`) driven deterministically:
//! no sockets, no threads, no sleeps. Time is a fixed `t0` plus durations; incoming frames are
//! built with `hsms::frame`, outgoing bytes are split back into frames and checked byte by byte,
//! and every timer is checked through `poll_timeout` and fired with `handle_timeout`.

use std::time::{Duration, Instant};

use secsgate::hsms::frame::{
    self, CONTROL_SESSION, HEADER_LEN, Header, SType, encode_control, encode_message,
};
use secsgate::hsms::protocol::{
    CloseReason, Config, Event, Protocol, Role, SendError, State, TransactionFailure,
    deselect_status, reject_reason, select_status,
};
use secsgate::secs2::{DecodeLimits, Item, Message, StreamFunction};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// SEMI default timers, but no periodic linktest (tests that need it turn it on).
fn config() -> Config {
    Config {
        linktest: None,
        ..Config::default()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn sf(stream: u8, function: u8) -> StreamFunction {
    StreamFunction::new(stream, function).unwrap()
}

/// Splits a transmit buffer holding zero or more whole frames into (header, body) pairs.
fn split_frames(mut buf: &[u8]) -> Vec<(Header, Vec<u8>)> {
    let mut frames = Vec::new();
    while !buf.is_empty() {
        assert!(buf.len() >= 4, "trailing partial length field: {buf:02x?}");
        let length = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        assert!(
            buf.len() >= 4 + length,
            "frame declares {length} bytes but only {} follow",
            buf.len() - 4
        );
        let (one, rest) = buf.split_at(4 + length);
        let (header, body) = frame::split_frame(one).expect("well-formed frame");
        frames.push((header, body.to_vec()));
        buf = rest;
    }
    frames
}

/// Everything the protocol wants to transmit, as raw bytes.
fn transmit(p: &mut Protocol) -> Vec<u8> {
    let mut out = Vec::new();
    let any = p.take_transmit(&mut out);
    assert_eq!(any, !out.is_empty());
    out
}

/// Everything the protocol wants to transmit, split into frames.
fn sent(p: &mut Protocol) -> Vec<(Header, Vec<u8>)> {
    split_frames(&transmit(p))
}

/// Every queued event.
fn events(p: &mut Protocol) -> Vec<Event> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

/// Every queued event except warnings (which are log lines).
fn events_no_warnings(p: &mut Protocol) -> Vec<Event> {
    events(p)
        .into_iter()
        .filter(|e| !matches!(e, Event::Warning(_)))
        .collect()
}

/// The raw bytes of a control frame.
fn control_bytes(stype: SType, system_bytes: u32, byte2: u8, byte3: u8) -> Vec<u8> {
    let mut header = Header::control(stype, system_bytes);
    header.byte2 = byte2;
    header.byte3 = byte3;
    let mut buf = Vec::new();
    encode_control(&header, &mut buf);
    buf
}

fn control(stype: SType, system_bytes: u32) -> Vec<u8> {
    control_bytes(stype, system_bytes, 0, 0)
}

/// A frame with any header and body bytes (the length field is computed).
fn raw_frame(header: &Header, body: &[u8]) -> Vec<u8> {
    let mut buf = ((HEADER_LEN + body.len()) as u32).to_be_bytes().to_vec();
    buf.extend_from_slice(&header.to_bytes());
    buf.extend_from_slice(body);
    buf
}

fn data_bytes(message: &Message) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_message(message, &mut buf).unwrap();
    buf
}

/// A data message with device ID 7.
fn message(
    stream: u8,
    function: u8,
    w_bit: bool,
    system_bytes: u32,
    body: Option<Item>,
) -> Message {
    let mut m = Message::new(sf(stream, function), w_bit, body);
    m.device_id = 7;
    m.system_bytes = system_bytes;
    m
}

/// Asserts a control frame: session 0xFFFF, PType 0, the SType, system bytes, bytes 2 and 3,
/// and no body.
fn assert_control(
    frame: &(Header, Vec<u8>),
    stype: SType,
    system_bytes: u32,
    byte2: u8,
    byte3: u8,
) {
    let (header, body) = frame;
    assert_eq!(
        *header,
        Header {
            session_id: CONTROL_SESSION,
            byte2,
            byte3,
            ptype: 0,
            stype,
            system_bytes,
        },
        "control frame"
    );
    assert!(body.is_empty(), "control frame has a body: {body:02x?}");
}

/// Asserts a Reject.req for a message with these system bytes; returns nothing else sent.
fn assert_rejected(p: &mut Protocol, system_bytes: u32, byte2: u8, reason: u8) {
    let frames = sent(p);
    assert_eq!(frames.len(), 1, "exactly one frame (the Reject.req)");
    let (header, body) = &frames[0];
    assert_eq!(header.stype, SType::RejectReq);
    assert_eq!(header.ptype, 0);
    assert_eq!(header.byte2, byte2, "Reject.req byte 2");
    assert_eq!(header.byte3, reason, "Reject.req reason");
    assert_eq!(header.system_bytes, system_bytes, "Reject.req system bytes");
    assert!(body.is_empty());
    // A warning is logged, nothing else.
    let evs = events(p);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert!(matches!(evs[0], Event::Warning(_)), "{evs:?}");
}

/// A passive protocol, connected at `t0` and selected by the peer's Select.req (system bytes
/// 0x5E1E), with the transmit buffer and events drained.
fn passive_selected(config: Config, t0: Instant) -> Protocol {
    let mut p = Protocol::new(config, Role::Passive);
    p.connected(t0);
    p.handle_input(&control(SType::SelectReq, 0x5E1E), t0);
    assert_eq!(p.state(), State::Selected);
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    assert_control(&frames[0], SType::SelectRsp, 0x5E1E, 0, select_status::OK);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotSelected),
            Event::State(State::Selected)
        ]
    );
    p
}

/// An active protocol, connected at `t0`, selected by Select.rsp at `t0`; returns it and the
/// system bytes of its Select.req.
fn active_selected(config: Config, t0: Instant) -> (Protocol, u32) {
    let mut p = Protocol::new(config, Role::Active);
    p.connected(t0);
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    let sb = frames[0].0.system_bytes;
    p.handle_input(&control(SType::SelectRsp, sb), t0);
    assert_eq!(p.state(), State::Selected);
    assert!(sent(&mut p).is_empty());
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotSelected),
            Event::State(State::Selected)
        ]
    );
    (p, sb)
}

// ---------------------------------------------------------------------------------------------
// Select
// ---------------------------------------------------------------------------------------------

#[test]
fn active_connect_sends_select_req_and_arms_t6_then_t7() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = Protocol::new(cfg.clone(), Role::Active);
    assert_eq!(p.state(), State::NotConnected);
    assert_eq!(p.poll_timeout(), None);
    assert!(sent(&mut p).is_empty());

    p.connected(t0);
    assert_eq!(p.state(), State::NotSelected);
    assert_eq!(events(&mut p), [Event::State(State::NotSelected)]);

    let bytes = transmit(&mut p);
    assert_eq!(bytes.len(), 14);
    let sb = u32::from_be_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
    assert_ne!(sb, 0);
    let mut expected = vec![0, 0, 0, 10, 0xFF, 0xFF, 0, 0, 0, 1];
    expected.extend_from_slice(&sb.to_be_bytes());
    assert_eq!(bytes, expected, "Select.req on the wire");

    // T6 (5 s) runs for the Select.req and T7 (10 s) for NOT SELECTED; T6 is first.
    assert!(cfg.t6 < cfg.t7);
    assert_eq!(p.poll_timeout(), Some(t0 + cfg.t6));
    // Nothing is due before the deadline.
    p.handle_timeout(t0 + cfg.t6 - Duration::from_millis(1));
    assert_eq!(p.state(), State::NotSelected);
    assert!(events(&mut p).is_empty());
    assert!(sent(&mut p).is_empty());
}

#[test]
fn active_select_rsp_ok_selects_and_cancels_t6_t7() {
    let t0 = Instant::now();
    let mut p = Protocol::new(config(), Role::Active);
    p.connected(t0);
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    let sb = frames[0].0.system_bytes;
    assert_control(&frames[0], SType::SelectReq, sb, 0, 0);
    events(&mut p);

    let t1 = t0 + secs(1);
    p.handle_input(
        &control_bytes(SType::SelectRsp, sb, 0, select_status::OK),
        t1,
    );
    assert_eq!(p.state(), State::Selected);
    assert_eq!(events(&mut p), [Event::State(State::Selected)]);
    assert!(sent(&mut p).is_empty(), "Select.rsp is not answered");
    // T6 and T7 are cancelled; no linktest is configured: no timer at all.
    assert_eq!(p.poll_timeout(), None);
    p.handle_timeout(t0 + secs(3600));
    assert_eq!(p.state(), State::Selected);
    assert!(events(&mut p).is_empty());
}

#[test]
fn active_select_rsp_refused_closes() {
    for status in [
        select_status::ALREADY_ACTIVE,
        select_status::NOT_READY,
        select_status::EXHAUSTED,
        200,
    ] {
        let t0 = Instant::now();
        let mut p = Protocol::new(config(), Role::Active);
        p.connected(t0);
        let sb = sent(&mut p)[0].0.system_bytes;
        events(&mut p);
        p.handle_input(
            &control_bytes(SType::SelectRsp, sb, 0, status),
            t0 + secs(1),
        );
        assert_eq!(p.state(), State::NotConnected);
        assert_eq!(
            events(&mut p),
            [
                Event::State(State::NotConnected),
                Event::Closed(CloseReason::SelectRefused(status))
            ]
        );
        assert!(sent(&mut p).is_empty());
        assert_eq!(p.poll_timeout(), None);
    }
}

#[test]
fn active_t6_expiry_on_select_closes() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = Protocol::new(cfg.clone(), Role::Active);
    p.connected(t0);
    sent(&mut p);
    events(&mut p);
    let deadline = p.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + cfg.t6);
    p.handle_timeout(deadline);
    assert_eq!(p.state(), State::NotConnected);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::T6("Select.rsp"))
        ]
    );
    assert!(sent(&mut p).is_empty());
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn passive_select_req_answered_with_same_system_bytes_and_selected() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = Protocol::new(cfg.clone(), Role::Passive);
    p.connected(t0);
    assert_eq!(events(&mut p), [Event::State(State::NotSelected)]);
    assert!(
        sent(&mut p).is_empty(),
        "the passive side sends nothing on connect"
    );
    // Only T7 runs.
    assert_eq!(p.poll_timeout(), Some(t0 + cfg.t7));

    p.handle_input(&control(SType::SelectReq, 0x0102_0304), t0 + secs(2));
    assert_eq!(p.state(), State::Selected);
    assert_eq!(events(&mut p), [Event::State(State::Selected)]);
    assert_eq!(
        transmit(&mut p),
        [0, 0, 0, 10, 0xFF, 0xFF, 0, 0, 0, 2, 1, 2, 3, 4],
        "Select.rsp status 0 with the request's system bytes"
    );
    assert_eq!(p.poll_timeout(), None, "T7 is cancelled");
}

#[test]
fn passive_second_select_req_while_selected_gets_status_1() {
    let t0 = Instant::now();
    let mut p = passive_selected(config(), t0);
    p.handle_input(&control(SType::SelectReq, 0x77), t0 + secs(1));
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    assert_control(
        &frames[0],
        SType::SelectRsp,
        0x77,
        0,
        select_status::ALREADY_ACTIVE,
    );
    assert_eq!(p.state(), State::Selected);
    assert!(events(&mut p).is_empty());
}

#[test]
fn passive_t7_expiry_while_not_selected_closes() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = Protocol::new(cfg.clone(), Role::Passive);
    p.connected(t0);
    events(&mut p);
    let deadline = p.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + cfg.t7);
    p.handle_timeout(deadline - Duration::from_nanos(1));
    assert_eq!(p.state(), State::NotSelected);
    assert!(events(&mut p).is_empty());

    p.handle_timeout(deadline);
    assert_eq!(p.state(), State::NotConnected);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::T7)
        ]
    );
    assert!(sent(&mut p).is_empty());
}

#[test]
fn active_t7_also_runs_when_t6_is_longer() {
    // With T6 longer than T7 the active side's first deadline is T7.
    let t0 = Instant::now();
    let cfg = Config {
        t6: secs(20),
        ..config()
    };
    let mut p = Protocol::new(cfg.clone(), Role::Active);
    p.connected(t0);
    sent(&mut p);
    events(&mut p);
    assert_eq!(p.poll_timeout(), Some(t0 + cfg.t7));
    p.handle_timeout(t0 + cfg.t7);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::T7)
        ]
    );
}

#[test]
fn simultaneous_select() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = Protocol::new(cfg.clone(), Role::Active);
    p.connected(t0);
    let ours = sent(&mut p)[0].0.system_bytes;
    events(&mut p);

    // The peer's own Select.req crosses ours.
    let theirs = 0xAAAA_0001;
    p.handle_input(&control(SType::SelectReq, theirs), t0 + secs(1));
    assert_eq!(p.state(), State::Selected);
    assert_eq!(events(&mut p), [Event::State(State::Selected)]);
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    assert_control(&frames[0], SType::SelectRsp, theirs, 0, select_status::OK);
    // Our Select.req is no longer waiting: no T6, no T7.
    assert_eq!(p.poll_timeout(), None);

    // The peer's answer to our Select.req is accepted silently.
    p.handle_input(&control(SType::SelectRsp, ours), t0 + secs(1));
    assert_eq!(p.state(), State::Selected);
    assert!(
        sent(&mut p).is_empty(),
        "no Reject.req for the answer to our Select.req"
    );
    assert!(events_no_warnings(&mut p).is_empty());

    // It is accepted once: a repeat is unsolicited.
    p.handle_input(&control(SType::SelectRsp, ours), t0 + secs(2));
    assert_rejected(
        &mut p,
        ours,
        SType::SelectRsp.code(),
        reject_reason::TRANSACTION_NOT_OPEN,
    );
    assert_eq!(p.state(), State::Selected);
    p.handle_timeout(t0 + cfg.t6 + cfg.t7);
    assert_eq!(p.state(), State::Selected);
}

// ---------------------------------------------------------------------------------------------
// Reject.req sent
// ---------------------------------------------------------------------------------------------

#[test]
fn data_before_select_rejected_reason_4_and_connection_stays() {
    for role in [Role::Passive, Role::Active] {
        let t0 = Instant::now();
        let mut p = Protocol::new(config(), role);
        p.connected(t0);
        sent(&mut p);
        events(&mut p);
        let deadline = p.poll_timeout();

        let m = message(1, 1, true, 0x1234_5678, Some(Item::ascii("hi")));
        p.handle_input(&data_bytes(&m), t0 + secs(1));
        assert_rejected(&mut p, 0x1234_5678, 0, reject_reason::NOT_SELECTED);
        assert_eq!(p.state(), State::NotSelected);
        assert_eq!(p.poll_timeout(), deadline, "timers unchanged");
    }
}

#[test]
fn unknown_stype_rejected_reason_1() {
    let t0 = Instant::now();
    // While NOT SELECTED.
    let mut p = Protocol::new(config(), Role::Passive);
    p.connected(t0);
    events(&mut p);
    for stype in [8u8, 10, 11, 127, 255] {
        p.handle_input(&control(SType::Other(stype), 0x100 + u32::from(stype)), t0);
        assert_rejected(
            &mut p,
            0x100 + u32::from(stype),
            stype,
            reject_reason::STYPE,
        );
        assert_eq!(p.state(), State::NotSelected);
    }
    // While SELECTED.
    let mut p = passive_selected(config(), t0);
    for stype in [8u8, 10] {
        p.handle_input(&control(SType::Other(stype), 42), t0);
        assert_rejected(&mut p, 42, stype, reject_reason::STYPE);
        assert_eq!(p.state(), State::Selected);
    }
}

#[test]
fn nonzero_ptype_rejected_reason_2() {
    let t0 = Instant::now();
    let mut p = passive_selected(config(), t0);
    // A data message with PType 1 and a (valid) body.
    let mut header = Header::data(&message(1, 1, true, 0x99, None));
    header.ptype = 1;
    let body = Item::ascii("x").encode().unwrap();
    p.handle_input(&raw_frame(&header, &body), t0);
    assert_rejected(&mut p, 0x99, 1, reject_reason::PTYPE);
    assert_eq!(p.state(), State::Selected);

    // A control message with PType 0x80.
    let mut header = Header::control(SType::LinktestReq, 0x9A);
    header.ptype = 0x80;
    p.handle_input(&raw_frame(&header, &[]), t0);
    assert_rejected(&mut p, 0x9A, 0x80, reject_reason::PTYPE);
    assert_eq!(p.state(), State::Selected);
}

#[test]
fn unsolicited_responses_rejected_reason_3() {
    let t0 = Instant::now();
    let responses = [SType::SelectRsp, SType::LinktestRsp, SType::DeselectRsp];

    // NOT SELECTED, passive (no control transaction open at all).
    let mut p = Protocol::new(config(), Role::Passive);
    p.connected(t0);
    events(&mut p);
    for (i, stype) in responses.into_iter().enumerate() {
        let sb = 0x300 + i as u32;
        p.handle_input(&control(stype, sb), t0);
        assert_rejected(
            &mut p,
            sb,
            stype.code(),
            reject_reason::TRANSACTION_NOT_OPEN,
        );
        assert_eq!(p.state(), State::NotSelected);
    }

    // SELECTED, with status 0 too.
    let mut p = passive_selected(config(), t0);
    for (i, stype) in responses.into_iter().enumerate() {
        let sb = 0x400 + i as u32;
        p.handle_input(&control_bytes(stype, sb, 0, 0), t0);
        assert_rejected(
            &mut p,
            sb,
            stype.code(),
            reject_reason::TRANSACTION_NOT_OPEN,
        );
        assert_eq!(p.state(), State::Selected);
    }

    // Active with its Select.req open: a Select.rsp with other system bytes is unsolicited
    // and leaves our Select.req waiting.
    let mut p = Protocol::new(config(), Role::Active);
    p.connected(t0);
    let ours = sent(&mut p)[0].0.system_bytes;
    events(&mut p);
    p.handle_input(&control(SType::SelectRsp, ours + 1000), t0);
    assert_rejected(
        &mut p,
        ours + 1000,
        SType::SelectRsp.code(),
        reject_reason::TRANSACTION_NOT_OPEN,
    );
    assert_eq!(p.state(), State::NotSelected);
    p.handle_input(&control(SType::SelectRsp, ours), t0);
    assert_eq!(p.state(), State::Selected);
}

// ---------------------------------------------------------------------------------------------
// Reject.req received
// ---------------------------------------------------------------------------------------------

#[test]
fn reject_req_for_open_data_transaction_fails_it() {
    let t0 = Instant::now();
    let mut p = passive_selected(config(), t0);
    let sb = p.send(message(1, 1, true, 0, None), t0).unwrap();
    let other = p.send(message(1, 3, true, 0, None), t0).unwrap();
    sent(&mut p);
    assert_eq!(p.open_transactions(), 2);

    p.handle_input(
        &control_bytes(SType::RejectReq, sb, 0, reject_reason::TRANSACTION_NOT_OPEN),
        t0 + secs(1),
    );
    assert_eq!(
        events(&mut p),
        [Event::TransactionFailed {
            system_bytes: sb,
            stream_function: sf(1, 1),
            reason: TransactionFailure::Rejected(reject_reason::TRANSACTION_NOT_OPEN),
            context: (),
        }]
    );
    assert!(sent(&mut p).is_empty(), "Reject.req is never answered");
    assert_eq!(p.state(), State::Selected);
    assert_eq!(p.open_transactions(), 1);
    // The other transaction still has its T3.
    assert_eq!(p.poll_timeout(), Some(t0 + p.config().t3));

    // A reply for the rejected one is now just a received message.
    let reply = message(1, 2, false, sb, None);
    p.handle_input(&data_bytes(&reply), t0 + secs(2));
    assert_eq!(events(&mut p), [Event::Received(reply)]);
    assert_eq!(p.open_transactions(), 1);
    // The other one is still answered normally.
    let reply = message(1, 4, false, other, None);
    p.handle_input(&data_bytes(&reply), t0 + secs(2));
    assert_eq!(events(&mut p), [Event::Reply(reply, ())]);
    assert_eq!(p.open_transactions(), 0);
}

#[test]
fn reject_req_for_nothing_open_is_reported() {
    let t0 = Instant::now();
    let mut p = passive_selected(config(), t0);
    p.handle_input(&control_bytes(SType::RejectReq, 0xDEAD, 5, 1), t0);
    assert_eq!(
        events(&mut p),
        [Event::PeerRejected {
            system_bytes: 0xDEAD,
            reason: 1,
            byte2: 5
        }]
    );
    assert!(sent(&mut p).is_empty());
    assert_eq!(p.state(), State::Selected);
}

#[test]
fn reject_req_for_open_select_req_closes() {
    let t0 = Instant::now();
    let mut p = Protocol::new(config(), Role::Active);
    p.connected(t0);
    let sb = sent(&mut p)[0].0.system_bytes;
    events(&mut p);
    p.handle_input(
        &control_bytes(
            SType::RejectReq,
            sb,
            SType::SelectReq.code(),
            reject_reason::STYPE,
        ),
        t0 + secs(1),
    );
    assert_eq!(p.state(), State::NotConnected);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::ControlRejected(
                "Select.req",
                reject_reason::STYPE
            ))
        ]
    );
    assert!(sent(&mut p).is_empty());
}

#[test]
fn reject_req_for_open_linktest_req_closes() {
    let t0 = Instant::now();
    let mut p = passive_selected(config(), t0);
    let sb = p.linktest(t0).unwrap();
    sent(&mut p);
    p.handle_input(&control_bytes(SType::RejectReq, sb, 5, 1), t0);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::ControlRejected("Linktest.req", 1))
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Linktest
// ---------------------------------------------------------------------------------------------

#[test]
fn linktest_req_answered_with_same_system_bytes() {
    let t0 = Instant::now();
    // In SELECTED ...
    let mut p = passive_selected(config(), t0);
    p.handle_input(&control(SType::LinktestReq, 0xCAFE_F00D), t0);
    assert_eq!(
        transmit(&mut p),
        [0, 0, 0, 10, 0xFF, 0xFF, 0, 0, 0, 6, 0xCA, 0xFE, 0xF0, 0x0D]
    );
    assert!(events(&mut p).is_empty());
    assert_eq!(p.state(), State::Selected);

    // ... and in NOT SELECTED.
    let mut p = Protocol::new(config(), Role::Passive);
    p.connected(t0);
    events(&mut p);
    p.handle_input(&control(SType::LinktestReq, 3), t0);
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    assert_control(&frames[0], SType::LinktestRsp, 3, 0, 0);
    assert!(events(&mut p).is_empty());
    assert_eq!(p.state(), State::NotSelected);
}

#[test]
fn linktest_answered_gives_linktest_ok() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = passive_selected(cfg.clone(), t0);
    let sb = p.linktest(t0).unwrap();
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    assert_control(&frames[0], SType::LinktestReq, sb, 0, 0);
    assert_eq!(p.poll_timeout(), Some(t0 + cfg.t6));

    p.handle_input(&control(SType::LinktestRsp, sb), t0 + secs(1));
    assert_eq!(events(&mut p), [Event::LinktestOk { system_bytes: sb }]);
    assert!(sent(&mut p).is_empty());
    assert_eq!(p.poll_timeout(), None, "T6 cancelled");
    assert_eq!(p.state(), State::Selected);

    // A second Linktest.rsp for it is unsolicited.
    p.handle_input(&control(SType::LinktestRsp, sb), t0 + secs(1));
    assert_rejected(
        &mut p,
        sb,
        SType::LinktestRsp.code(),
        reject_reason::TRANSACTION_NOT_OPEN,
    );
}

#[test]
fn linktest_unanswered_within_t6_closes() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = passive_selected(cfg.clone(), t0);
    let t1 = t0 + secs(7);
    p.linktest(t1).unwrap();
    sent(&mut p);
    let deadline = p.poll_timeout().unwrap();
    assert_eq!(deadline, t1 + cfg.t6);
    p.handle_timeout(deadline);
    assert_eq!(p.state(), State::NotConnected);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::T6("Linktest.rsp"))
        ]
    );
}

#[test]
fn linktest_refused_when_not_connected() {
    let t0 = Instant::now();
    let mut p = Protocol::new(config(), Role::Active);
    assert_eq!(
        p.linktest(t0),
        Err(SendError::NotSelected(State::NotConnected))
    );
    assert!(sent(&mut p).is_empty());
}

#[test]
fn periodic_linktest() {
    let t0 = Instant::now();
    let interval = secs(30);
    let cfg = Config {
        linktest: Some(interval),
        ..Config::default()
    };
    let mut p = Protocol::new(cfg.clone(), Role::Passive);
    p.connected(t0);
    events(&mut p);
    // Not selected: only T7, no linktest.
    assert_eq!(p.poll_timeout(), Some(t0 + cfg.t7));

    let ts = t0 + secs(2);
    p.handle_input(&control(SType::SelectReq, 1), ts);
    sent(&mut p);
    events(&mut p);
    assert_eq!(p.poll_timeout(), Some(ts + interval));

    p.handle_timeout(ts + interval - Duration::from_millis(1));
    assert!(sent(&mut p).is_empty(), "not due yet");

    let t1 = p.poll_timeout().unwrap();
    p.handle_timeout(t1);
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    let sb = frames[0].0.system_bytes;
    assert_control(&frames[0], SType::LinktestReq, sb, 0, 0);
    assert!(events(&mut p).is_empty());
    // Now T6 waits for the answer.
    assert_eq!(p.poll_timeout(), Some(t1 + cfg.t6));

    // Answered: the next one is an interval after the answer.
    let t2 = t1 + secs(1);
    p.handle_input(&control(SType::LinktestRsp, sb), t2);
    assert_eq!(events(&mut p), [Event::LinktestOk { system_bytes: sb }]);
    assert_eq!(p.poll_timeout(), Some(t2 + interval));
    p.handle_timeout(t2 + interval);
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0.stype, SType::LinktestReq);
    assert_ne!(frames[0].0.system_bytes, sb);

    // Unanswered: T6 closes.
    p.handle_timeout(t2 + interval + cfg.t6);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::T6("Linktest.rsp"))
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Data transactions and T3
// ---------------------------------------------------------------------------------------------

#[test]
fn t3_reply_is_matched() {
    let t0 = Instant::now();
    let cfg = config();
    let (mut p, select_sb) = active_selected(cfg.clone(), t0);
    let t1 = t0 + secs(1);
    let sb = p.send(message(1, 1, true, 0, None), t1).unwrap();
    assert_ne!(sb, 0);
    assert_ne!(sb, select_sb);
    let mut expected = vec![0, 0, 0, 10, 0x00, 0x07, 0x81, 0x01, 0, 0];
    expected.extend_from_slice(&sb.to_be_bytes());
    assert_eq!(transmit(&mut p), expected, "S1F1 W on the wire");
    assert_eq!(p.open_transactions(), 1);
    assert_eq!(p.poll_timeout(), Some(t1 + cfg.t3));

    let reply = message(
        1,
        2,
        false,
        sb,
        Some(Item::L(vec![Item::ascii("MDLN"), Item::ascii("1.0")])),
    );
    p.handle_input(&data_bytes(&reply), t1 + secs(3));
    assert_eq!(events(&mut p), [Event::Reply(reply, ())]);
    assert_eq!(p.open_transactions(), 0);
    assert_eq!(p.poll_timeout(), None);
    assert!(sent(&mut p).is_empty());
}

#[test]
fn t3_reply_timeout_keeps_connection() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = passive_selected(cfg.clone(), t0);
    let t1 = t0 + secs(4);
    let sb = p.send(message(1, 1, true, 0, None), t1).unwrap();
    sent(&mut p);
    let deadline = p.poll_timeout().unwrap();
    assert_eq!(deadline, t1 + cfg.t3);
    p.handle_timeout(deadline - Duration::from_millis(1));
    assert!(events(&mut p).is_empty());

    p.handle_timeout(deadline);
    assert_eq!(
        events(&mut p),
        [Event::ReplyTimeout {
            system_bytes: sb,
            stream_function: sf(1, 1),
            context: ()
        }]
    );
    assert_eq!(p.state(), State::Selected);
    assert_eq!(p.open_transactions(), 0);
    assert_eq!(p.poll_timeout(), None);
    assert!(sent(&mut p).is_empty());

    // A late reply is an ordinary received message.
    let late = message(1, 2, false, sb, None);
    p.handle_input(&data_bytes(&late), deadline + secs(1));
    assert_eq!(events(&mut p), [Event::Received(late)]);
}

#[test]
fn many_outstanding_transactions_get_unique_system_bytes() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = passive_selected(cfg.clone(), t0);
    let mut sbs = Vec::new();
    for i in 0..200u32 {
        let t = t0 + Duration::from_millis(u64::from(i));
        sbs.push(p.send(message(1, 1, true, 0, None), t).unwrap());
    }
    // A linktest in between must not reuse any of them either.
    let lt = p.linktest(t0).unwrap();
    let mut all = sbs.clone();
    all.push(lt);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 201, "system bytes are unique");
    assert_eq!(p.open_transactions(), 200);

    // What went on the wire carries exactly those system bytes.
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 201);
    let wire: Vec<u32> = frames[..200].iter().map(|(h, _)| h.system_bytes).collect();
    assert_eq!(wire, sbs);
    p.handle_input(&control(SType::LinktestRsp, lt), t0);
    assert_eq!(events(&mut p), [Event::LinktestOk { system_bytes: lt }]);

    // Replies in reverse order each match their transaction.
    for &sb in sbs.iter().rev().take(100) {
        p.handle_input(&data_bytes(&message(1, 2, false, sb, None)), t0 + secs(1));
        assert_eq!(
            events(&mut p),
            [Event::Reply(message(1, 2, false, sb, None), ())]
        );
    }
    assert_eq!(p.open_transactions(), 100);
    // The earliest remaining T3 is that of the first message sent.
    assert_eq!(p.poll_timeout(), Some(t0 + cfg.t3));
    // All remaining time out at once, in system-bytes order.
    p.handle_timeout(t0 + cfg.t3 + secs(1));
    let evs = events(&mut p);
    let mut expected: Vec<u32> = sbs[..100].to_vec();
    expected.sort_unstable();
    assert_eq!(
        evs,
        expected
            .into_iter()
            .map(|system_bytes| Event::ReplyTimeout {
                system_bytes,
                stream_function: sf(1, 1),
                context: ()
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(p.state(), State::Selected);
}

#[test]
fn reply_with_other_stream_is_not_a_reply() {
    let t0 = Instant::now();
    let mut p = passive_selected(config(), t0);
    let sb = p.send(message(1, 1, true, 0, None), t0).unwrap();
    sent(&mut p);
    let wrong = message(2, 2, false, sb, None);
    p.handle_input(&data_bytes(&wrong), t0);
    assert_eq!(events(&mut p), [Event::Received(wrong)]);
    assert_eq!(p.open_transactions(), 1);
    // An abort (S1F0) ends the transaction as its reply.
    let abort = message(1, 0, false, sb, None);
    p.handle_input(&data_bytes(&abort), t0);
    assert_eq!(events(&mut p), [Event::Reply(abort, ())]);
    assert_eq!(p.open_transactions(), 0);
}

#[test]
fn received_primary_is_delivered() {
    let t0 = Instant::now();
    let mut p = passive_selected(config(), t0);
    // Session ID with bit 15 set: device ID is masked.
    let mut header = Header::data(&message(1, 13, true, 0x42, None));
    header.session_id = 0x8007;
    let body = Item::L(vec![]).encode().unwrap();
    p.handle_input(&raw_frame(&header, &body), t0);
    assert_eq!(
        events(&mut p),
        [Event::Received(message(
            1,
            13,
            true,
            0x42,
            Some(Item::L(vec![]))
        ))]
    );
    assert!(
        sent(&mut p).is_empty(),
        "the engine answers, not the protocol"
    );
}

#[test]
fn send_while_not_selected_fails() {
    let t0 = Instant::now();
    let mut p = Protocol::new(config(), Role::Active);
    assert_eq!(
        p.send(message(1, 1, true, 0, None), t0),
        Err(SendError::NotSelected(State::NotConnected))
    );
    p.connected(t0);
    sent(&mut p);
    assert_eq!(
        p.send(message(1, 1, true, 0, None), t0),
        Err(SendError::NotSelected(State::NotSelected))
    );
    assert_eq!(
        p.send(message(1, 2, false, 5, None), t0),
        Err(SendError::NotSelected(State::NotSelected))
    );
    assert!(sent(&mut p).is_empty());
    assert_eq!(p.open_transactions(), 0);
    assert_eq!(
        p.deselect(t0),
        Err(SendError::NotSelected(State::NotSelected))
    );
}

#[test]
fn secondary_keeps_its_system_bytes_and_primaries_without_w_open_nothing() {
    let t0 = Instant::now();
    let mut p = passive_selected(config(), t0);
    let reply = message(1, 2, false, 0xABCD_EF01, Some(Item::U1(vec![0])));
    assert_eq!(p.send(reply.clone(), t0), Ok(0xABCD_EF01));
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    let (header, body) = &frames[0];
    assert_eq!(*header, Header::data(&reply));
    assert_eq!(body, &reply.body.as_ref().unwrap().encode().unwrap());
    assert_eq!(p.open_transactions(), 0);
    assert_eq!(p.poll_timeout(), None);

    // A primary's given system bytes are replaced; without W-bit no T3 runs.
    let sb = p
        .send(message(6, 11, false, 0xABCD_EF01, None), t0)
        .unwrap();
    assert_ne!(sb, 0xABCD_EF01);
    let frames = sent(&mut p);
    assert_eq!(frames[0].0.system_bytes, sb);
    assert!(!frames[0].0.w_bit());
    assert_eq!(p.open_transactions(), 0);
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn send_over_max_message_size_fails_and_sends_nothing() {
    let t0 = Instant::now();
    let cfg = Config {
        max_message_size: 20,
        ..config()
    };
    let mut p = passive_selected(cfg, t0);
    let big = message(1, 1, true, 0, Some(Item::B(vec![0; 20])));
    assert_eq!(
        p.send(big, t0),
        Err(SendError::TooLarge {
            length: 10 + 2 + 20,
            max: 20
        })
    );
    assert!(sent(&mut p).is_empty());
    assert_eq!(p.open_transactions(), 0);
}

// ---------------------------------------------------------------------------------------------
// Framing and T8
// ---------------------------------------------------------------------------------------------

#[test]
fn t8_half_a_frame_then_silence_closes() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = passive_selected(cfg.clone(), t0);
    let m = message(1, 3, true, 9, Some(Item::ascii("half and half")));
    let bytes = data_bytes(&m);
    let t1 = t0 + secs(1);
    p.handle_input(&bytes[..bytes.len() / 2], t1);
    assert!(events(&mut p).is_empty());
    assert_eq!(p.poll_timeout(), Some(t1 + cfg.t8));
    p.handle_timeout(t1 + cfg.t8 - Duration::from_millis(1));
    assert_eq!(p.state(), State::Selected);

    p.handle_timeout(t1 + cfg.t8);
    assert_eq!(p.state(), State::NotConnected);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::T8)
        ]
    );
    // The rest arriving later is ignored.
    p.handle_input(&bytes[bytes.len() / 2..], t1 + cfg.t8);
    assert!(events(&mut p).is_empty());
    assert!(sent(&mut p).is_empty());
}

#[test]
fn t8_byte_by_byte_within_t8_delivers() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = passive_selected(cfg.clone(), t0);
    let m = message(1, 3, true, 9, Some(Item::ascii("slow but steady")));
    let bytes = data_bytes(&m);
    let step = cfg.t8 - Duration::from_millis(1);
    let mut t = t0;
    for (i, b) in bytes.iter().enumerate() {
        t += step;
        // The previous byte's T8 has not expired yet.
        p.handle_timeout(t);
        assert_eq!(p.state(), State::Selected, "closed before byte {i}");
        p.handle_input(std::slice::from_ref(b), t);
        if i + 1 < bytes.len() {
            assert!(events(&mut p).is_empty(), "event before the last byte");
            assert_eq!(
                p.poll_timeout(),
                Some(t + cfg.t8),
                "T8 restarts at byte {i}"
            );
        }
    }
    assert_eq!(events(&mut p), [Event::Received(m)]);
    assert_eq!(p.poll_timeout(), None, "no T8 once the frame is whole");
    assert_eq!(p.state(), State::Selected);
}

#[test]
fn frame_split_at_every_boundary_decodes_identically() {
    let t0 = Instant::now();
    let m = message(
        6,
        11,
        true,
        0x0102_0304,
        Some(Item::L(vec![
            Item::U4(vec![1, 2, 3]),
            Item::ascii("split me"),
            Item::B(vec![0xFF; 5]),
        ])),
    );
    let bytes = data_bytes(&m);
    // Two chunks at every boundary.
    for cut in 0..=bytes.len() {
        let mut p = passive_selected(config(), t0);
        p.handle_input(&bytes[..cut], t0);
        p.handle_input(&bytes[cut..], t0);
        assert_eq!(events(&mut p), [Event::Received(m.clone())], "cut at {cut}");
        assert_eq!(p.poll_timeout(), None);
    }
    // Three chunks at every pair of boundaries, followed by a second whole frame in the last.
    let lt = control(SType::LinktestReq, 77);
    for a in 0..=bytes.len() {
        for b in a..=bytes.len() {
            let mut p = passive_selected(config(), t0);
            let mut last = bytes[b..].to_vec();
            last.extend_from_slice(&lt);
            p.handle_input(&bytes[..a], t0);
            p.handle_input(&bytes[a..b], t0);
            p.handle_input(&last, t0);
            assert_eq!(events(&mut p), [Event::Received(m.clone())], "cuts {a} {b}");
            let frames = sent(&mut p);
            assert_eq!(frames.len(), 1);
            assert_control(&frames[0], SType::LinktestRsp, 77, 0, 0);
        }
    }
}

#[test]
fn oversized_length_closes_as_soon_as_the_length_arrives() {
    let t0 = Instant::now();
    let cfg = Config {
        max_message_size: 1000,
        ..config()
    };
    // Whole length field at once.
    let mut p = passive_selected(cfg.clone(), t0);
    p.handle_input(&1001u32.to_be_bytes(), t0);
    assert_eq!(p.state(), State::NotConnected);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::TooLarge {
                length: 1001,
                max: 1000
            })
        ]
    );
    assert!(sent(&mut p).is_empty());

    // Byte by byte: nothing until the fourth byte.
    let mut p = passive_selected(cfg.clone(), t0);
    let field = 0xFFFF_FFFFu32.to_be_bytes();
    for b in &field[..3] {
        p.handle_input(std::slice::from_ref(b), t0);
        assert_eq!(p.state(), State::Selected);
        assert!(events(&mut p).is_empty());
    }
    p.handle_input(&field[3..], t0);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::TooLarge {
                length: 0xFFFF_FFFF,
                max: 1000
            })
        ]
    );

    // After a whole frame in the same buffer.
    let mut p = passive_selected(cfg.clone(), t0);
    let mut input = control(SType::LinktestReq, 5);
    input.extend_from_slice(&5000u32.to_be_bytes());
    p.handle_input(&input, t0);
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    assert_control(&frames[0], SType::LinktestRsp, 5, 0, 0);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::TooLarge {
                length: 5000,
                max: 1000
            })
        ]
    );

    // Exactly the maximum is accepted.
    let mut p = passive_selected(cfg, t0);
    let m = message(1, 1, false, 1, Some(Item::B(vec![7; 1000 - 10 - 3])));
    let bytes = data_bytes(&m);
    assert_eq!(bytes.len(), 4 + 1000);
    p.handle_input(&bytes, t0);
    assert_eq!(events(&mut p), [Event::Received(m)]);
}

#[test]
fn length_under_header_size_closes_bad_frame() {
    for length in [0u32, 1, 9] {
        let t0 = Instant::now();
        let mut p = passive_selected(config(), t0);
        let mut input = length.to_be_bytes().to_vec();
        input.extend_from_slice(&[0; 9]);
        p.handle_input(&input, t0);
        assert_eq!(p.state(), State::NotConnected);
        let evs = events(&mut p);
        assert_eq!(evs.len(), 2, "{evs:?}");
        assert_eq!(evs[0], Event::State(State::NotConnected));
        assert!(
            matches!(&evs[1], Event::Closed(CloseReason::BadFrame(_))),
            "{evs:?}"
        );
        assert!(sent(&mut p).is_empty());
    }
}

#[test]
fn control_message_with_body_closes_bad_frame() {
    let t0 = Instant::now();
    for stype in [SType::SelectReq, SType::LinktestReq, SType::SeparateReq] {
        let mut p = Protocol::new(config(), Role::Passive);
        p.connected(t0);
        events(&mut p);
        p.handle_input(&raw_frame(&Header::control(stype, 1), &[0x00]), t0);
        assert_eq!(p.state(), State::NotConnected);
        let evs = events(&mut p);
        assert_eq!(evs[0], Event::State(State::NotConnected));
        assert!(
            matches!(&evs[1], Event::Closed(CloseReason::BadFrame(_))),
            "{evs:?}"
        );
        assert_eq!(evs.len(), 2);
        assert!(sent(&mut p).is_empty(), "no Select.rsp for a bad frame");
    }
}

#[test]
fn malformed_body_is_reported_and_connection_stays() {
    let t0 = Instant::now();
    let mut p = passive_selected(config(), t0);
    let header = Header::data(&message(1, 3, true, 0x55, None));
    // <A> declaring 5 bytes with only one present.
    let body = [0x41, 0x05, b'a'];
    p.handle_input(&raw_frame(&header, &body), t0);
    let error = Item::decode_body(&body, &DecodeLimits::default()).unwrap_err();
    assert_eq!(events(&mut p), [Event::Malformed { header, error }]);
    assert_eq!(p.state(), State::Selected);
    assert!(sent(&mut p).is_empty());

    // The next good message still gets through.
    let m = message(1, 1, true, 0x56, None);
    p.handle_input(&data_bytes(&m), t0);
    assert_eq!(events(&mut p), [Event::Received(m)]);
}

#[test]
fn malformed_reply_ends_its_transaction() {
    let t0 = Instant::now();
    let mut p = passive_selected(config(), t0);
    let sb = p.send(message(1, 1, true, 0, None), t0).unwrap();
    sent(&mut p);
    let header = Header::data(&message(1, 2, false, sb, None));
    let body = [0xFF];
    p.handle_input(&raw_frame(&header, &body), t0);
    let error = Item::decode_body(&body, &DecodeLimits::default()).unwrap_err();
    // Whoever waits for the reply learns why it will not come; the engine sees the message.
    assert_eq!(
        events(&mut p),
        [
            Event::TransactionFailed {
                system_bytes: sb,
                stream_function: sf(1, 1),
                reason: TransactionFailure::Malformed(error.clone()),
                context: (),
            },
            Event::Malformed { header, error }
        ]
    );
    assert_eq!(p.open_transactions(), 0);
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn body_over_decode_limits_is_malformed() {
    let t0 = Instant::now();
    let cfg = Config {
        decode_limits: DecodeLimits {
            max_depth: 2,
            ..DecodeLimits::default()
        },
        ..config()
    };
    let mut p = passive_selected(cfg, t0);
    let deep = message(
        1,
        1,
        false,
        3,
        Some(Item::L(vec![Item::L(vec![Item::L(vec![])])])),
    );
    p.handle_input(&data_bytes(&deep), t0);
    let evs = events(&mut p);
    assert_eq!(evs.len(), 1);
    assert!(
        matches!(&evs[0], Event::Malformed { header, .. } if header.system_bytes == 3),
        "{evs:?}"
    );
    assert_eq!(p.state(), State::Selected);
}

#[test]
fn several_frames_in_one_buffer_handled_in_order() {
    let t0 = Instant::now();
    let mut p = Protocol::new(config(), Role::Passive);
    p.connected(t0);
    events(&mut p);
    let m1 = message(1, 1, true, 11, None);
    let m2 = message(2, 17, false, 12, Some(Item::U2(vec![1, 2])));
    let mut input = Vec::new();
    input.extend_from_slice(&control(SType::LinktestReq, 1));
    input.extend_from_slice(&control(SType::SelectReq, 2));
    input.extend_from_slice(&data_bytes(&m1));
    input.extend_from_slice(&control(SType::LinktestReq, 3));
    input.extend_from_slice(&data_bytes(&m2));
    input.extend_from_slice(&control(SType::SelectReq, 4));
    p.handle_input(&input, t0);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::Selected),
            Event::Received(m1),
            Event::Received(m2)
        ]
    );
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 4);
    assert_control(&frames[0], SType::LinktestRsp, 1, 0, 0);
    assert_control(&frames[1], SType::SelectRsp, 2, 0, select_status::OK);
    assert_control(&frames[2], SType::LinktestRsp, 3, 0, 0);
    assert_control(
        &frames[3],
        SType::SelectRsp,
        4,
        0,
        select_status::ALREADY_ACTIVE,
    );
}

#[test]
fn frames_after_a_closing_frame_in_the_same_buffer_are_ignored() {
    let t0 = Instant::now();
    let mut p = passive_selected(config(), t0);
    let mut input = control(SType::LinktestReq, 1);
    input.extend_from_slice(&control(SType::SeparateReq, 2));
    input.extend_from_slice(&control(SType::LinktestReq, 3));
    input.extend_from_slice(&data_bytes(&message(1, 1, true, 4, None)));
    p.handle_input(&input, t0);
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    assert_control(&frames[0], SType::LinktestRsp, 1, 0, 0);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::PeerSeparated)
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Separate, disconnect, deselect
// ---------------------------------------------------------------------------------------------

#[test]
fn separate_sends_separate_req_and_closes() {
    let t0 = Instant::now();
    let (mut p, select_sb) = active_selected(config(), t0);
    p.separate();
    let bytes = transmit(&mut p);
    let frames = split_frames(&bytes);
    assert_eq!(frames.len(), 1);
    let sb = frames[0].0.system_bytes;
    assert_ne!(sb, select_sb);
    let mut expected = vec![0, 0, 0, 10, 0xFF, 0xFF, 0, 0, 0, 9];
    expected.extend_from_slice(&sb.to_be_bytes());
    assert_eq!(bytes, expected);
    assert_eq!(p.state(), State::NotConnected);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::Separated)
        ]
    );
    assert_eq!(p.poll_timeout(), None);
    // A second separate() does nothing.
    p.separate();
    assert!(sent(&mut p).is_empty());
    assert!(events(&mut p).is_empty());
}

#[test]
fn separate_while_not_selected_closes_without_separate_req() {
    let t0 = Instant::now();
    let mut p = Protocol::new(config(), Role::Passive);
    p.connected(t0);
    events(&mut p);
    p.separate();
    assert!(sent(&mut p).is_empty());
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::Separated)
        ]
    );
}

#[test]
fn peer_separate_req_closes() {
    let t0 = Instant::now();
    let mut p = passive_selected(config(), t0);
    let sb = p.send(message(1, 1, true, 0, None), t0).unwrap();
    sent(&mut p);
    p.handle_input(&control(SType::SeparateReq, 0x99), t0);
    assert_eq!(p.state(), State::NotConnected);
    assert_eq!(
        events(&mut p),
        [
            Event::TransactionFailed {
                system_bytes: sb,
                stream_function: sf(1, 1),
                reason: TransactionFailure::ConnectionClosed,
                context: ()
            },
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::PeerSeparated)
        ]
    );
    assert!(sent(&mut p).is_empty(), "Separate.req is never answered");
}

#[test]
fn disconnected_fails_open_transactions_then_closes() {
    let t0 = Instant::now();
    let mut p = passive_selected(config(), t0);
    let a = p.send(message(1, 1, true, 0, None), t0).unwrap();
    let b = p.send(message(2, 13, true, 0, None), t0).unwrap();
    let c = p.send(message(5, 1, true, 0, None), t0).unwrap();
    p.linktest(t0).unwrap();
    sent(&mut p);
    assert!(a < b && b < c);
    p.disconnected(CloseReason::PeerClosed);
    assert_eq!(p.state(), State::NotConnected);
    assert_eq!(
        events(&mut p),
        [
            Event::TransactionFailed {
                system_bytes: a,
                stream_function: sf(1, 1),
                reason: TransactionFailure::ConnectionClosed,
                context: ()
            },
            Event::TransactionFailed {
                system_bytes: b,
                stream_function: sf(2, 13),
                reason: TransactionFailure::ConnectionClosed,
                context: ()
            },
            Event::TransactionFailed {
                system_bytes: c,
                stream_function: sf(5, 1),
                reason: TransactionFailure::ConnectionClosed,
                context: ()
            },
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::PeerClosed)
        ]
    );
    assert_eq!(p.open_transactions(), 0);
    assert_eq!(p.poll_timeout(), None, "no timers survive the close");
    assert!(sent(&mut p).is_empty());
    // A second disconnect does nothing.
    p.disconnected(CloseReason::Io("reset".into()));
    assert!(events(&mut p).is_empty());
}

#[test]
fn reconnect_after_close_starts_afresh() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = Protocol::new(cfg.clone(), Role::Active);
    p.connected(t0);
    sent(&mut p);
    // A half frame, then the connection drops.
    p.handle_input(&[0, 0, 0, 10, 0xFF], t0);
    p.disconnected(CloseReason::PeerClosed);
    events(&mut p);

    let t1 = t0 + cfg.t5;
    p.connected(t1);
    assert_eq!(events(&mut p), [Event::State(State::NotSelected)]);
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    let sb = frames[0].0.system_bytes;
    assert_control(&frames[0], SType::SelectReq, sb, 0, 0);
    assert_eq!(p.poll_timeout(), Some(t1 + cfg.t6));
    // No leftovers from the half frame: a whole Select.rsp selects.
    p.handle_input(&control(SType::SelectRsp, sb), t1);
    assert_eq!(events(&mut p), [Event::State(State::Selected)]);
}

#[test]
fn deselect_req_while_selected_answers_ok_and_goes_not_selected() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = passive_selected(cfg.clone(), t0);
    let t1 = t0 + secs(3);
    p.handle_input(&control(SType::DeselectReq, 0xD1), t1);
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    assert_control(&frames[0], SType::DeselectRsp, 0xD1, 0, deselect_status::OK);
    assert_eq!(p.state(), State::NotSelected);
    assert_eq!(events(&mut p), [Event::State(State::NotSelected)]);
    // T7 runs again.
    assert_eq!(p.poll_timeout(), Some(t1 + cfg.t7));
    // Data is now refused.
    assert_eq!(
        p.send(message(1, 1, true, 0, None), t1),
        Err(SendError::NotSelected(State::NotSelected))
    );
    // And it can be selected again.
    p.handle_input(&control(SType::SelectReq, 0xD2), t1);
    assert_eq!(p.state(), State::Selected);
    assert_eq!(events(&mut p), [Event::State(State::Selected)]);
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn deselect_req_while_not_selected_answers_status_1() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = Protocol::new(cfg.clone(), Role::Passive);
    p.connected(t0);
    events(&mut p);
    p.handle_input(&control(SType::DeselectReq, 0xD3), t0 + secs(1));
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    assert_control(
        &frames[0],
        SType::DeselectRsp,
        0xD3,
        0,
        deselect_status::NOT_ESTABLISHED,
    );
    assert_eq!(p.state(), State::NotSelected);
    assert!(events(&mut p).is_empty());
    // T7 is not restarted.
    assert_eq!(p.poll_timeout(), Some(t0 + cfg.t7));
}

#[test]
fn our_deselect_then_deselect_rsp_goes_not_selected() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = passive_selected(cfg.clone(), t0);
    let t1 = t0 + secs(1);
    let sb = p.deselect(t1).unwrap();
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    assert_control(&frames[0], SType::DeselectReq, sb, 0, 0);
    assert_eq!(p.poll_timeout(), Some(t1 + cfg.t6));
    assert_eq!(p.state(), State::Selected, "selected until the answer");

    let t2 = t1 + secs(1);
    p.handle_input(&control(SType::DeselectRsp, sb), t2);
    assert_eq!(p.state(), State::NotSelected);
    assert_eq!(events(&mut p), [Event::State(State::NotSelected)]);
    assert!(sent(&mut p).is_empty());
    assert_eq!(p.poll_timeout(), Some(t2 + cfg.t7));
}

#[test]
fn our_deselect_unanswered_within_t6_closes() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = passive_selected(cfg.clone(), t0);
    p.deselect(t0).unwrap();
    sent(&mut p);
    p.handle_timeout(t0 + cfg.t6);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::T6("Deselect.rsp"))
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Unexpected input in each state
// ---------------------------------------------------------------------------------------------

#[test]
fn input_and_timeouts_ignored_when_not_connected() {
    let t0 = Instant::now();
    let everything = {
        let mut v = control(SType::SelectReq, 1);
        v.extend_from_slice(&control(SType::LinktestReq, 2));
        v.extend_from_slice(&data_bytes(&message(1, 1, true, 3, None)));
        v.extend_from_slice(&control(SType::Other(8), 4));
        v.extend_from_slice(&[0, 0, 0, 1]);
        v
    };

    // Never connected.
    let mut p = Protocol::new(config(), Role::Passive);
    p.handle_input(&everything, t0);
    p.handle_timeout(t0 + secs(1000));
    assert_eq!(p.state(), State::NotConnected);
    assert!(events(&mut p).is_empty());
    assert!(sent(&mut p).is_empty());
    assert_eq!(p.poll_timeout(), None);

    // Closed.
    let mut p = passive_selected(config(), t0);
    p.send(message(1, 1, true, 0, None), t0).unwrap();
    p.separate();
    sent(&mut p);
    events(&mut p);
    p.handle_input(&everything, t0);
    p.handle_timeout(t0 + secs(1000));
    assert_eq!(p.state(), State::NotConnected);
    assert!(events(&mut p).is_empty());
    assert!(sent(&mut p).is_empty());
    assert_eq!(p.poll_timeout(), None);
    assert_eq!(
        p.send(message(1, 1, true, 0, None), t0),
        Err(SendError::NotSelected(State::NotConnected))
    );
    assert_eq!(
        p.deselect(t0),
        Err(SendError::NotSelected(State::NotConnected))
    );
}

#[test]
fn unexpected_frames_while_not_selected() {
    let t0 = Instant::now();
    let mut p = Protocol::new(config(), Role::Passive);
    p.connected(t0);
    events(&mut p);
    // Data: reason 4.
    p.handle_input(&data_bytes(&message(1, 2, false, 1, None)), t0);
    assert_rejected(&mut p, 1, 0, reject_reason::NOT_SELECTED);
    // Responses to nothing: reason 3.
    p.handle_input(&control(SType::SelectRsp, 2), t0);
    assert_rejected(
        &mut p,
        2,
        SType::SelectRsp.code(),
        reject_reason::TRANSACTION_NOT_OPEN,
    );
    // Reject.req for nothing: reported, not answered.
    p.handle_input(&control_bytes(SType::RejectReq, 3, 0, 4), t0);
    assert_eq!(
        events(&mut p),
        [Event::PeerRejected {
            system_bytes: 3,
            reason: 4,
            byte2: 0
        }]
    );
    assert!(sent(&mut p).is_empty());
    assert_eq!(p.state(), State::NotSelected);
    // T7 still runs from the connect.
    assert_eq!(p.poll_timeout(), Some(t0 + p.config().t7));
    // Separate.req closes.
    p.handle_input(&control(SType::SeparateReq, 5), t0);
    assert_eq!(
        events(&mut p),
        [
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::PeerSeparated)
        ]
    );
}

#[test]
fn unexpected_frames_while_selected() {
    let t0 = Instant::now();
    let (mut p, select_sb) = active_selected(config(), t0);
    // The Select.rsp for our (finished) Select.req again: unsolicited.
    p.handle_input(&control(SType::SelectRsp, select_sb), t0);
    assert_rejected(
        &mut p,
        select_sb,
        SType::SelectRsp.code(),
        reject_reason::TRANSACTION_NOT_OPEN,
    );
    // A Select.req: already active.
    p.handle_input(&control(SType::SelectReq, 9), t0);
    let frames = sent(&mut p);
    assert_control(
        &frames[0],
        SType::SelectRsp,
        9,
        0,
        select_status::ALREADY_ACTIVE,
    );
    // A secondary that answers nothing is delivered as received.
    let stray = message(1, 4, false, 10, None);
    p.handle_input(&data_bytes(&stray), t0);
    assert_eq!(events(&mut p), [Event::Received(stray)]);
    assert!(sent(&mut p).is_empty());
    assert_eq!(p.state(), State::Selected);
}

#[test]
fn not_selected_reject_while_selected_makes_the_active_end_select_again() {
    let t0 = Instant::now();
    let (mut p, _) = active_selected(config(), t0);
    let sb = p.send(message(1, 13, true, 0, None), t0).unwrap();
    sent(&mut p);
    p.handle_input(
        &control_bytes(SType::RejectReq, sb, 0, reject_reason::NOT_SELECTED),
        t0 + secs(1),
    );
    let evs = events_no_warnings(&mut p);
    assert_eq!(
        evs,
        [
            Event::TransactionFailed {
                system_bytes: sb,
                stream_function: sf(1, 13),
                reason: TransactionFailure::Rejected(reject_reason::NOT_SELECTED),
                context: (),
            },
            Event::State(State::NotSelected),
        ]
    );
    let frames = sent(&mut p);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0.stype, SType::SelectReq);
    assert_eq!(p.poll_timeout(), Some(t0 + secs(1) + config().t6));
    assert!(p.send(message(1, 1, true, 0, None), t0).is_err());
    p.handle_input(
        &control(SType::SelectRsp, frames[0].0.system_bytes),
        t0 + secs(1),
    );
    assert_eq!(p.state(), State::Selected);
    assert_eq!(events(&mut p), [Event::State(State::Selected)]);
}

#[test]
fn not_selected_reject_while_selected_closes_the_passive_end() {
    let t0 = Instant::now();
    let mut p = passive_selected(config(), t0);
    let sb = p.send(message(5, 1, false, 0, None), t0).unwrap();
    sent(&mut p);
    p.handle_input(
        &control_bytes(SType::RejectReq, sb, 0, reject_reason::NOT_SELECTED),
        t0,
    );
    let evs = events_no_warnings(&mut p);
    assert!(
        matches!(evs.first(), Some(Event::PeerRejected { reason: 4, .. })),
        "{evs:?}"
    );
    assert_eq!(
        evs.last(),
        Some(&Event::Closed(CloseReason::PeerNotSelected))
    );
    assert_eq!(p.state(), State::NotConnected);
}

// ---------------------------------------------------------------------------------------------
// The transaction table: contexts, stream 9 errors, T3 order, held input
// ---------------------------------------------------------------------------------------------

/// A selected passive protocol whose transactions carry a `u32` context.
fn selected_with_context(config: Config, t0: Instant) -> Protocol<u32> {
    let mut p: Protocol<u32> = Protocol::with_context(config, Role::Passive);
    p.connected(t0);
    p.handle_input(&control(SType::SelectReq, 0x5E1E), t0);
    assert_eq!(p.state(), State::Selected);
    let mut out = Vec::new();
    p.take_transmit(&mut out);
    while p.poll_event().is_some() {}
    p
}

fn drain<T>(p: &mut Protocol<T>) -> Vec<Event<T>> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

/// An S9Fx whose MHEAD is the header of `primary` as it went on the wire.
fn stream_nine(function: u8, primary: &Message, system_bytes: u32) -> Message {
    let mhead = Header::data(primary).to_bytes().to_vec();
    message(9, function, false, system_bytes, Some(Item::B(mhead)))
}

#[test]
fn contexts_come_back_with_reply_timeout_reject_and_close() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = selected_with_context(cfg.clone(), t0);
    let replied = p.send_with(message(1, 1, true, 0, None), 10, t0).unwrap();
    let timed_out = p.send_with(message(1, 3, true, 0, None), 20, t0).unwrap();
    let rejected = p.send_with(message(2, 13, true, 0, None), 30, t0).unwrap();
    let closed = p.send_with(message(2, 15, true, 0, None), 40, t0).unwrap();
    // A primary without W-bit and a secondary open nothing; their context is dropped.
    p.send_with(message(6, 11, false, 0, None), 99, t0).unwrap();
    assert_eq!(p.open_transactions(), 4);

    let reply = message(1, 2, false, replied, None);
    p.handle_input(&data_bytes(&reply), t0 + secs(1));
    assert_eq!(drain(&mut p), [Event::Reply(reply, 10)]);

    p.handle_input(
        &control_bytes(
            SType::RejectReq,
            rejected,
            0,
            reject_reason::TRANSACTION_NOT_OPEN,
        ),
        t0 + secs(2),
    );
    assert_eq!(
        drain(&mut p),
        [Event::TransactionFailed {
            system_bytes: rejected,
            stream_function: sf(2, 13),
            reason: TransactionFailure::Rejected(reject_reason::TRANSACTION_NOT_OPEN),
            context: 30,
        }]
    );
    // The one answered and the one rejected no longer hold T3: the first live one does.
    assert_eq!(p.poll_timeout(), Some(t0 + cfg.t3));
    p.cancel_transaction(closed)
        .map(|c| assert_eq!(c, 40))
        .unwrap();
    p.handle_timeout(t0 + cfg.t3);
    assert_eq!(
        drain(&mut p),
        [Event::ReplyTimeout {
            system_bytes: timed_out,
            stream_function: sf(1, 3),
            context: 20,
        }]
    );
    assert_eq!(p.poll_timeout(), None);

    let last = p
        .send_with(message(1, 1, true, 0, None), 50, t0 + secs(50))
        .unwrap();
    p.disconnected(CloseReason::PeerClosed);
    assert_eq!(
        drain(&mut p),
        [
            Event::TransactionFailed {
                system_bytes: last,
                stream_function: sf(1, 1),
                reason: TransactionFailure::ConnectionClosed,
                context: 50,
            },
            Event::State(State::NotConnected),
            Event::Closed(CloseReason::PeerClosed),
        ]
    );
}

#[test]
fn every_stream_nine_with_mhead_ends_the_transaction_it_names() {
    for function in [1u8, 3, 5, 7, 9, 11] {
        let t0 = Instant::now();
        let mut p = selected_with_context(config(), t0);
        let sb = p.send_with(message(7, 3, true, 0, None), 1, t0).unwrap();
        let other = p.send_with(message(7, 5, true, 0, None), 2, t0).unwrap();
        let mut wire = message(7, 3, true, sb, None);
        wire.device_id = 0;
        let s9 = stream_nine(function, &wire, 0x900 + u32::from(function));
        p.handle_input(&data_bytes(&s9), t0 + secs(1));
        assert_eq!(
            drain(&mut p),
            [
                Event::TransactionFailed {
                    system_bytes: sb,
                    stream_function: sf(7, 3),
                    reason: TransactionFailure::StreamNine(Box::new(s9.clone())),
                    context: 1,
                },
                Event::Received(s9),
            ],
            "S9F{function}"
        );
        assert_eq!(p.open_transactions(), 1, "S9F{function} ends only its own");
        let reply = message(7, 6, false, other, None);
        p.handle_input(&data_bytes(&reply), t0 + secs(1));
        assert_eq!(drain(&mut p), [Event::Reply(reply, 2)]);
    }
}

#[test]
fn stream_nine_naming_nothing_open_is_only_received() {
    let t0 = Instant::now();
    let mut p = selected_with_context(config(), t0);
    let sb = p.send_with(message(1, 3, true, 0, None), 7, t0).unwrap();
    // MHEAD of a transaction that is not open.
    let s9 = stream_nine(7, &message(1, 3, true, sb + 100, None), 0x77);
    p.handle_input(&data_bytes(&s9), t0);
    assert_eq!(drain(&mut p), [Event::Received(s9)]);
    // MHEAD of the wrong length, S9F13 (no MHEAD) and a non-B body name nothing.
    let mut short = stream_nine(5, &message(1, 3, true, sb, None), 0x78);
    if let Some(Item::B(b)) = &mut short.body {
        b.truncate(9);
    }
    let s9f13 = message(
        9,
        13,
        false,
        0x79,
        Some(Item::L(vec![
            Item::A(b"S1F3".to_vec()),
            Item::A(b"x".to_vec()),
        ])),
    );
    let listed = message(9, 7, false, 0x7A, Some(Item::L(vec![])));
    for m in [short, s9f13, listed] {
        p.handle_input(&data_bytes(&m), t0);
        assert_eq!(drain(&mut p), [Event::Received(m)]);
    }
    assert_eq!(p.open_transactions(), 1);
}

#[test]
fn t3_runs_in_send_order_over_many_transactions() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = selected_with_context(cfg.clone(), t0);
    let sbs: Vec<u32> = (0..10_000u32)
        .map(|i| {
            let at = t0 + Duration::from_millis(u64::from(i));
            p.send_with(message(1, 1, true, 0, None), i, at).unwrap()
        })
        .collect();
    // Answer every even one; the odd ones time out, each at its own T3, in order.
    for (i, sb) in sbs.iter().enumerate().step_by(2) {
        p.handle_input(&data_bytes(&message(1, 2, false, *sb, None)), t0);
        assert!(matches!(drain(&mut p).as_slice(), [Event::Reply(_, c)] if *c as usize == i));
    }
    assert_eq!(
        p.poll_timeout(),
        Some(t0 + cfg.t3 + Duration::from_millis(1))
    );
    p.handle_timeout(t0 + cfg.t3 + Duration::from_millis(5));
    let contexts: Vec<u32> = drain(&mut p)
        .into_iter()
        .map(|e| match e {
            Event::ReplyTimeout { context, .. } => context,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(contexts, [1, 3, 5]);
    assert_eq!(
        p.poll_timeout(),
        Some(t0 + cfg.t3 + Duration::from_millis(7))
    );
    assert_eq!(p.open_transactions(), 4_997);
}

#[test]
fn held_input_suspends_t8_and_restarts_it_on_resume() {
    let t0 = Instant::now();
    let cfg = config();
    let mut p = passive_selected(cfg.clone(), t0);
    let frame = data_bytes(&message(1, 1, true, 5, None));
    p.handle_input(&frame[..6], t0);
    assert_eq!(p.poll_timeout(), Some(t0 + cfg.t8));
    // The driver stops reading (its receive queue is full): the cut frame is not the peer's
    // fault, so T8 does not run.
    p.hold_input(true, t0 + secs(1));
    assert_eq!(p.poll_timeout(), None);
    p.handle_timeout(t0 + cfg.t8 + secs(10));
    assert_eq!(p.state(), State::Selected);
    // Reading again: T8 runs from then.
    let resumed = t0 + secs(20);
    p.hold_input(false, resumed);
    assert_eq!(p.poll_timeout(), Some(resumed + cfg.t8));
    p.handle_input(&frame[6..], resumed + secs(1));
    assert_eq!(
        events(&mut p),
        [Event::Received(message(1, 1, true, 5, None))]
    );
    assert_eq!(p.poll_timeout(), None);
}
