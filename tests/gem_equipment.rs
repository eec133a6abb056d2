//! The GEM equipment engine driven deterministically, with no sockets and no sleeps: every
//! message of the GEM tool table with correct and incorrect input, the communication and
//! control state machines, spooling, traces, limits, alarms, stream 9.

mod gem_common;

use std::time::{Duration, Instant, SystemTime};

use secsgate::gem::spool::MemorySpool;
use secsgate::gem::{
    Action, CommunicationState, ControlState, Equipment, MemoryPrograms, Outcome, Tag, hsms_header,
};
use secsgate::secs2::sml::{parse_item, parse_message};
use secsgate::secs2::{Item, Message};
use secsgate::sim::SimConfig;

struct Rig {
    eq: Equipment,
    now: Instant,
    system_bytes: u32,
}

fn item(sml: &str) -> Item {
    parse_item(sml).unwrap_or_else(|e| panic!("bad SML in test {sml}: {e}"))
}

impl Rig {
    /// A communicating equipment from `config`.
    fn with(config: &str) -> Rig {
        let config = SimConfig::parse(config, "test.toml", None).unwrap();
        let now = Instant::now();
        let eq = Equipment::new(
            config.model,
            Box::new(MemorySpool::default()),
            Box::new(MemoryPrograms::default()),
            now,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        let mut rig = Rig {
            eq,
            now,
            system_bytes: 100,
        };
        rig.connect();
        rig
    }

    fn new() -> Rig {
        Rig::with(gem_common::TEST_CONFIG)
    }

    /// Link up, S1F13 from the equipment answered with COMMACK 0.
    fn connect(&mut self) {
        self.eq.link_up(self.now);
        let (m, tag) = self.primary();
        assert_eq!((m.stream, m.function), (1, 13));
        assert_eq!(m.body, Some(item(r#"<L [2] <A "TESTER"> <A "9.9">>"#)));
        self.answer(tag, "S1F14 <L [2] <B 0> <L>>");
        assert_eq!(
            self.eq.communication_state(),
            CommunicationState::Communicating
        );
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.eq.poll_action()).collect()
    }

    fn messages(&mut self) -> Vec<Message> {
        self.actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Send { message, .. } => Some(message),
                _ => None,
            })
            .collect()
    }

    /// The one W-bit primary the equipment sent, with its tag.
    fn primary(&mut self) -> (Message, Tag) {
        let sent: Vec<_> = self
            .actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Send {
                    message,
                    tag: Some(t),
                } => Some((message, t)),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), 1, "expected one primary, got {sent:?}");
        sent.into_iter().next().unwrap()
    }

    fn answer(&mut self, tag: Tag, sml: &str) {
        let reply = parse_message(sml).unwrap();
        self.eq.outcome(tag, Outcome::Reply(reply), self.now);
    }

    fn send(&mut self, sml: &str) {
        let mut m = parse_message(sml).unwrap();
        self.system_bytes += 1;
        m.system_bytes = self.system_bytes;
        self.eq.receive(m, self.now);
    }

    /// Sends a primary and returns every message the equipment sent in response, the reply
    /// first.
    fn exchange(&mut self, sml: &str) -> Vec<Message> {
        self.send(sml);
        self.messages()
    }

    /// Sends a primary and returns the reply's body (checking S/F and system bytes).
    fn ask(&mut self, sml: &str) -> Option<Item> {
        let sent = self.exchange(sml);
        let reply = sent.first().unwrap_or_else(|| panic!("no reply to {sml}"));
        let primary = parse_message(sml).unwrap();
        assert_eq!(
            (reply.stream, reply.function, reply.system_bytes),
            (primary.stream, primary.function + 1, self.system_bytes),
            "reply to {sml}: {reply}"
        );
        reply.body.clone()
    }

    fn ack(&mut self, sml: &str) -> u8 {
        match self.ask(sml) {
            Some(Item::B(b)) if b.len() == 1 => b[0],
            other => panic!("{sml}: expected a one-byte ack, got {other:?}"),
        }
    }

    fn expect(&mut self, sml: &str, body: &str) {
        assert_eq!(self.ask(sml), Some(item(body)), "{sml}");
    }

    /// The stream 9 function the equipment answered with.
    fn stream_nine(&mut self, sml: &str) -> (u8, Vec<u8>) {
        let sent = self.exchange(sml);
        match sent.as_slice() {
            [m] if m.stream == 9 && !m.w_bit => match &m.body {
                Some(Item::B(h)) => (m.function, h.clone()),
                other => panic!("S9 without MHEAD: {other:?}"),
            },
            other => panic!("{sml}: expected one S9 message, got {other:?}"),
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.eq.handle_timeout(self.now);
    }
}

