//! The SECS-I protocol state machine on arbitrary input, as host or equipment, master or
//! slave, with simulated time: bytes from the peer (raw, and well-formed blocks with fuzzed
//! headers), sends of any size, timers, back-pressure, a closed line. It must never panic,
//! every block it transmits must have a valid length and checksum, and after its timers have
//! run at their deadline it must not ask to be woken again in the past (no busy loop).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use secsgate::secs1::block::{self, Block, Header, ACK, ENQ, EOT, NAK};
use secsgate::secs1::protocol::{Config, Protocol};
use secsgate::secs2::{Item, Message, StreamFunction};

struct Harness {
    p: Protocol,
    now: Instant,
    held: bool,
}

impl Harness {
    /// Takes what the protocol wrote and its events, checking what was written: control
    /// characters, or whole blocks with a valid length and checksum.
    fn drain(&mut self) {
        let mut out = Vec::new();
        self.p.take_transmit(&mut out);
        let mut rest = out.as_slice();
        while let Some((&first, tail)) = rest.split_first() {
            if matches!(first, ENQ | EOT | ACK | NAK) {
                rest = tail;
                continue;
            }
            let len = usize::from(first) + 3;
            assert!(len <= rest.len(), "transmitted a partial block");
            Block::decode(&rest[..len]).expect("transmitted a bad block");
            rest = &rest[len..];
        }
        while self.p.poll_event().is_some() {}
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.p.handle_input(bytes, self.now);
        self.drain();
    }

    fn timeout(&mut self) {
        self.p.handle_timeout(self.now);
        self.drain();
    }

    /// Moves to the next deadline and runs the timers; the protocol must not want to run
    /// again before time moves on (a second pass is allowed for work one pass schedules).
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
        panic!("busy loop: poll_timeout is still due after handle_timeout at that time");
    }
}

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
    let mut config = if setup & 1 == 0 {
        Config::host(u16::from(setup >> 4))
    } else {
        Config::equipment(u16::from(setup >> 4))
    };
    if setup & 2 != 0 {
        config.master = !config.master;
    }
    config.duplicate_detection = setup & 4 == 0;
    config.retry = (setup >> 3) & 3;
    config.max_message_size = 4096;
    let mut h = Harness {
        p: Protocol::new(config),
        now: Instant::now(),
        held: false,
    };
    while !ops.is_empty() {
        match byte(&mut ops) % 9 {
            // Raw bytes from the peer.
            0 => {
                let n = usize::from(byte(&mut ops));
                let chunk = take(&mut ops, n);
                h.feed(chunk);
            }
            // A well-formed block with fuzzed header fields and data.
            1 => {
                let f = take(&mut ops, 6);
                let get = |i: usize| f.get(i).copied().unwrap_or(0);
                let header = Header {
                    r_bit: get(0) & 1 != 0,
                    device_id: u16::from(get(0) >> 4),
                    w_bit: get(0) & 2 != 0,
                    stream: get(1) & 0x7F,
                    function: get(2),
                    e_bit: get(3) & 0x80 != 0,
                    block_number: u16::from(get(3) & 0x7F),
                    system_bytes: u32::from(get(4) % 8),
                };
                let n = usize::from(get(5)).min(block::MAX_DATA);
                let data = take(&mut ops, n).to_vec();
                let mut bytes = vec![ENQ];
                Block { header, data }.encode(&mut bytes);
                h.feed(&bytes);
            }
            // Time passes.
            2 => {
                h.now += Duration::from_millis(u64::from(byte(&mut ops)) * 100);
                h.timeout();
            }
            3 => h.next_deadline(),
            // We send a message (primary or reply, W-bit or not, one block or many).
            4 => {
                let f = take(&mut ops, 3);
                let get = |i: usize| f.get(i).copied().unwrap_or(0);
                let mut message = Message::new(
                    StreamFunction {
                        stream: get(0) & 0x7F,
                        function: get(1),
                    },
                    get(0) & 0x80 != 0,
                    (get(2) != 0).then(|| Item::B(vec![0; usize::from(get(2)) * 7])),
                );
                message.system_bytes = u32::from(get(2) % 8);
                let _ = h.p.send(message, h.now);
                h.drain();
            }
            5 => {
                h.held = !h.held;
                h.p.hold_input(h.held, h.now);
                h.drain();
            }
            6 => {
                let sb = u32::from(byte(&mut ops) % 8);
                let _ = h.p.cancel_transaction(sb);
                h.drain();
            }
            7 => {
                h.p.line_closed();
                h.drain();
            }
            // The peer's control characters, one at a time.
            _ => {
                let n = usize::from(byte(&mut ops) % 8);
                for &b in take(&mut ops, n) {
                    h.feed(&[[ENQ, EOT, ACK, NAK][usize::from(b % 4)]]);
                }
            }
        }
    }
    h.next_deadline();
});
