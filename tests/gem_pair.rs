//! The GEM walk with a host and an equipment wired together in memory (`tests/pair`): HSMS
//! select, establish communication, go on-line, define, link and enable a report, an event
//! report, an alarm set and cleared, spooling across a lost connection, and the host's
//! establish-communication retry on T3. Time is simulated, so T3 and the retry delay pass in
//! no time at all.

mod gem_common;
mod pair;

use std::time::{Duration, Instant, SystemTime};

use pair::{Answer, Pair};
use secsgate::gem::{
    CommunicationState, ControlState, Equipment, Host, HostConfig, MemoryPrograms, MemorySpool,
};
use secsgate::hsms::protocol::{Config, TransactionFailure};
use secsgate::secs2::sml::parse_message;
use secsgate::secs2::{Item, Message};
use secsgate::sim::SimConfig;

const RETRY: Duration = Duration::from_secs(5);

fn msg(sml: &str) -> Message {
    parse_message(sml).unwrap_or_else(|e| panic!("bad SML in test {sml}: {e}"))
}

/// The test equipment of `gem_common`, starting in HOST OFF-LINE with room for ten spooled
/// messages.
fn pair() -> Pair {
    pair_from("host-offline")
}

/// The test equipment starting in control state `control_state`.
fn pair_from(control_state: &str) -> Pair {
    let text = gem_common::TEST_CONFIG
        .replace(
            "control_state = \"online-remote\"",
            &format!("control_state = \"{control_state}\""),
        )
        .replace("spool_capacity = 3", "spool_capacity = 10");
    let config = SimConfig::parse(&text, "pair.toml", None).unwrap();
    let now = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let equipment = Equipment::new(
        config.model,
        Box::new(MemorySpool::default()),
        Box::new(MemoryPrograms::default()),
        now,
        wall,
    );
    let host = Host::new(
        HostConfig {
            retry_delay: RETRY,
            ..HostConfig::default()
        },
        now,
        wall,
    );
    let hsms = Config {
        linktest: None,
        ..Config::default()
    };
    Pair::new(host, equipment, hsms, now)
}

/// The reply to `request` from the host, as SML.
fn ask(pair: &mut Pair, request: &str) -> String {
    pair.request(msg(request)).to_string()
}

fn texts(messages: &[Message]) -> Vec<String> {
    messages.iter().map(Message::to_string).collect()
}

fn communicating(pair: &Pair) -> bool {
    pair.host.communication_state() == CommunicationState::Communicating
        && pair.equipment.communication_state() == CommunicationState::Communicating
}

#[test]
fn select_then_establish_communication_from_both_ends() {
    let mut pair = pair();
    let start = pair.now;
    pair.connect();
    assert!(pair.selected());
    assert!(communicating(&pair));
    // Both ends sent S1F13 at once; the host answered the equipment's with COMMACK 0.
    assert_eq!(
        texts(&pair.take_received()),
        ["S1F13 W <L [2] <A \"TESTER\"> <A \"9.9\">> ."]
    );
    assert_eq!(pair.now, start, "no time needed");
    assert_eq!(pair.next_deadline(), None, "nothing left to wait for");
}

