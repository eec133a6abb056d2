//! The HSMS protocol state machine on arbitrary input, in each state and role, with simulated
//! time: bytes from the peer (raw, and well-formed frames with fuzzed fields), sends, control
//! transactions, timers, back-pressure, disconnects. It must never panic, everything it
//! transmits must be whole well-formed frames, and after its timers have run at their deadline
//! it must not ask to be woken again in the past (no busy loop).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use secsgate::hsms::frame::{self, Header, SType};
use secsgate::hsms::protocol::{CloseReason, Config, Event, Protocol, Role, State};
use secsgate::secs2::{Item, Message, StreamFunction};

struct Harness {
    p: Protocol,
    now: Instant,
    held: bool,
}

impl Harness {
    /// Takes what the protocol wrote and its events, checking both.
    fn drain(&mut self) {
        let mut out = Vec::new();
        self.p.take_transmit(&mut out);
        let mut rest = out.as_slice();
        while !rest.is_empty() {
            let len = rest
                .first_chunk::<4>()
                .map(|l| u32::from_be_bytes(*l) as usize + 4)
                .expect("transmitted a partial length field");
            assert!(len <= rest.len(), "transmitted a partial frame");
            let (header, body) =
                frame::split_frame(&rest[..len]).expect("transmitted a malformed frame");
            if header.stype == SType::Data {
                Item::decode_body(body, &Default::default()).expect("transmitted a bad body");
            } else {
                assert!(body.is_empty(), "control frame with a body");
            }
            rest = &rest[len..];
        }
        while let Some(event) = self.p.poll_event() {
            if let Event::Closed(_) = event {
                assert_eq!(
                    self.p.state(),
                    State::NotConnected,
                    "closed but still connected"
                );
            }
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.p.handle_input(bytes, self.now);
        self.drain();
    }

    fn feed_frame(&mut self, header: Header, body: &[u8]) {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(10 + body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&header.to_bytes());
        bytes.extend_from_slice(body);
        self.feed(&bytes);
    }

    fn timeout(&mut self) {
        self.p.handle_timeout(self.now);
        self.drain();
    }

    /// Moves to the next deadline, runs the timers, and checks that the protocol does not
    /// want to run again before time moves on (allowing a second pass for work one pass
    /// schedules).
    fn next_deadline(&mut self) {
        let Some(deadline) = self.p.poll_timeout() else {
            return;
        };
        self.now = self.now.max(deadline);
        for _ in 0..2 {
            self.timeout();
            if self.p.poll_timeout().is_none_or(|t| t > self.now) {
                return;
            }
        }
        panic!(
            "busy loop: poll_timeout is still {:?} after handle_timeout at that time",
            self.p
                .poll_timeout()
                .map(|t| t.saturating_duration_since(self.now))
        );
    }

    fn select(&mut self, role: Role) {
        self.p.connected(self.now);
        match role {
            Role::Passive => {
                self.feed_frame(Header::control(SType::SelectReq, 0x1234), &[]);
            }
            Role::Active => {
                let mut out = Vec::new();
                self.p.take_transmit(&mut out);
                let (req, _) = frame::split_frame(&out).expect("Select.req");
                assert_eq!(req.stype, SType::SelectReq);
                self.feed_frame(Header::control(SType::SelectRsp, req.system_bytes), &[]);
            }
        }
        assert_eq!(self.p.state(), State::Selected);
    }
}

/// Takes `n` bytes (fewer at the end).
fn take<'a>(ops: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = ops.split_at(n.min(ops.len()));
    *ops = tail;
    head
}

fn byte(ops: &mut &[u8]) -> u8 {
    take(ops, 1).first().copied().unwrap_or(0)
}

fuzz_target!(|data: &[u8]| {
    let mut ops = data;
    let setup = byte(&mut ops);
    let role = if setup & 1 == 0 {
        Role::Passive
    } else {
        Role::Active
    };
    let config = Config {
        t3: Duration::from_secs(45),
        t6: Duration::from_secs(5),
        t7: Duration::from_secs(10),
        t8: Duration::from_secs(5),
        linktest: (setup & 2 != 0).then(|| Duration::from_secs(30)),
        max_message_size: 4096,
        ..Config::default()
    };
    let mut h = Harness {
        p: Protocol::new(config, role),
        now: Instant::now(),
        held: false,
    };
    match (setup >> 2) % 3 {
        0 => {}
        1 => {
            h.p.connected(h.now);
            h.drain();
        }
        _ => {
            h.select(role);
            h.drain();
        }
    }
    while !ops.is_empty() {
        match byte(&mut ops) % 14 {
            // Raw bytes from the peer, in one chunk.
            0 => {
                let n = usize::from(byte(&mut ops));
                let chunk = take(&mut ops, n);
                h.feed(chunk);
            }
            // A well-formed frame with fuzzed header fields and body.
            1 => {
                let f = take(&mut ops, 6);
                let get = |i: usize| f.get(i).copied().unwrap_or(0);
                let stype = SType::from_code(get(0) % 11);
                let header = Header {
                    session_id: if stype == SType::Data {
                        u16::from(get(1))
                    } else {
                        0xFFFF
                    },
                    byte2: get(2),
                    byte3: get(3),
                    ptype: u8::from(get(4) == 0xFF),
                    stype,
                    system_bytes: u32::from(get(5) % 16),
                };
                let n = if stype == SType::Data {
                    usize::from(byte(&mut ops) % 32)
                } else {
                    0
                };
                let body = take(&mut ops, n);
                h.feed_frame(header, body);
            }
            // Time passes.
            2 => {
                h.now += Duration::from_millis(u64::from(byte(&mut ops)) * 250);
                h.timeout();
            }
            3 => h.next_deadline(),
            // We send a data message (primary or reply, W-bit or not).
            4 => {
                let f = take(&mut ops, 3);
                let get = |i: usize| f.get(i).copied().unwrap_or(0);
                let mut message = Message::new(
                    StreamFunction {
                        stream: get(0) & 0x7F,
                        function: get(1),
                    },
                    get(0) & 0x80 != 0,
                    (get(2) != 0).then(|| Item::B(vec![0; usize::from(get(2)) * 20])),
                );
                message.system_bytes = u32::from(get(2) % 16);
                let _ = h.p.send(message, h.now);
                h.drain();
            }
            5 => {
                let _ = h.p.linktest(h.now);
                h.drain();
            }
            6 => {
                let _ = h.p.deselect(h.now);
                h.drain();
            }
            7 => {
                h.p.separate();
                h.drain();
            }
            8 => {
                h.p.disconnected(CloseReason::PeerClosed);
                h.drain();
            }
            9 => {
                if h.p.state() == State::NotConnected {
                    h.p.connected(h.now);
                    h.drain();
                }
            }
            10 => {
                h.held = !h.held;
                h.p.hold_input(h.held, h.now);
            }
            11 => {
                let sb = u32::from(byte(&mut ops) % 16);
                let _ = h.p.cancel_transaction(sb);
                h.drain();
            }
            // Raw bytes fed one at a time (a frame trickling in).
            12 => {
                let n = usize::from(byte(&mut ops) % 32);
                for &b in take(&mut ops, n) {
                    h.feed(&[b]);
                }
            }
            // Reconnect and select from scratch.
            _ => {
                if h.p.state() == State::NotConnected {
                    h.select(role);
                    h.drain();
                }
            }
        }
    }
    h.next_deadline();
});
