//! The GEM host (`secsgate::gem::Host`) driven deterministically: every transition of its
//! communication state (WAIT CRA, WAIT DELAY, COMMUNICATING), its retry timer with simulated
//! instants, and its default replies. No sockets, no sleeps.

use std::time::{Duration, Instant, SystemTime};

use secsgate::gem::{Action, CommunicationState, Host, HostConfig, Outcome, Tag};
use secsgate::secs2::Message;
use secsgate::secs2::sml::parse_message;

const RETRY: Duration = Duration::from_secs(10);

struct Rig {
    host: Host,
    t0: Instant,
}

fn msg(sml: &str) -> Message {
    parse_message(sml).unwrap_or_else(|e| panic!("bad SML in test {sml}: {e}"))
}

impl Rig {
    fn with(config: HostConfig) -> Rig {
        let t0 = Instant::now();
        // 2023-11-14 22:13:20 UTC.
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Rig {
            host: Host::new(config, t0, wall),
            t0,
        }
    }

    fn new() -> Rig {
        Rig::with(HostConfig {
            retry_delay: RETRY,
            ..HostConfig::default()
        })
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.host.poll_action()).collect()
    }

    /// The one S1F13 the host queued, with its tag.
    fn s1f13(&mut self) -> Tag {
        match self.actions().as_slice() {
            [
                Action::Send {
                    message,
                    tag: Some(tag),
                },
            ] => {
                assert_eq!(message.to_string(), "S1F13 W <L [0]> .");
                *tag
            }
            other => panic!("expected one S1F13, got {other:?}"),
        }
    }

    fn state(&self) -> CommunicationState {
        self.host.communication_state()
    }

    /// Link up at t0, S1F13 answered with `reply` at t0 + 100 ms.
    fn establish_with(&mut self, reply: &str) {
        self.host.link_up(self.t0);
        let tag = self.s1f13();
        self.host
            .outcome(tag, Outcome::Reply(msg(reply)), self.at(100));
    }

    /// A primary from the equipment, with system bytes 77 and device ID 3.
    fn from_equipment(sml: &str) -> Message {
        let mut m = msg(sml);
        m.system_bytes = 77;
        m.device_id = 3;
        m
    }

    fn reply_to(&self, sml: &str) -> Option<String> {
        let primary = Rig::from_equipment(sml);
        self.host.default_reply(&primary, self.at(1500)).map(|r| {
            assert_eq!(r.system_bytes, 77, "{r}");
            assert_eq!(r.device_id, 3, "{r}");
            assert!(!r.w_bit, "{r}");
            r.to_string()
        })
    }
}

// ----- establishing communication -----

#[test]
fn starts_not_communicating_and_sends_nothing_until_the_link_is_up() {
    let mut rig = Rig::new();
    assert_eq!(rig.state(), CommunicationState::WaitCra);
    assert!(!rig.host.is_communicating());
    assert!(rig.actions().is_empty());
    assert_eq!(rig.host.poll_timeout(), None);
}