#[test]
fn gem_walk_online_reports_events_alarms_and_spooling() {
    let mut pair = pair();
    pair.connect();
    assert!(communicating(&pair));
    pair.take_received();

    // On-line (S1F17) from HOST OFF-LINE.
    assert_eq!(pair.equipment.control_state(), ControlState::HostOffline);
    assert_eq!(ask(&mut pair, "S1F17 W ."), "S1F18 <B 0x00> .");
    assert_eq!(pair.equipment.control_state(), ControlState::OnlineRemote);

    // Define report 500 (Temp, Lot), link it to event 32, enable event 32.
    assert_eq!(
        ask(
            &mut pair,
            "S2F33 W <L [2] <U4 1> <L [1] <L [2] <U4 500> <L [2] <U4 1> <U4 3>>>>> ."
        ),
        "S2F34 <B 0x00> ."
    );
    assert_eq!(
        ask(
            &mut pair,
            "S2F35 W <L [2] <U4 2> <L [1] <L [2] <U4 32> <L [1] <U4 500>>>>> ."
        ),
        "S2F36 <B 0x00> ."
    );
    assert_eq!(
        ask(
            &mut pair,
            "S2F37 W <L [2] <BOOLEAN True> <L [1] <U4 32>>> ."
        ),
        "S2F38 <B 0x00> ."
    );
    assert!(pair.take_received().is_empty());

    // The event: S6F11 with the report, answered by the host's default S6F12.
    pair.equipment.trigger_event(32, pair.now).unwrap();
    pair.pump();
    let events = texts(&pair.take_received());
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].starts_with("S6F11 W <L [3] <U4 "),
        "{}",
        events[0]
    );
    assert!(
        events[0].ends_with("<U4 32> <L [1] <L [2] <U4 500> <L [2] <F4 20> <A \"L1\">>>>> ."),
        "{}",
        events[0]
    );
    assert_eq!(pair.in_flight(), (0, 0), "S6F12 ended the transaction");

    // Alarm 2 (category 7, enabled) set and cleared: two S5F1.
    pair.equipment.set_alarm(2, true, pair.now).unwrap();
    pair.equipment.set_alarm(2, false, pair.now).unwrap();
    pair.pump();
    assert_eq!(
        texts(&pair.take_received()),
        [
            "S5F1 W <L [3] <B 0x87> <U4 2> <A \"door open\">> .",
            "S5F1 W <L [3] <B 0x07> <U4 2> <A \"door open\">> .",
        ]
    );
    assert_eq!(pair.in_flight(), (0, 0));

    // Spool S6F11 while communication is down.
    assert_eq!(
        ask(
            &mut pair,
            "S2F43 W <L [1] <L [2] <U1 6> <L [1] <U1 11>>>> ."
        ),
        "S2F44 <L [2] <B 0x00> <L [0]>> ."
    );
    pair.disconnect();
    assert_eq!(pair.host.communication_state(), CommunicationState::WaitCra);
    assert_ne!(
        pair.equipment.communication_state(),
        CommunicationState::Communicating
    );
    for lot in ["L2", "L3", "L4"] {
        pair.equipment
            .set_variable(3, Item::A(lot.as_bytes().to_vec()), pair.now)
            .unwrap();
        pair.equipment.trigger_event(32, pair.now).unwrap();
        pair.pump();
    }
    assert_eq!(pair.equipment.spool_count(), 3);
    assert!(pair.take_received().is_empty());

    // Reconnect: communication again, the spool waits for S6F23.
    pair.run_for(Duration::from_secs(1));
    pair.connect();
    assert!(communicating(&pair));
    assert_eq!(
        texts(&pair.take_received()),
        ["S1F13 W <L [2] <A \"TESTER\"> <A \"9.9\">> ."]
    );
    assert_eq!(pair.equipment.spool_count(), 3);
    assert_eq!(ask(&mut pair, "S6F23 W <U1 0> ."), "S6F24 <B 0x00> .");
    pair.pump();
    let unloaded = texts(&pair.take_received());
    let lots: Vec<&str> = unloaded
        .iter()
        .map(|m| {
            assert!(m.starts_with("S6F11 W "), "{m}");
            ["L2", "L3", "L4"]
                .into_iter()
                .find(|lot| m.contains(&format!("<A \"{lot}\">")))
                .unwrap_or_else(|| panic!("no lot in {m}"))
        })
        .collect();
    assert_eq!(lots, ["L2", "L3", "L4"], "once each, in order");
    assert_eq!(pair.equipment.spool_count(), 0);
    assert_eq!(pair.in_flight(), (0, 0));
    // Nothing comes twice, however long we wait.
    pair.run_for(Duration::from_secs(120));
    assert!(pair.take_received().is_empty());
    assert_eq!(ask(&mut pair, "S6F23 W <U1 0> ."), "S6F24 <B 0x02> .");
}