#[test]
fn s1f1_and_s1f13_identify_the_equipment() {
    let mut r = Rig::new();
    r.expect("S1F1 W", r#"<L [2] <A "TESTER"> <A "9.9">>"#);
    r.expect(
        "S1F13 W <L>",
        r#"<L [2] <B 0> <L [2] <A "TESTER"> <A "9.9">>>"#,
    );
}

#[test]
fn s1f3_values_all_unknown_and_illegal() {
    let mut r = Rig::new();
    r.expect(
        "S1F3 W <L [3] <U4 1> <U2 3> <U4 999>>",
        r#"<L [3] <F4 20> <A "L1"> <L>>"#,
    );
    // A DV or an EC is not a status variable.
    r.expect("S1F3 W <L [2] <U4 10> <U4 20>>", "<L [2] <L> <L>>");
    r.expect("S1F3 W <L [1] <U4 2002>>", "<L [1] <U1 5>>");
    let all = r.ask("S1F3 W <L>").unwrap();
    assert_eq!(
        all.as_list().unwrap().len(),
        3 + 17,
        "3 SVs + 17 standard SVs"
    );
    assert_eq!(r.stream_nine("S1F3 W <U4 1>").0, 7);
    assert_eq!(r.stream_nine("S1F3 W <L [1] <F4 1.0>>").0, 7);
    assert_eq!(r.stream_nine("S1F3 W").0, 7);
}

#[test]
fn s1f11_s1f21_s1f23_namelists() {
    let mut r = Rig::new();
    r.expect(
        "S1F11 W <L [2] <U4 1> <U4 77>>",
        r#"<L [2] <L [3] <U4 1> <A "Temp"> <A "C">> <L [3] <U4 77> <A> <A>>>"#,
    );
    r.expect(
        "S1F21 W <L [2] <U4 10> <U4 1>>",
        r#"<L [2] <L [3] <U4 10> <A "Wafer"> <A>> <L [3] <U4 1> <A> <A>>>"#,
    );
    r.expect(
        "S1F23 W <L [2] <U4 32> <U4 99>>",
        r#"<L [2] <L [3] <U4 32> <A "Started"> <L [1] <U4 10>>> <L [3] <U4 99> <A> <L>>>"#,
    );
    let all = r.ask("S1F23 W <L>").unwrap();
    assert_eq!(all.as_list().unwrap().len(), 4 + 7);
    assert_eq!(r.stream_nine("S1F23 W <A \"x\">").0, 7);
}

#[test]
fn control_state_host_offline_and_online() {
    let mut r = Rig::new();
    assert_eq!(r.ack("S1F17 W"), 2, "already ON-LINE");
    assert_eq!(r.ack("S1F15 W"), 0);
    assert_eq!(r.eq.control_state(), ControlState::HostOffline);
    // OFF-LINE: other primaries are aborted with SxF0.
    let sent = r.exchange("S1F3 W <L>");
    assert_eq!((sent[0].stream, sent[0].function), (1, 0));
    assert_eq!(sent[0].system_bytes, r.system_bytes);
    let sent = r.exchange("S2F13 W <L>");
    assert_eq!((sent[0].stream, sent[0].function), (2, 0));
    // S1F13 is still answered.
    r.expect(
        "S1F13 W <L>",
        r#"<L [2] <B 0> <L [2] <A "TESTER"> <A "9.9">>>"#,
    );
    assert_eq!(r.ack("S1F17 W"), 0);
    assert_eq!(r.eq.control_state(), ControlState::OnlineRemote);
    // The switch to ON-LINE reported ControlStateRemote only if enabled: nothing sent.
    assert!(r.messages().is_empty());
}

#[test]
fn operator_offline_refuses_host_online_and_attempt_online_uses_s1f1() {
    let mut r = Rig::new();
    r.eq.operator_offline(r.now);
    assert_eq!(r.eq.control_state(), ControlState::EquipmentOffline);
    assert_eq!(r.ack("S1F17 W"), 1, "not allowed from EQUIPMENT OFF-LINE");
    r.eq.operator_online(r.now);
    assert_eq!(r.eq.control_state(), ControlState::AttemptOnline);
    let (m, tag) = r.primary();
    assert_eq!((m.stream, m.function, m.w_bit), (1, 1, true));
    r.answer(tag, "S1F2 <L>");
    assert_eq!(r.eq.control_state(), ControlState::OnlineRemote);
    // A failed attempt goes to the OnLineFailed substate (HOST OFF-LINE here).
    r.eq.operator_offline(r.now);
    r.eq.operator_online(r.now);
    let (_, tag) = r.primary();
    r.eq.outcome(tag, Outcome::Failed, r.now);
    assert_eq!(r.eq.control_state(), ControlState::HostOffline);
    // LOCAL refuses remote commands.
    assert_eq!(r.ack("S1F17 W"), 0);
    r.eq.operator_remote(false, r.now);
    assert_eq!(r.eq.control_state(), ControlState::OnlineLocal);
    r.expect("S2F41 W <L [2] <A \"STOP\"> <L>>", "<L [2] <B 2> <L>>");
}

#[test]
fn communication_wait_delay_and_not_communicating() {
    let mut r = Rig::new();
    r.eq.link_down(r.now);
    assert_eq!(r.eq.communication_state(), CommunicationState::WaitCra);
    r.eq.link_up(r.now);
    let (_, tag) = r.primary();
    // COMMACK 1: WAIT DELAY for EstablishCommunicationsTimeout (1 s).
    r.answer(tag, "S1F14 <L [2] <B 1> <L>>");
    assert_eq!(r.eq.communication_state(), CommunicationState::WaitDelay);
    assert_eq!(r.eq.poll_timeout(), Some(r.now + Duration::from_secs(1)));
    // Not communicating: no answer to anything but S1F13.
    assert!(
        r.exchange("S1F1 W").is_empty()
            || r.eq.communication_state() == CommunicationState::WaitCra
    );
    // ...and a message in WAIT DELAY sent S1F13 again (WAIT CRA).
    assert_eq!(r.eq.communication_state(), CommunicationState::WaitCra);
    // T3 on that S1F13: S9F9, then WAIT DELAY; the delay expires: S1F13 again.
    r.send("S1F3 W <L>");
    let _ = r.messages();
    r.eq.link_down(r.now);
    r.eq.link_up(r.now);
    let (m, tag) = r.primary();
    let shead = hsms_header(&Message {
        system_bytes: 7,
        ..m
    });
    r.eq.outcome(tag, Outcome::Timeout { shead }, r.now);
    let s9 = r.messages();
    assert_eq!((s9[0].stream, s9[0].function), (9, 9));
    assert_eq!(s9[0].body, Some(Item::B(shead.to_vec())));
    assert_eq!(r.eq.communication_state(), CommunicationState::WaitDelay);
    r.advance(Duration::from_secs(1));
    let (m, tag) = r.primary();
    assert_eq!((m.stream, m.function), (1, 13));
    // The host's S1F13 establishes communication from any NOT COMMUNICATING state.
    r.expect(
        "S1F13 W <L>",
        r#"<L [2] <B 0> <L [2] <A "TESTER"> <A "9.9">>>"#,
    );
    assert_eq!(
        r.eq.communication_state(),
        CommunicationState::Communicating
    );
    r.answer(tag, "S1F14 <L [2] <B 0> <L>>");
    assert_eq!(
        r.eq.communication_state(),
        CommunicationState::Communicating
    );
}

#[test]
fn equipment_constants_s2f13_s2f15_s2f29() {
    let mut r = Rig::new();
    r.expect(
        "S2F13 W <L [3] <U4 20> <U4 21> <U4 5>>",
        r#"<L [3] <F4 80> <A "T1"> <L>>"#,
    );
    assert_eq!(
        r.ack("S2F15 W <L [2] <L [2] <U4 20> <U1 90>> <L [2] <U4 21> <A \"T2\">>>"),
        0
    );
    r.expect(
        "S2F13 W <L [2] <U4 20> <U4 21>>",
        r#"<L [2] <F4 90> <A "T2">>"#,
    );
    assert_eq!(
        r.ack("S2F15 W <L [1] <L [2] <U4 99> <U4 1>>>"),
        1,
        "unknown ECID"
    );
    assert_eq!(
        r.ack("S2F15 W <L [1] <L [2] <U4 20> <F4 151>>>"),
        3,
        "above ECMAX"
    );
    assert_eq!(
        r.ack("S2F15 W <L [1] <L [2] <U4 20> <A \"hot\">>>"),
        3,
        "not a number"
    );
    // All or nothing: a valid change beside an invalid one is not made.
    assert_eq!(
        r.ack("S2F15 W <L [2] <L [2] <U4 20> <F4 10>> <L [2] <U4 99> <U4 1>>>"),
        1
    );
    r.expect("S2F13 W <L [1] <U4 20>>", "<L [1] <F4 90>>");
    assert_eq!(r.stream_nine("S2F15 W <L [1] <L [1] <U4 20>>>").0, 7);
    r.expect(
        "S2F29 W <L [2] <U4 20> <U4 98>>",
        r#"<L [2] <L [6] <U4 20> <A "MaxTemp"> <F4 0> <F4 150> <F4 80> <A "C">> <L [6] <U4 98> <A> <A> <A> <A> <A>>>"#,
    );
    // Standard ECs are there; TimeFormat changes the Clock's form.
    assert_eq!(r.ack("S2F15 W <L [1] <L [2] <U4 2207> <U1 0>>>"), 0);
    match r.ask("S2F17 W") {
        Some(Item::A(t)) => assert_eq!(t.len(), 12),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.ack("S2F15 W <L [1] <L [2] <U4 2207> <U1 3>>>"),
        3,
        "TimeFormat is 0..=2"
    );
}

#[test]
fn clock_s2f17_s2f31() {
    let mut r = Rig::new();
    r.expect("S2F17 W", r#"<A "2023111422132000">"#);
    assert_eq!(r.ack(r#"S2F31 W <A "2030010203040500">"#), 0);
    r.advance(Duration::from_millis(1500));
    r.expect("S2F17 W", r#"<A "2030010203040650">"#);
    assert_eq!(r.ack(r#"S2F31 W <A "300102030405">"#), 0);
    r.expect("S2F17 W", r#"<A "2030010203040500">"#);
    assert_eq!(r.ack(r#"S2F31 W <A "2030-01-02T03:04:05Z">"#), 0);
    assert_eq!(r.ack(r#"S2F31 W <A "20301302030405">"#), 1);
    assert_eq!(r.ack(r#"S2F31 W <A "yesterday">"#), 1);
    assert_eq!(r.stream_nine("S2F31 W <U4 1>").0, 7);
    r.expect(
        "S1F3 W <L [1] <U4 2001>>",
        r#"<L [1] <A "2030010203040500">>"#,
    );
}

#[test]
fn s2f25_loopback() {
    let mut r = Rig::new();
    r.expect("S2F25 W <B 1 2 3>", "<B 1 2 3>");
    assert_eq!(r.stream_nine("S2F25 W <L>").0, 7);
}

#[test]
fn reports_links_enable_and_s6f11() {
    let mut r = Rig::new();
    // Report 100 is predefined; define 101 with a DV and an SV.
    assert_eq!(
        r.ack("S2F33 W <L [2] <U4 1> <L [1] <L [2] <U4 101> <L [2] <U4 10> <U4 2>>>>>"),
        0
    );
    assert_eq!(
        r.ack("S2F33 W <L [2] <U4 1> <L [1] <L [2] <U4 101> <L [1] <U4 1>>>>>"),
        3,
        "RPTID defined"
    );
    assert_eq!(
        r.ack("S2F33 W <L [2] <U4 1> <L [1] <L [2] <U4 102> <L [1] <U4 999>>>>>"),
        4,
        "unknown VID"
    );
    assert_eq!(r.ack("S2F33 W <L [2] <U4 1> <L [2] <L [2] <U4 103> <L [1] <U4 1>>> <L [2] <U4 103> <L [1] <U4 1>>>>>"), 3);
    assert_eq!(
        r.ack("S2F33 W <L [2] <U4 1> <L [1] <L [2] <F4 1.5> <L [1] <U4 1>>>>>"),
        2,
        "invalid format"
    );
    assert_eq!(
        r.stream_nine("S2F33 W <L [2] <U4 1> <L [1] <L [1] <U4 103>>>>")
            .0,
        7
    );
    // Link to event 32.
    assert_eq!(
        r.ack("S2F35 W <L [2] <U4 1> <L [1] <L [2] <U4 32> <L [2] <U4 100> <U4 101>>>>>"),
        0
    );
    assert_eq!(
        r.ack("S2F35 W <L [2] <U4 1> <L [1] <L [2] <U4 32> <L [1] <U4 100>>>>>"),
        3,
        "already linked"
    );
    assert_eq!(
        r.ack("S2F35 W <L [2] <U4 1> <L [1] <L [2] <U4 77> <L [1] <U4 100>>>>>"),
        4,
        "unknown CEID"
    );
    assert_eq!(
        r.ack("S2F35 W <L [2] <U4 1> <L [1] <L [2] <U4 31> <L [1] <U4 555>>>>>"),
        5,
        "unknown RPTID"
    );
    // Not enabled yet: nothing is sent.
    r.eq.trigger_event(32, r.now).unwrap();
    assert!(r.messages().is_empty());
    assert_eq!(r.ack("S2F37 W <L [2] <BOOLEAN TRUE> <L [1] <U4 77>>>"), 1);
    assert_eq!(r.ack("S2F37 W <L [2] <BOOLEAN TRUE> <L [1] <U4 32>>>"), 0);
    r.eq.trigger_event(32, r.now).unwrap();
    let (m, tag) = r.primary();
    assert_eq!((m.stream, m.function, m.w_bit), (6, 11, true));
    assert_eq!(
        m.body,
        Some(item(
            r#"<L [3] <U4 1> <U4 32> <L [2] <L [2] <U4 100> <L [2] <F4 20> <A "L1">>> <L [2] <U4 101> <L [2] <A "W1"> <U4 0>>>>>"#
        ))
    );
    r.answer(tag, "S6F12 <B 0>");
    assert!(r.eq.trigger_event(999, r.now).is_err());
    // S6F15/17/19/21 read the same data on request.
    r.expect(
        "S6F15 W <U4 32>",
        r#"<L [3] <U4 2> <U4 32> <L [2] <L [2] <U4 100> <L [2] <F4 20> <A "L1">>> <L [2] <U4 101> <L [2] <A "W1"> <U4 0>>>>>"#,
    );
    r.expect(
        "S6F17 W <U4 32>",
        r#"<L [3] <U4 3> <U4 32> <L [2] <L [2] <U4 100> <L [2] <L [2] <U4 1> <F4 20>> <L [2] <U4 3> <A "L1">>>> <L [2] <U4 101> <L [2] <L [2] <U4 10> <A "W1">> <L [2] <U4 2> <U4 0>>>>>>"#,
    );
    r.expect("S6F15 W <U4 999>", "<L>");
    r.expect("S6F19 W <U4 101>", r#"<L [2] <A "W1"> <U4 0>>"#);
    r.expect("S6F19 W <U4 555>", "<L>");
    r.expect(
        "S6F21 W <U4 100>",
        r#"<L [2] <L [2] <U4 1> <F4 20>> <L [2] <U4 3> <A "L1">>>"#,
    );
    assert_eq!(r.stream_nine("S6F19 W <L>").0, 7);
    // Unlink, delete one report, delete all.
    assert_eq!(
        r.ack("S2F35 W <L [2] <U4 1> <L [1] <L [2] <U4 32> <L>>>>"),
        0
    );
    assert!(r.eq.links().is_empty());
    assert_eq!(
        r.ack("S2F33 W <L [2] <U4 1> <L [1] <L [2] <U4 101> <L>>>>"),
        0
    );
    assert!(!r.eq.reports().contains_key(&101));
    assert_eq!(r.ack("S2F33 W <L [2] <U4 1> <L>>"), 0);
    assert!(r.eq.reports().is_empty());
    // Enable all / disable all.
    assert_eq!(r.ack("S2F37 W <L [2] <BOOLEAN FALSE> <L>>"), 0);
    r.expect("S1F3 W <L [1] <U4 2004>>", "<L [1] <L>>");
}

#[test]
fn variable_triggers_fire_events() {
    let mut r = Rig::new();
    assert_eq!(r.ack("S2F37 W <L [2] <BOOLEAN TRUE> <L [1] <U4 31>>>"), 0);
    r.eq.set_variable(2, Item::U4(vec![4]), r.now).unwrap();
    assert!(r.messages().is_empty());
    r.eq.set_variable(2, Item::U4(vec![5]), r.now).unwrap();
    let (m, _) = r.primary();
    assert_eq!(m.body, Some(item("<L [3] <U4 1> <U4 31> <L>>")));
    assert!(
        r.eq.set_variable(2001, Item::ascii("x"), r.now).is_err(),
        "Clock is computed"
    );
    assert!(r.eq.set_variable(4242, Item::U4(vec![1]), r.now).is_err());
}

#[test]
fn trace_s2f23_samples_groups_and_stops() {
    let mut r = Rig::new();
    let trace = |trid: &str, dsper: &str, tot: u32, grp: u32, svids: &str| {
        format!(r#"S2F23 W <L [5] <U4 {trid}> <A "{dsper}"> <U4 {tot}> <U4 {grp}> <L {svids}>>"#)
    };
    assert_eq!(
        r.ack(&trace("1", "000000", 4, 2, "<U4 1>")),
        3,
        "zero period"
    );
    assert_eq!(r.ack(&trace("1", "0000x1", 4, 2, "<U4 1>")), 3);
    assert_eq!(
        r.ack(&trace("1", "00000010", 4, 2, "<U4 10>")),
        4,
        "a DV is not an SV"
    );
    assert_eq!(
        r.ack(&trace("1", "00000010", 4, 5, "<U4 1>")),
        5,
        "REPGSZ > TOTSMP"
    );
    assert_eq!(r.ack(&trace("1", "00000010", 4, 0, "<U4 1>")), 5);
    assert_eq!(
        r.stream_nine("S2F23 W <L [3] <U4 1> <A \"000001\"> <U4 1>>")
            .0,
        7
    );
    assert_eq!(r.ack(&trace("7", "00000010", 4, 2, "<U4 1> <U4 3>")), 0);
    r.advance(Duration::from_millis(100));
    assert!(r.messages().is_empty(), "first sample kept for its group");
    r.eq.set_variable(1, Item::F4(vec![21.0]), r.now).unwrap();
    r.advance(Duration::from_millis(100));
    let (m, tag) = r.primary();
    assert_eq!((m.stream, m.function), (6, 1));
    let body = m.body.unwrap();
    let parts = body.as_list().unwrap();
    assert_eq!(parts[0], Item::U4(vec![7]));
    assert_eq!(
        parts[1],
        Item::U4(vec![2]),
        "SMPLN of the group's last sample"
    );
    assert_eq!(
        parts[3],
        item(r#"<L [4] <F4 20> <A "L1"> <F4 21> <A "L1">>"#)
    );
    r.answer(tag, "S6F2 <B 0>");
    // Stop with TOTSMP 0: nothing more.
    assert_eq!(r.ack(&trace("7", "00000010", 0, 0, "")), 0);
    assert_eq!(r.eq.poll_timeout(), None);
    // A trace of 1 sample: sent and finished.
    assert_eq!(r.ack(&trace("8", "000001", 1, 1, "<U4 2>")), 0);
    r.advance(Duration::from_secs(1));
    let (m, _) = r.primary();
    assert_eq!(
        m.body.unwrap().as_list().unwrap()[3],
        item("<L [1] <U4 0>>")
    );
    assert_eq!(r.eq.poll_timeout(), None);
}

#[test]
fn limits_s2f45_s2f47_and_crossings() {
    let mut r = Rig::new();
    let define = "S2F45 W <L [2] <U4 1> <L [1] <L [2] <U4 1> <L [1] <L [2] <U1 1> <L [2] <F4 50> <F4 40>>>>>>>";
    r.expect(define, "<L [2] <B 0> <L>>");
    r.expect(
        "S2F47 W <L [2] <U4 1> <U4 2>>",
        r#"<L [2] <L [2] <U4 1> <L [4] <A "C"> <F4 0> <F4 100> <L [1] <L [3] <U1 1> <F4 50> <F4 40>>>>> <L [2] <U4 2> <L>>>"#,
    );
    assert_eq!(r.ask("S2F47 W <L>").unwrap().as_list().unwrap().len(), 1);
    // Errors: unknown variable, no capability, repeated, bad limits.
    r.expect(
        "S2F45 W <L [2] <U4 1> <L [1] <L [2] <U4 999> <L>>>>",
        "<L [2] <B 1> <L [1] <L [3] <U4 999> <B 1> <L>>>>",
    );
    r.expect(
        "S2F45 W <L [2] <U4 1> <L [1] <L [2] <U4 2> <L>>>>",
        "<L [2] <B 1> <L [1] <L [3] <U4 2> <B 2> <L>>>>",
    );
    r.expect(
        "S2F45 W <L [2] <U4 1> <L [2] <L [2] <U4 1> <L>> <L [2] <U4 1> <L>>>>",
        "<L [2] <B 1> <L [1] <L [3] <U4 1> <B 3> <L>>>>",
    );
    for (limit, code) in [
        ("<U1 3> <L [2] <F4 5> <F4 1>>", 1),
        ("<U1 1> <L [2] <F4 500> <F4 1>>", 2),
        ("<U1 1> <L [2] <F4 5> <F4 -1>>", 3),
        ("<U1 1> <L [2] <F4 1> <F4 5>>", 4),
        ("<U1 1> <L [2] <A \"x\"> <F4 5>>", 5),
    ] {
        let msg = format!("S2F45 W <L [2] <U4 1> <L [1] <L [2] <U4 1> <L [1] <L [2] {limit}>>>>>");
        let id = limit.split('>').next().unwrap().to_string() + ">";
        r.expect(
            &msg,
            &format!("<L [2] <B 1> <L [1] <L [3] <U4 1> <B 4> <L [2] {id} <B {code}>>>>>"),
        );
    }
    // Crossing: value 20 (lower zone) -> 55 (upper): event 30 with the limit DVs.
    assert_eq!(
        r.ack(
            "S2F33 W <L [2] <U4 1> <L [1] <L [2] <U4 5> <L [3] <U4 2104> <U4 2105> <U4 2106>>>>>"
        ),
        0
    );
    assert_eq!(
        r.ack("S2F35 W <L [2] <U4 1> <L [1] <L [2] <U4 30> <L [1] <U4 5>>>>>"),
        0
    );
    assert_eq!(r.ack("S2F37 W <L [2] <BOOLEAN TRUE> <L [1] <U4 30>>>"), 0);
    r.eq.set_variable(1, Item::F4(vec![45.0]), r.now).unwrap();
    assert!(r.messages().is_empty(), "inside the deadband");
    r.eq.set_variable(1, Item::F4(vec![55.0]), r.now).unwrap();
    let (m, _) = r.primary();
    assert_eq!(
        m.body.unwrap().as_list().unwrap()[2],
        item("<L [1] <L [2] <U4 5> <L [3] <U4 1> <U1 1> <U1 0>>>>")
    );
    r.eq.set_variable(1, Item::F4(vec![45.0]), r.now).unwrap();
    assert!(r.messages().is_empty());
    r.eq.set_variable(1, Item::F4(vec![35.0]), r.now).unwrap();
    let (m, _) = r.primary();
    assert_eq!(
        m.body.unwrap().as_list().unwrap()[2],
        item("<L [1] <L [2] <U4 5> <L [3] <U4 1> <U1 1> <U1 1>>>>")
    );
    // Undefine all.
    r.expect("S2F45 W <L [2] <U4 1> <L>>", "<L [2] <B 0> <L>>");
    assert!(r.eq.limits_of(1).is_empty());
}

#[test]
fn alarms_s5f1_s5f3_s5f5_s5f7() {
    let mut r = Rig::new();
    r.expect("S5F7 W", r#"<L [1] <L [3] <B 7> <U4 2> <A "door open">>>"#);
    assert_eq!(r.ack("S5F3 W <L [2] <B 128> <U4 1>>"), 0);
    assert_eq!(r.ack("S5F3 W <L [2] <B 128> <U4 9>>"), 1, "unknown ALID");
    assert_eq!(r.ack("S5F3 W <L [2] <B 5> <U4 1>>"), 1, "ALED not 0 or 128");
    assert_eq!(r.stream_nine("S5F3 W <L [1] <B 128>>").0, 7);
    assert_eq!(r.ack("S2F37 W <L [2] <BOOLEAN TRUE> <L [1] <U4 33>>>"), 0);
    r.eq.set_alarm(1, true, r.now).unwrap();
    let sent = r.messages();
    assert_eq!(sent.len(), 2, "S5F1 then the set event: {sent:?}");
    assert_eq!((sent[0].stream, sent[0].function), (5, 1));
    assert_eq!(
        sent[0].body,
        Some(item(r#"<L [3] <B 0x82> <U4 1> <A "too hot">>"#))
    );
    assert_eq!((sent[1].stream, sent[1].function), (6, 11));
    r.eq.set_alarm(1, true, r.now).unwrap();
    assert!(r.messages().is_empty(), "already set");
    r.expect("S1F3 W <L [1] <U4 2006>>", "<L [1] <L [1] <U4 1>>>");
    r.expect(
        "S5F5 W <U4 1 9>",
        r#"<L [2] <L [3] <B 0x82> <U4 1> <A "too hot">> <L [3] <B> <U4 9> <A>>>"#,
    );
    r.expect(
        "S5F5 W <L [1] <U2 2>>",
        r#"<L [1] <L [3] <B 7> <U2 2> <A "door open">>>"#,
    );
    assert_eq!(r.ask("S5F5 W <U4>").unwrap().as_list().unwrap().len(), 2);
    r.eq.set_alarm(1, false, r.now).unwrap();
    let sent = r.messages();
    assert_eq!(
        sent[0].body,
        Some(item(r#"<L [3] <B 2> <U4 1> <A "too hot">>"#))
    );
    // Disable all: no S5F1.
    assert_eq!(r.ack("S5F3 W <L [2] <B 0> <U4>>"), 0);
    r.eq.set_alarm(2, true, r.now).unwrap();
    assert!(r.messages().is_empty());
    r.expect("S5F7 W", "<L>");
    assert!(r.eq.set_alarm(77, true, r.now).is_err());
}

#[test]
fn remote_commands_s2f41_s2f49() {
    let mut r = Rig::new();
    r.expect(r#"S2F41 W <L [2] <A "NOPE"> <L>>"#, "<L [2] <B 1> <L>>");
    r.expect(
        r#"S2F41 W <L [2] <A "START"> <L [3] <L [2] <A "LOTID"> <U4 1>> <L [2] <A "MODE"> <U1 3>> <L [2] <A "X"> <U1 1>>>>"#,
        r#"<L [2] <B 3> <L [3] <L [2] <A "LOTID"> <B 3>> <L [2] <A "MODE"> <B 2>> <L [2] <A "X"> <B 1>>>>"#,
    );
    assert_eq!(
        r.stream_nine(r#"S2F41 W <L [2] <A "START"> <L [1] <L [1] <A "LOTID">>>>"#)
            .0,
        7
    );
    let sent = r.actions();
    assert!(sent.is_empty());
    r.send(r#"S2F41 W <L [2] <A "START"> <L [2] <L [2] <A "LOTID"> <A "L7">> <L [2] <A "MODE"> <U1 2>>>>"#);
    let actions = r.actions();
    match &actions[..] {
        [
            Action::Send { message, .. },
            Action::RemoteCommand {
                name,
                parameters,
                run,
            },
        ] => {
            assert_eq!(message.body, Some(item("<L [2] <B 4> <L>>")));
            assert_eq!(name, "START");
            assert_eq!(parameters[0], ("LOTID".to_string(), Item::ascii("L7")));
            assert_eq!(run.as_deref(), Some("go"));
        }
        other => panic!("{other:?}"),
    }
    r.expect(
        r#"S2F49 W <L [4] <U4 1> <A "OBJ"> <A "STOP"> <L>>"#,
        "<L [2] <B 0> <L>>",
    );
    r.expect(
        r#"S2F49 W <L [4] <U4 1> <A ""> <A "START"> <L [1] <L [2] <A "MODE"> <L [1] <U1 1>>>>>"#,
        r#"<L [2] <B 3> <L [1] <L [2] <A "MODE"> <B 3>>>>"#,
    );
    assert_eq!(r.stream_nine(r#"S2F49 W <L [2] <A "STOP"> <L>>"#).0, 7);
}

#[test]
fn spooling_s2f43_s6f23() {
    let mut r = Rig::new();
    // S2F43: stream 1 not allowed, stream 3 unknown, S6F12 is a secondary, S6F3 unknown.
    r.expect(
        "S2F43 W <L [4] <L [2] <U1 1> <L>> <L [2] <U1 3> <L>> <L [2] <U1 6> <L [1] <U1 12>>> <L [2] <U1 6> <L [1] <U1 3>>>>",
        "<L [2] <B 1> <L [4] <L [3] <U1 1> <B 1> <L>> <L [3] <U1 3> <B 2> <L>> <L [3] <U1 6> <B 4> <L [1] <U1 12>>> <L [3] <U1 6> <B 3> <L [1] <U1 3>>>>>",
    );
    r.expect(
        "S2F43 W <L [1] <L [2] <U1 6> <L [1] <U1 11>>>>",
        "<L [2] <B 0> <L>>",
    );
    assert_eq!(r.ack("S6F23 W <U1 0>"), 2, "no spooled data");
    assert_eq!(r.ack("S2F37 W <L [2] <BOOLEAN TRUE> <L [1] <U4 32>>>"), 0);
    assert_eq!(r.ack("S5F3 W <L [2] <B 128> <U4 1>>"), 0);
    // Communication fails: events are spooled (capacity 3, no overwrite); S5F1 is not
    // spooled (stream 5 not selected).
    r.eq.link_down(r.now);
    for _ in 0..4 {
        r.eq.trigger_event(32, r.now).unwrap();
    }
    r.eq.set_alarm(1, true, r.now).unwrap();
    assert!(r.messages().is_empty());
    assert_eq!(r.eq.spool_count(), 3);
    r.connect();
    r.expect(
        "S1F3 W <L [3] <U4 2013> <U4 2014> <U4 2017>>",
        "<L [3] <U4 3> <U4 3> <U1 3>>",
    );
    // The S6F23 reply goes first, then the spooled messages, oldest first.
    r.send("S6F23 W <U1 0>");
    let actions = r.actions();
    let mut tags = Vec::new();
    let mut data_ids = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        let Action::Send { message, tag } = a else {
            panic!("{a:?}")
        };
        if i == 0 {
            assert_eq!((message.stream, message.function), (6, 24));
            assert_eq!(message.body, Some(Item::B(vec![0])));
            continue;
        }
        assert_eq!((message.stream, message.function), (6, 11));
        data_ids.push(message.body.as_ref().unwrap().as_list().unwrap()[0].clone());
        tags.push(tag.unwrap());
    }
    assert_eq!(
        data_ids,
        vec![Item::U4(vec![1]), Item::U4(vec![2]), Item::U4(vec![3])]
    );
    assert_eq!(r.ack("S6F23 W <U1 0>"), 1, "busy while transmitting");
    for tag in tags {
        r.answer(tag, "S6F12 <B 0>");
    }
    assert_eq!(r.eq.spool_count(), 0);
    r.expect("S1F3 W <L [1] <U4 2017>>", "<L [1] <U1 1>>");
    // Purge.
    r.eq.link_down(r.now);
    r.eq.trigger_event(32, r.now).unwrap();
    r.connect();
    assert_eq!(r.ack("S6F23 W <U1 1>"), 0);
    assert_eq!(r.eq.spool_count(), 0);
    assert_eq!(r.stream_nine("S6F23 W <U1 7>").0, 7);
    // m = 0: nothing is spooled any more.
    r.expect("S2F43 W <L>", "<L [2] <B 0> <L>>");
    r.eq.link_down(r.now);
    r.eq.trigger_event(32, r.now).unwrap();
    assert_eq!(r.eq.spool_count(), 0);
}

#[test]
fn a_failed_event_is_spooled() {
    let mut r = Rig::new();
    assert_eq!(r.ack("S2F37 W <L [2] <BOOLEAN TRUE> <L [1] <U4 32>>>"), 0);
    r.eq.trigger_event(32, r.now).unwrap();
    let (_, tag) = r.primary();
    r.eq.link_down(r.now);
    // A younger event is spooled before the first one's failure is known...
    r.eq.trigger_event(32, r.now).unwrap();
    r.eq.outcome(tag, Outcome::Failed, r.now);
    assert_eq!(r.eq.spool_count(), 2);
    // ...yet the spool sends them in the order they were produced.
    r.connect();
    r.send("S6F23 W <U1 0>");
    let data_ids: Vec<Item> = r.messages()[1..]
        .iter()
        .map(|m| m.body.as_ref().unwrap().as_list().unwrap()[0].clone())
        .collect();
    assert_eq!(data_ids, vec![Item::U4(vec![1]), Item::U4(vec![2])]);
}

#[test]
fn process_programs_stream_7() {
    let mut r = Rig::new();
    assert_eq!(r.ack(r#"S7F1 W <L [2] <A "P1"> <U4 10>>"#), 0);
    assert_eq!(r.ack(r#"S7F1 W <L [2] <A "P1"> <U4 1000>>"#), 2, "too long");
    assert_eq!(r.ack(r#"S7F1 W <L [2] <A ""> <U4 10>>"#), 3, "invalid PPID");
    assert_eq!(r.ack(r#"S7F3 W <L [2] <A "P1"> <A "STEP 1">>"#), 0);
    assert_eq!(r.ack(r#"S7F3 W <L [2] <A "P2"> <B 0 1 2>>"#), 0);
    assert_eq!(r.ack(r#"S7F3 W <L [2] <A "P3"> <B 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0>>"#), 2);
    assert_eq!(r.stream_nine(r#"S7F3 W <L [2] <A "P1"> <L>>"#).0, 7);
    r.expect(r#"S7F5 W <A "P1">"#, r#"<L [2] <A "P1"> <A "STEP 1">>"#);
    r.expect(r#"S7F5 W <A "P2">"#, r#"<L [2] <A "P2"> <B 0 1 2>>"#);
    r.expect(r#"S7F5 W <A "P9">"#, "<L>");
    r.expect("S7F19 W", r#"<L [2] <A "P1"> <A "P2">>"#);
    assert_eq!(
        r.ack(r#"S7F17 W <L [2] <A "P1"> <A "P9">>"#),
        4,
        "P9 not found"
    );
    r.expect("S7F19 W", r#"<L [2] <A "P1"> <A "P2">>"#);
    assert_eq!(r.ack(r#"S7F17 W <L [1] <A "P1">>"#), 0);
    assert_eq!(r.ack("S7F17 W <L>"), 0);
    r.expect("S7F19 W", "<L>");
}

#[test]
fn process_program_quota_count_and_bytes() {
    let config = gem_common::TEST_CONFIG.replace(
        "max_process_program_size = 100",
        "max_process_program_size = 100\nmax_process_programs = 2\nmax_process_program_bytes = 20",
    );
    assert_ne!(config, gem_common::TEST_CONFIG);
    let mut r = Rig::with(&config);
    let s7f3 =
        |ppid: &str, n: usize| format!(r#"S7F3 W <L [2] <A "{ppid}"> <A "{}">>"#, "x".repeat(n));
    let s7f1 = |ppid: &str, n: usize| format!(r#"S7F1 W <L [2] <A "{ppid}"> <U4 {n}>>"#);
    assert_eq!(r.ack(&s7f3("P1", 10)), 0);
    assert_eq!(r.ack(&s7f1("P2", 10)), 0);
    assert_eq!(r.ack(&s7f1("P2", 11)), 2, "21 bytes in all: no space");
    assert_eq!(
        r.ack(&s7f3("P2", 11)),
        3,
        "21 bytes in all: matrix overflow"
    );
    assert_eq!(r.ack(&s7f3("P2", 10)), 0);
    assert_eq!(r.ack(&s7f1("P3", 0)), 2, "a third program: no space");
    assert_eq!(r.ack(&s7f3("P3", 0)), 3, "a third program: matrix overflow");
    // Replacing a program with one no larger fits; with a larger one, if the bytes allow.
    assert_eq!(r.ack(&s7f1("P1", 10)), 0);
    assert_eq!(r.ack(&s7f3("P1", 5)), 0);
    assert_eq!(r.ack(&s7f3("P1", 10)), 0);
    assert_eq!(r.ack(&s7f1("P1", 11)), 2);
    assert_eq!(r.ack(&s7f3("P1", 11)), 3);
    r.expect(
        r#"S7F5 W <A "P1">"#,
        &format!(r#"<L [2] <A "P1"> <A "{}">>"#, "x".repeat(10)),
    );
    r.expect("S7F19 W", r#"<L [2] <A "P1"> <A "P2">>"#);
    // Deleting one makes room again.
    assert_eq!(r.ack(r#"S7F17 W <L [1] <A "P2">>"#), 0);
    assert_eq!(r.ack(&s7f1("P3", 10)), 0);
    assert_eq!(r.ack(&s7f3("P3", 10)), 0);
}

#[test]
fn stream_nine_for_unrecognized_messages() {
    let mut r = Rig::new();
    let (f, mhead) = r.stream_nine("S99F1 W");
    assert_eq!(f, 3);
    assert_eq!(
        mhead,
        vec![0, 0, 0x80 | 99, 1, 0, 0, 0, 0, 0, r.system_bytes as u8]
    );
    assert_eq!(r.stream_nine("S1F99 W").0, 5);
    assert_eq!(r.stream_nine("S6F3 W").0, 5);
    // Wrong device ID.
    let mut m = parse_message("S1F1 W").unwrap();
    m.device_id = 5;
    m.system_bytes = 42;
    r.eq.receive(m, r.now);
    let sent = r.messages();
    assert_eq!((sent[0].stream, sent[0].function), (9, 1));
    assert_eq!(
        sent[0].body,
        Some(Item::B(vec![0, 5, 0x81, 1, 0, 0, 0, 0, 0, 42]))
    );
    // A body that did not decode.
    let header = [0, 0, 0x81, 3, 0, 0, 0, 0, 0, 9];
    r.eq.receive_malformed(header, r.now);
    let sent = r.messages();
    assert_eq!((sent[0].stream, sent[0].function), (9, 7));
    assert_eq!(sent[0].body, Some(Item::B(header.to_vec())));
    // Echo replies cover extra messages; their stream is then known (S9F5 not S9F3).
    r.expect("S10F3 W <L [2] <B 0> <A \"hi\">>", "<B 0>");
    assert_eq!(r.stream_nine("S10F7 W").0, 5);
    // Secondaries and stream 9 from the host are not answered.
    assert!(r.exchange("S1F2 <L>").is_empty());
    assert!(r.exchange("S9F1 <B 0 0 0 0 0 0 0 0 0 0>").is_empty());
}

#[test]
fn t3_on_an_event_sends_s9f9_and_restarts_communication() {
    let mut r = Rig::new();
    assert_eq!(r.ack("S2F37 W <L [2] <BOOLEAN TRUE> <L [1] <U4 32>>>"), 0);
    r.eq.trigger_event(32, r.now).unwrap();
    let (m, tag) = r.primary();
    let shead = hsms_header(&Message {
        system_bytes: 77,
        ..m
    });
    r.eq.outcome(tag, Outcome::Timeout { shead }, r.now);
    let sent = r.actions();
    match &sent[..] {
        [
            Action::Send {
                message: s9,
                tag: None,
            },
            Action::Send {
                message: s1f13,
                tag: Some(_),
            },
        ] => {
            assert_eq!((s9.stream, s9.function, s9.w_bit), (9, 9, false));
            assert_eq!(s9.body, Some(Item::B(shead.to_vec())));
            assert_eq!((s1f13.stream, s1f13.function), (1, 13));
        }
        other => panic!("{other:?}"),
    }
    // The event that timed out went to the spool (stream 6 spooled).
    assert_eq!(r.eq.spool_count(), 1);
    assert_eq!(r.eq.communication_state(), CommunicationState::WaitCra);
}