#[test]
fn link_up_sends_s1f13_and_commack_0_makes_it_communicating() {
    let mut rig = Rig::new();
    rig.host.link_up(rig.t0);
    let tag = rig.s1f13();
    assert_eq!(rig.state(), CommunicationState::WaitCra);
    // A second link-up report for the same link sends nothing more.
    rig.host.link_up(rig.at(1));
    assert!(rig.actions().is_empty());
    rig.host.outcome(
        tag,
        Outcome::Reply(msg(r#"S1F14 <L [2] <B 0> <L [2] <A "EQ"> <A "1.0">>> ."#)),
        rig.at(50),
    );
    assert_eq!(rig.state(), CommunicationState::Communicating);
    assert!(rig.host.is_communicating());
    assert_eq!(rig.host.poll_timeout(), None);
    assert!(rig.actions().is_empty());
}

#[test]
fn commack_not_0_waits_the_retry_delay_then_sends_s1f13_again() {
    let mut rig = Rig::new();
    rig.establish_with("S1F14 <L [2] <B 1> <L>> .");
    assert_eq!(rig.state(), CommunicationState::WaitDelay);
    let due = rig.at(100) + RETRY;
    assert_eq!(rig.host.poll_timeout(), Some(due));
    rig.host.handle_timeout(due - Duration::from_millis(1));
    assert!(rig.actions().is_empty());
    assert_eq!(rig.state(), CommunicationState::WaitDelay);
    rig.host.handle_timeout(due);
    assert_eq!(rig.state(), CommunicationState::WaitCra);
    assert_eq!(rig.host.poll_timeout(), None);
    let again = rig.s1f13();
    rig.host.outcome(
        again,
        Outcome::Reply(msg("S1F14 <L [2] <B 0> <L>> .")),
        due + Duration::from_millis(20),
    );
    assert_eq!(rig.state(), CommunicationState::Communicating);
}

#[test]
fn every_failure_of_s1f13_leads_to_wait_delay() {
    let failures = [
        Outcome::Timeout { shead: [0; 10] },
        Outcome::Failed,
        // The equipment aborted the transaction.
        Outcome::Reply(msg("S1F0 .")),
        // Not the structure of S1F14.
        Outcome::Reply(msg("S1F14 <B 0> .")),
        Outcome::Reply(msg("S1F14 .")),
    ];
    for failure in failures {
        let mut rig = Rig::new();
        rig.host.link_up(rig.t0);
        let tag = rig.s1f13();
        rig.host.outcome(tag, failure.clone(), rig.at(45_000));
        assert_eq!(rig.state(), CommunicationState::WaitDelay, "{failure:?}");
        assert_eq!(
            rig.host.poll_timeout(),
            Some(rig.at(45_000) + RETRY),
            "{failure:?}"
        );
        assert!(rig.actions().is_empty());
    }
}

#[test]
fn the_equipments_s1f13_makes_it_communicating_from_wait_cra() {
    let mut rig = Rig::new();
    rig.host.link_up(rig.t0);
    let tag = rig.s1f13();
    let s1f13 = Rig::from_equipment(r#"S1F13 W <L [2] <A "EQ"> <A "1.0">> ."#);
    rig.host.receive(&s1f13, rig.at(10));
    assert_eq!(rig.state(), CommunicationState::Communicating);
    assert_eq!(
        rig.reply_to(r#"S1F13 W <L [2] <A "EQ"> <A "1.0">> ."#)
            .as_deref(),
        Some("S1F14 <L [2] <B 0x00> <L [0]>> .")
    );
    // The host's own S1F13 is refused afterwards: it stays COMMUNICATING.
    rig.host.outcome(
        tag,
        Outcome::Reply(msg("S1F14 <L [2] <B 1> <L>> .")),
        rig.at(20),
    );
    assert_eq!(rig.state(), CommunicationState::Communicating);
    assert_eq!(rig.host.poll_timeout(), None);
    assert!(rig.actions().is_empty());
}

#[test]
fn the_equipments_s1f13_ends_wait_delay() {
    let mut rig = Rig::new();
    rig.establish_with("S1F14 <L [2] <B 1> <L>> .");
    assert_eq!(rig.state(), CommunicationState::WaitDelay);
    rig.host
        .receive(&Rig::from_equipment("S1F13 W <L> ."), rig.at(200));
    assert_eq!(rig.state(), CommunicationState::Communicating);
    assert_eq!(rig.host.poll_timeout(), None);
    // The timer that was due does nothing now.
    rig.host.handle_timeout(rig.at(100) + RETRY);
    assert!(rig.actions().is_empty());
    assert_eq!(rig.state(), CommunicationState::Communicating);
}

#[test]
fn any_other_primary_in_wait_delay_sends_s1f13_at_once() {
    let mut rig = Rig::new();
    rig.establish_with("S1F14 <L [2] <B 1> <L>> .");
    // Replies and stream 9 messages are no sign of a ready equipment.
    rig.host
        .receive(&Rig::from_equipment("S1F2 <L> ."), rig.at(150));
    rig.host.receive(
        &Rig::from_equipment("S9F5 <B 0 0 0 0 0 0 0 0 0 0> ."),
        rig.at(160),
    );
    assert_eq!(rig.state(), CommunicationState::WaitDelay);
    assert!(rig.actions().is_empty());
    rig.host.receive(
        &Rig::from_equipment("S6F11 W <L [3] <U4 1> <U4 2> <L>> ."),
        rig.at(200),
    );
    assert_eq!(rig.state(), CommunicationState::WaitCra);
    assert_eq!(rig.host.poll_timeout(), None);
    let tag = rig.s1f13();
    // In WAIT CRA another primary sends no second S1F13.
    rig.host
        .receive(&Rig::from_equipment("S1F1 W ."), rig.at(210));
    assert!(rig.actions().is_empty());
    rig.host.outcome(
        tag,
        Outcome::Reply(msg("S1F14 <L [2] <B 0> <L>> .")),
        rig.at(300),
    );
    assert_eq!(rig.state(), CommunicationState::Communicating);
}

#[test]
fn link_down_is_a_communication_failure_and_link_up_starts_over() {
    let mut rig = Rig::new();
    rig.establish_with("S1F14 <L [2] <B 0> <L>> .");
    assert_eq!(rig.state(), CommunicationState::Communicating);
    rig.host.link_down(rig.at(1000));
    assert_eq!(rig.state(), CommunicationState::WaitCra);
    assert!(rig.actions().is_empty());
    // No S1F13 while the link is down, whatever arrives late.
    rig.host.handle_timeout(rig.at(60_000));
    assert!(rig.actions().is_empty());
    rig.host.link_up(rig.at(2000));
    let tag = rig.s1f13();
    rig.host.outcome(
        tag,
        Outcome::Reply(msg("S1F14 <L [2] <B 0> <L>> .")),
        rig.at(2100),
    );
    assert_eq!(rig.state(), CommunicationState::Communicating);
}

#[test]
fn link_down_in_wait_delay_stops_the_timer() {
    let mut rig = Rig::new();
    rig.establish_with("S1F14 <L [2] <B 1> <L>> .");
    rig.host.link_down(rig.at(500));
    assert_eq!(rig.state(), CommunicationState::WaitCra);
    assert_eq!(rig.host.poll_timeout(), None);
    rig.host.handle_timeout(rig.at(100) + RETRY);
    assert!(rig.actions().is_empty());
}

#[test]
fn outcomes_of_an_s1f13_from_before_link_down_are_ignored() {
    let mut rig = Rig::new();
    rig.host.link_up(rig.t0);
    let old = rig.s1f13();
    rig.host.link_down(rig.at(10));
    // Failing while the link is down changes nothing.
    rig.host.outcome(old, Outcome::Failed, rig.at(11));
    assert_eq!(rig.state(), CommunicationState::WaitCra);
    assert_eq!(rig.host.poll_timeout(), None);
    rig.host.link_up(rig.at(20));
    let new = rig.s1f13();
    assert_ne!(old, new);
    // The old one, failing late, does not send the new session into WAIT DELAY...
    rig.host.outcome(old, Outcome::Failed, rig.at(30));
    assert_eq!(rig.state(), CommunicationState::WaitCra);
    // ...nor does an old COMMACK 0 count for it.
    rig.host.outcome(
        old,
        Outcome::Reply(msg("S1F14 <L [2] <B 0> <L>> .")),
        rig.at(31),
    );
    assert_eq!(rig.state(), CommunicationState::WaitCra);
    rig.host.outcome(
        new,
        Outcome::Reply(msg("S1F14 <L [2] <B 0> <L>> .")),
        rig.at(40),
    );
    assert_eq!(rig.state(), CommunicationState::Communicating);
    // An outcome reported twice is ignored the second time.
    rig.host.outcome(new, Outcome::Failed, rig.at(50));
    assert_eq!(rig.state(), CommunicationState::Communicating);
}

#[test]
fn the_equipments_s1f13_before_the_link_state_arrives() {
    // The receive path can see S1F13 before the link's state change is processed.
    let mut rig = Rig::new();
    rig.host
        .receive(&Rig::from_equipment("S1F13 W <L> ."), rig.t0);
    assert_eq!(rig.state(), CommunicationState::Communicating);
    rig.host.link_up(rig.at(1));
    assert!(rig.actions().is_empty());
    assert_eq!(rig.state(), CommunicationState::Communicating);
}

#[test]
fn without_establish_communication_the_link_is_enough() {
    let mut rig = Rig::with(HostConfig {
        establish_communication: false,
        ..HostConfig::default()
    });
    rig.host.link_up(rig.t0);
    assert_eq!(rig.state(), CommunicationState::Communicating);
    assert!(rig.actions().is_empty());
    rig.host.link_down(rig.at(10));
    assert_eq!(rig.state(), CommunicationState::WaitCra);
    rig.host.link_up(rig.at(20));
    assert_eq!(rig.state(), CommunicationState::Communicating);
    assert!(rig.actions().is_empty());
    // The equipment's S1F13 is still answered.
    assert_eq!(
        rig.reply_to("S1F13 W <L> .").as_deref(),
        Some("S1F14 <L [2] <B 0x00> <L [0]>> .")
    );
}

#[test]
fn retry_delay_is_t5_at_least_one_second() {
    assert_eq!(
        HostConfig::retry_delay_for_t5(Duration::from_millis(200)),
        Duration::from_secs(1)
    );
    assert_eq!(
        HostConfig::retry_delay_for_t5(Duration::from_secs(10)),
        Duration::from_secs(10)
    );
    let default = HostConfig::default();
    assert!(default.establish_communication);
    assert_eq!(default.retry_delay, Duration::from_secs(10));
    assert_eq!(default.time_format, 1);
}

// ----- default replies -----

#[test]
fn default_replies_of_a_gem_host() {
    let rig = Rig::new();
    let cases = [
        ("S1F1 W .", "S1F2 <L [0]> ."),
        ("S1F13 W <L> .", "S1F14 <L [2] <B 0x00> <L [0]>> ."),
        (
            "S2F17 W .",
            // The host's clock: t0 was 2023-11-14 22:13:20.00, it is 1.5 s later.
            "S2F18 <A \"2023111422132150\"> .",
        ),
        (
            "S5F1 W <L [3] <B 0x84> <U4 1> <A \"hot\">> .",
            "S5F2 <B 0x00> .",
        ),
        (
            "S6F1 W <L [4] <U4 1> <U4 1> <A \"\"> <L>> .",
            "S6F2 <B 0x00> .",
        ),
        ("S6F11 W <L [3] <U4 1> <U4 2> <L>> .", "S6F12 <B 0x00> ."),
        ("S6F13 W <L [3] <U4 1> <U4 2> <L>> .", "S6F14 <B 0x00> ."),
        ("S10F1 W <L [2] <B 0> <A \"hi\">> .", "S10F2 <B 0x00> ."),
        ("S10F3 W <L [2] <B 0> <A \"hi\">> .", "S10F4 <B 0x00> ."),
    ];
    for (primary, reply) in cases {
        assert_eq!(rig.reply_to(primary).as_deref(), Some(reply), "{primary}");
    }
}

#[test]
fn multi_block_inquiries_are_granted() {
    let rig = Rig::new();
    for (stream, function) in [
        (2, 39),
        (3, 15),
        (4, 25),
        (6, 5),
        (7, 1),
        (13, 11),
        (14, 23),
        (15, 1),
        (16, 1),
        (19, 19),
    ] {
        let primary = format!("S{stream}F{function} W <L [2] <U4 1> <U4 1000>> .");
        assert_eq!(
            rig.reply_to(&primary),
            Some(format!("S{stream}F{} <B 0x00> .", function + 1)),
            "{primary}"
        );
    }
}

#[test]
fn unknown_w_bit_primaries_are_aborted_and_others_get_no_reply() {
    let rig = Rig::new();
    assert_eq!(rig.reply_to("S99F1 W .").as_deref(), Some("S99F0 ."));
    assert_eq!(rig.reply_to("S1F3 W <L> .").as_deref(), Some("S1F0 ."));
    assert_eq!(
        rig.reply_to("S64F7 W <A \"x\"> .").as_deref(),
        Some("S64F0 .")
    );
    // No W-bit: no reply.
    assert_eq!(rig.reply_to("S6F11 <L [3] <U4 1> <U4 2> <L>> ."), None);
    assert_eq!(rig.reply_to("S9F7 <B 0 0 0 0 0 0 0 0 0 0> ."), None);
    // Replies are never answered.
    assert_eq!(rig.reply_to("S1F14 <L [2] <B 0> <L>> ."), None);
}

#[test]
fn default_replies_do_not_depend_on_the_communication_state() {
    let mut rig = Rig::new();
    assert_eq!(rig.reply_to("S1F1 W .").as_deref(), Some("S1F2 <L [0]> ."));
    rig.establish_with("S1F14 <L [2] <B 1> <L>> .");
    assert_eq!(rig.state(), CommunicationState::WaitDelay);
    assert_eq!(
        rig.reply_to("S6F11 W <L [3] <U4 1> <U4 2> <L>> .")
            .as_deref(),
        Some("S6F12 <B 0x00> .")
    );
}

#[test]
fn s2f18_follows_the_configured_time_format() {
    for (format, text) in [
        (0, "231114221321"),
        (1, "2023111422132150"),
        (2, "2023-11-14T22:13:21.50Z"),
    ] {
        let rig = Rig::with(HostConfig {
            time_format: format,
            ..HostConfig::default()
        });
        assert_eq!(rig.host.time_text(rig.at(1500)), text);
        assert_eq!(
            rig.reply_to("S2F17 W .").unwrap(),
            format!("S2F18 <A \"{text}\"> .")
        );
    }
}