#[test]
fn host_retries_s1f13_after_t3_and_the_retry_delay() {
    let mut pair = pair();
    // The equipment's communication is switched off: it answers nothing.
    pair.equipment.set_communication_enabled(false, pair.now);
    let start = pair.now;
    pair.connect();
    assert!(pair.selected());
    assert_eq!(pair.host.communication_state(), CommunicationState::WaitCra);
    assert_eq!(pair.in_flight(), (1, 0), "the host's S1F13 is open");

    // T3 (45 s): WAIT DELAY, the next S1F13 after the retry delay.
    pair.run_for(Duration::from_secs(45));
    assert_eq!(
        pair.host.communication_state(),
        CommunicationState::WaitDelay
    );
    assert_eq!(pair.in_flight(), (0, 0));
    let t3 = start + Duration::from_secs(45);
    assert_eq!(pair.host.poll_timeout(), Some(t3 + RETRY));
    pair.run_for(RETRY);
    assert_eq!(pair.host.communication_state(), CommunicationState::WaitCra);
    assert_eq!(pair.in_flight(), (1, 0), "S1F13 again");

    // The operator switches communication on: the equipment's S1F13 ends WAIT CRA.
    pair.equipment.set_communication_enabled(true, pair.now);
    pair.pump();
    assert!(communicating(&pair));
    assert_eq!(
        texts(&pair.take_received()),
        ["S1F13 W <L [2] <A \"TESTER\"> <A \"9.9\">> ."]
    );
    // The host's own S1F13, still open, is left to T3; it changes nothing.
    pair.run_for(Duration::from_secs(60));
    assert!(communicating(&pair));
    assert!(pair.selected(), "a T3 leaves the HSMS connection up");
}

#[test]
fn the_equipment_goes_online_through_the_hosts_s1f2() {
    let mut pair = pair_from("equipment-offline");
    pair.connect();
    pair.take_received();
    assert_eq!(
        pair.equipment.control_state(),
        ControlState::EquipmentOffline
    );
    // The operator selects ON-LINE: ATTEMPT ON-LINE sends S1F1, the host's S1F2 completes it.
    pair.equipment.operator_online(pair.now);
    pair.pump();
    assert_eq!(texts(&pair.take_received()), ["S1F1 W ."]);
    assert_eq!(pair.equipment.control_state(), ControlState::OnlineRemote);
    assert_eq!(pair.in_flight(), (0, 0));
}

#[test]
fn a_request_the_equipment_does_not_know_ends_with_its_s9f5() {
    let mut pair = pair();
    pair.connect();
    pair.take_received();
    assert_eq!(ask(&mut pair, "S1F17 W ."), "S1F18 <B 0x00> .");
    let before = pair.now;
    // S9F5, whose MHEAD names the request (device 0, W-bit and stream 1, function 99, system
    // bytes 4 after Select.req, S1F13 and S1F17), ends it at once rather than at T3.
    let s9f5 = "S9F5 <B 0x00 0x00 0x81 0x63 0x00 0x00 0x00 0x00 0x00 0x04> .";
    match pair.request_within(msg("S1F99 W ."), Duration::from_secs(60)) {
        Answer::Failed(TransactionFailure::StreamNine(m)) => assert_eq!(m.to_string(), s9f5),
        other => panic!("expected S9F5, got {other:?}"),
    }
    assert_eq!(pair.now, before);
    // The host sees it too; stream 9 needs no reply and changes nothing.
    assert_eq!(texts(&pair.take_received()), [s9f5]);
    assert_eq!(pair.in_flight(), (0, 0));
    assert!(communicating(&pair));
    assert!(pair.selected());
    assert_eq!(
        ask(&mut pair, "S1F1 W ."),
        "S1F2 <L [2] <A \"TESTER\"> <A \"9.9\">> ."
    );
}
