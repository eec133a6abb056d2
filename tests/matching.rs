//! Routing by content: named SDL definitions matched in file order (first match wins, the
//! catch-all last), keys on nested elements, exact list length on and off, `ANY`, remote
//! commands with their parameters in any order, and what answers a message no definition
//! takes (S9F3, S9F5, S9F7, HCACK 1 or 3 with CPACKs) — in the SDL itself, through the
//! gateway with handlers mapped by definition name, and in the simulator.
//!
//! The gateway tests run real handler scripts against an equipment played by a secsgate HSMS
//! endpoint on 127.0.0.1; they wait on the engine's events, not on the clock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secsgate::config::{Project, Selector};
use secsgate::gateway::{Gateway, Status};
use secsgate::hsms::driver::{self, Endpoint, Mode, Settings};
use secsgate::link::{Incoming, Link, LinkError, Received};
use secsgate::script::ScriptEngine;
use secsgate::sdl::{Rejected, Sdl};
use secsgate::secs2::{Item, Message, sml};
use secsgate::sim::{SimConfig, Simulator};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// What the tool sends, routed by content: S6F11 by CEID (a nested ALID key for one), with a
/// catch-all last; S5F1 by ALID with no catch-all.
const TOOL_SDL: &str = r#"{
  "doc": ["A tool whose event reports and alarms are routed by content"],
  "items": {
    "ACKC5": {"doc": "ACKC5, Acknowledge Code", "format": "B"},
    "ACKC6": {"doc": "ACKC6, Acknowledge Code", "format": "B"},
    "ALCD": {"doc": "ALCD, Alarm Code", "format": "B"},
    "ALID": {"doc": "ALID, Alarm ID", "format": ["U4", "U2"]},
    "ALTX": {"doc": "ALTX, Alarm Text", "format": "A", "length": 120},
    "CEID": {"doc": "CEID, Collected Event ID", "format": ["U4", "U2"]},
    "DATAID": {"doc": "DATAID, Data ID", "format": "U4"},
    "RPTID": {"doc": "RPTID, Report ID", "format": "U4"},
    "V": {"doc": "V, Variable Data"}
  },
  "defaults": {"direction": "h<-e", "reply": true},
  "messages": {
    "S5": {
      "F1": [
        {"name": "Overheat", "body": ["ALCD", {"name": "ALID", "key": 1}, "ALTX"]},
        {"name": "VacuumLost", "body": ["ALCD", {"name": "ALID", "key": 2}, "ALTX"]}
      ],
      "F2": {"direction": "h->e", "reply": false, "body": "ACKC5"}
    },
    "S6": {
      "F11": [
        {"name": "LotStarted", "doc": "Lot started", "CommonID": ["CEID"],
         "body": ["DATAID", {"name": "CEID", "key": 100}, {"L*": ["RPTID", "V*"]}]},
        {"name": "LotEnded", "CommonID": ["CEID"],
         "body": ["DATAID", {"name": "CEID", "key": 101}, {"L*": ["RPTID", "V*"]}]},
        {"name": "ChamberAlarm",
         "body": ["DATAID", "CEID",
                  {"L": [["RPTID", [{"name": "ALID", "key": 7}, "ANY"]]], "exact_length": true}]},
        {"name": "AnyEvent", "body": ["DATAID", "CEID", {"L*": ["RPTID", "V*"]}]}
      ],
      "F12": {"direction": "h->e", "reply": false, "body": "ACKC6"}
    }
  }
}
"#;

fn msg(text: &str) -> Message {
    sml::parse_message(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn tool_sdl() -> Sdl {
    let (sdl, warnings) = Sdl::parse(Path::new("tool.sdl"), TOOL_SDL).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    sdl
}

/// The definition a message from the equipment matches, or how it is refused.
fn route(sdl: &Sdl, text: &str) -> Result<String, Rejected> {
    sdl.matching(&msg(text), false)
        .map(|m| m.definition.name_or_empty().to_string())
        .map_err(|r| r.kind)
}

fn event(ceid: &str, reports: &str) -> String {
    format!("S6F11 W <L [3] <U4 1> {ceid} {reports}>")
}

#[test]
fn the_first_definition_that_matches_wins_and_the_catch_all_comes_last() {
    let sdl = tool_sdl();
    let reports = "<L [1] <L [2] <U4 9> <L [2] <A \"LOT-1\"> <U2 3>>>>";
    assert_eq!(
        route(&sdl, &event("<U4 100>", reports)),
        Ok("LotStarted".into())
    );
    assert_eq!(
        route(&sdl, &event("<U2 101>", reports)),
        Ok("LotEnded".into())
    );
    assert_eq!(
        route(&sdl, &event("<U4 4000>", reports)),
        Ok("AnyEvent".into())
    );
    assert_eq!(
        route(&sdl, &event("<U4 100>", "<L>")),
        Ok("LotStarted".into())
    );

    // The same definitions with the catch-all first: it takes everything, the keyed ones are
    // never reached.
    let mut value: Value = serde_json::from_str(TOOL_SDL).unwrap();
    let defs = value["messages"]["S6"]["F11"].as_array_mut().unwrap();
    let any = defs.pop().unwrap();
    defs.insert(0, any);
    let first = Sdl::from_value(Path::new("first.sdl"), &value).unwrap();
    assert_eq!(
        route(&first, &event("<U4 100>", reports)),
        Ok("AnyEvent".into())
    );
    assert_eq!(
        route(&first, &event("<U4 101>", reports)),
        Ok("AnyEvent".into())
    );
}

#[test]
fn keys_on_nested_elements() {
    let sdl = tool_sdl();
    // ALID 7 at body[2][0][1][0]: ChamberAlarm, whatever the CEID.
    let alarm = "<L [1] <L [2] <U4 5> <L [2] <U4 7> <F4 81.5>>>>";
    assert_eq!(
        route(&sdl, &event("<U4 4000>", alarm)),
        Ok("ChamberAlarm".into())
    );
    let other = "<L [1] <L [2] <U4 5> <L [2] <U4 8> <F4 81.5>>>>";
    assert_eq!(
        route(&sdl, &event("<U4 4000>", other)),
        Ok("AnyEvent".into())
    );
    // An earlier key still wins: CEID 100 with ALID 7 is LotStarted.
    assert_eq!(
        route(&sdl, &event("<U4 100>", alarm)),
        Ok("LotStarted".into())
    );
    // The key's place is missing (no reports): not ChamberAlarm.
    assert_eq!(
        route(&sdl, &event("<U4 4000>", "<L>")),
        Ok("AnyEvent".into())
    );
}

#[test]
fn exact_list_length_on_and_off() {
    let sdl = tool_sdl();
    // ChamberAlarm's report list is exact: two reports are not ChamberAlarm.
    let two = "<L [2] <L [2] <U4 5> <L [2] <U4 7> <F4 81.5>>> <L [2] <U4 6> <L>>>";
    assert_eq!(route(&sdl, &event("<U4 4000>", two)), Ok("AnyEvent".into()));
    // Its inner lists are open (the default in a named definition): an extra value matches.
    let more = "<L [1] <L [2] <U4 5> <L [3] <U4 7> <F4 81.5> <A \"C\">>>>";
    assert_eq!(
        route(&sdl, &event("<U4 4000>", more)),
        Ok("ChamberAlarm".into())
    );
    // So is the body: a fourth element after DATAID, CEID and the reports.
    assert_eq!(
        route(&sdl, "S6F11 W <L [4] <U4 1> <U4 100> <L> <A \"extra\">>"),
        Ok("LotStarted".into())
    );
    // An unnamed definition keeps exact lengths, as SDL files always had.
    let (plain, _) = Sdl::parse(
        Path::new("plain.sdl"),
        r#"{"messages": {"S6F11": {"direction": "h<-e", "body": ["U4", "U4", {"L*": ["U4", "ANY*"]}]}}}"#,
    )
    .unwrap();
    assert_eq!(
        route(&plain, "S6F11 W <L [3] <U4 1> <U4 100> <L>>"),
        Ok(String::new())
    );
    assert_eq!(
        route(&plain, "S6F11 W <L [4] <U4 1> <U4 100> <L> <A \"extra\">>"),
        Err(Rejected::IllegalData)
    );
}

#[test]
fn any_takes_an_item_of_any_format_but_not_no_item() {
    let sdl = tool_sdl();
    for value in [
        "<F4 81.5>",
        "<A \"hot\">",
        "<L [2] <U1 1> <U1 2>>",
        "<BOOLEAN TRUE>",
        "<B>",
    ] {
        let reports = format!("<L [1] <L [2] <U4 5> <L [2] <U4 7> {value}>>>");
        assert_eq!(
            route(&sdl, &event("<U4 4000>", &reports)),
            Ok("ChamberAlarm".into()),
            "{value}"
        );
    }
    // ANY must be there: a report with the ALID alone is not ChamberAlarm.
    let missing = "<L [1] <L [2] <U4 5> <L [1] <U4 7>>>>";
    assert_eq!(
        route(&sdl, &event("<U4 4000>", missing)),
        Ok("AnyEvent".into())
    );
}

#[test]
fn the_three_kinds_of_no_match() {
    let sdl = tool_sdl();
    // A stream the SDL does not define: S9F3.
    assert_eq!(route(&sdl, "S64F1 W"), Err(Rejected::UnknownStream));
    // A function it does not define: S9F5.
    assert_eq!(
        route(&sdl, "S6F13 W <L [3] <U4 1> <U4 100> <L>>"),
        Err(Rejected::UnknownFunction)
    );
    // No definition's key matches: S9F5 too.
    assert_eq!(
        route(&sdl, "S5F1 W <L [3] <B 0x81> <U4 3> <A \"leak\">>"),
        Err(Rejected::UnknownFunction)
    );
    // A key matched and the rest did not: S9F7, naming the definition.
    let r = sdl
        .matching(&msg("S5F1 W <L [3] <B 0x81> <U4 1> <U4 99>>"), false)
        .unwrap_err();
    assert_eq!(
        (r.kind.clone(), r.stream_nine(), r.definition.as_deref()),
        (Rejected::IllegalData, Some(7), Some("Overheat"))
    );
    assert_eq!(r.mismatch.to_string(), "body[2]: ALTX must be A, not U4");
    // The catch-all (no key) whose body does not match: S9F7.
    let r = sdl
        .matching(&msg("S6F11 W <L [3] <U4 1> <A \"x\"> <L>>"), false)
        .unwrap_err();
    assert_eq!(
        (r.stream_nine(), r.definition.as_deref()),
        (Some(7), Some("AnyEvent"))
    );
}

// ------------------------------------------------------------ remote commands

/// What the host sends a tool: remote commands and terminal messages by content.
const HOST_SDL: &str = r#"{
  "defaults": {"direction": "h->e", "reply": true},
  "messages": {
    "S2": {"F41": [
      {"name": "StartLot", "remote_command": {
         "RCMD": "START",
         "parameters": {"LOTID": {"format": "A", "length": "1-16"}, "RECIPE": "A", "PRIORITY": "U1"},
         "optional": ["PRIORITY"]}},
      {"name": "StopNow", "remote_command": {"RCMD": "STOP", "parameters": {"MODE": "U1"}}},
      {"name": "Stop", "remote_command": {"RCMD": "STOP"}}
    ]},
    "S10": {"F3": [
      {"name": "Greeting", "body": [{"name": "TID", "format": "B"}, {"name": "TEXT", "format": "A", "key": "hello"}]},
      {"name": "Terminal", "body": [{"name": "TID", "format": "B"}, {"name": "TEXT", "format": "A"}]}
    ]}
  }
}
"#;

fn host_sdl() -> Sdl {
    let (sdl, warnings) = Sdl::parse(Path::new("host.sdl"), HOST_SDL).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    sdl
}

/// The definition a host's message matches, or the reply (or stream 9 function) refusing it.
fn command(sdl: &Sdl, text: &str) -> Result<String, String> {
    sdl.matching(&msg(text), true)
        .map(|m| m.definition.name_or_empty().to_string())
        .map_err(|r| match r.reply_body() {
            Some(body) => body.to_string(),
            None => format!("S9F{}", r.stream_nine().unwrap_or(0)),
        })
}

fn s2f41(rcmd: &str, parameters: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = parameters
        .iter()
        .map(|(name, value)| format!("<L [2] <A \"{name}\"> {value}>"))
        .collect();
    format!(
        "S2F41 W <L [2] <A \"{rcmd}\"> <L [{}] {}>>",
        pairs.len(),
        pairs.join(" ")
    )
}

#[test]
fn remote_commands_match_whatever_the_order_of_their_parameters() {
    let sdl = host_sdl();
    let lot = ("LOTID", "<A \"LOT-7\">");
    let recipe = ("RECIPE", "<A \"R1\">");
    let priority = ("PRIORITY", "<U1 2>");
    for order in [
        vec![lot, recipe],
        vec![recipe, lot],
        vec![priority, recipe, lot],
        vec![recipe, priority, lot],
    ] {
        assert_eq!(
            command(&sdl, &s2f41("START", &order)),
            Ok("StartLot".into()),
            "{order:?}"
        );
    }
    // STOP by content: with MODE it is StopNow, without it Stop.
    assert_eq!(
        command(&sdl, &s2f41("STOP", &[("MODE", "<U1 1>")])),
        Ok("StopNow".into())
    );
    assert_eq!(command(&sdl, &s2f41("STOP", &[])), Ok("Stop".into()));
}

#[test]
fn a_missing_and_an_unknown_cpname_get_hcack_3_with_their_cpacks() {
    let sdl = host_sdl();
    // RECIPE missing (CPACK 2: no legal value), SPEED unknown (CPACK 1): the host's order
    // first, then the missing ones.
    assert_eq!(
        command(
            &sdl,
            &s2f41("START", &[("SPEED", "<U4 3>"), ("LOTID", "<A \"LOT-7\">")])
        ),
        Err("<L [2] <B 0x03> <L [2] <L [2] <A \"SPEED\"> <B 0x01>> <L [2] <A \"RECIPE\"> <B 0x02>>>>".into())
    );
    // A value of the wrong format (CPACK 3) and one out of its length (CPACK 2).
    assert_eq!(
        command(
            &sdl,
            &s2f41(
                "START",
                &[("RECIPE", "<U4 1>"), ("LOTID", "<A \"LOT-000000000000001\">")]
            )
        ),
        Err("<L [2] <B 0x03> <L [2] <L [2] <A \"RECIPE\"> <B 0x03>> <L [2] <A \"LOTID\"> <B 0x02>>>>".into())
    );
    // A parameter sent twice: the second is not a legal value.
    assert_eq!(
        command(
            &sdl,
            &s2f41(
                "START",
                &[
                    ("LOTID", "<A \"A\">"),
                    ("RECIPE", "<A \"R\">"),
                    ("LOTID", "<A \"B\">")
                ]
            )
        ),
        Err("<L [2] <B 0x03> <L [1] <L [2] <A \"LOTID\"> <B 0x02>>>>".into())
    );
    // A command no definition has: HCACK 1.
    assert_eq!(
        command(&sdl, &s2f41("PAUSE", &[])),
        Err("<L [2] <B 0x01> <L [0]>>".into())
    );
    // Not a remote command at all: no key can be read, S9F5.
    assert_eq!(command(&sdl, "S2F41 W <A \"START\">"), Err("S9F5".into()));
}

// ------------------------------------------------------------ the gateway

/// A fresh project folder with `project.toml`, the tool's SDL and handler files.
fn project(name: &str, toml: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("secsgate-match-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("handlers")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("project.toml"), toml).unwrap();
    std::fs::write(dir.join("tool.sdl"), TOOL_SDL).unwrap();
    for (path, text) in files {
        std::fs::write(dir.join(path), text).unwrap();
    }
    dir
}

fn toml(port: u16, extra: &str) -> String {
    format!(
        "[gateway]\nhandler_timeout = 5\ncustom_response_timeout = 5\nstartup_wait = 5\n\n[[equipment]]\nname = \"Tool1\"\nport = {port}\nsdl = \"tool.sdl\"\nrealtime = []\ntimers = {{ t3 = 5, t5 = 0.2 }}\n{extra}\n"
    )
}

/// A handler line that writes a JSON value to out/NAME.json (atomically).
fn emit(name: &str, expr: &str) -> String {
    format!(
        "import json as _j, os as _o\n_p = _o.path.join(_o.path.dirname(_o.path.dirname(__file__)), 'out', '{name}.json')\nopen(_p + '.tmp', 'w').write(_j.dumps({expr}))\n_o.replace(_p + '.tmp', _p)\n"
    )
}

/// Waits for a handler to have written `out/NAME.json` (checked each time the engine
/// finishes jobs) and returns it (removing it).
async fn output(engine: &ScriptEngine, dir: &Path, name: &str) -> Value {
    let path = dir.join("out").join(format!("{name}.json"));
    let mut done = engine.watch_completed();
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(v) = serde_json::from_str(&text)
        {
            let _ = std::fs::remove_file(&path);
            return v;
        }
        tokio::time::timeout_at(until, done.changed())
            .await
            .unwrap_or_else(|_| panic!("no {} within {WAIT:?}", path.display()))
            .expect("the engine is running");
    }
}

/// The equipment: a passive endpoint that answers the gateway's S1F13 and passes on what
/// else the gateway sends (its stream 9 messages).
struct Equipment {
    link: Link,
    port: u16,
    others: tokio::sync::mpsc::UnboundedReceiver<Message>,
}

async fn equipment() -> Equipment {
    let mut settings = Settings::new(Mode::Passive("127.0.0.1:0".into()));
    settings.protocol.t3 = Duration::from_secs(5);
    let Endpoint {
        link,
        incoming,
        local_addr,
    } = driver::start(settings).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(serve(link.clone(), incoming, tx));
    Equipment {
        link,
        port: local_addr.unwrap().port(),
        others: rx,
    }
}

async fn serve(
    link: Link,
    mut incoming: Incoming,
    others: tokio::sync::mpsc::UnboundedSender<Message>,
) {
    while let Some(Received::Message(m)) = incoming.recv().await {
        if (m.stream, m.function) == (1, 13) {
            let body = sml::parse_item("<L [2] <B 0> <L [2] <A \"EQ\"> <A \"1.0\">>>").ok();
            let _ = link.reply(&m, body).await;
        } else if others.send(m).is_err() {
            return;
        }
    }
}

async fn start(dir: &Path) -> Gateway {
    let project = Project::load(dir).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway = Gateway::start(&project, false).await;
    let conn = gateway.connection("Tool1").unwrap();
    let mut watch = conn.watch_status();
    tokio::time::timeout(WAIT, watch.wait_for(|s| *s == Status::Communicating))
        .await
        .expect("communicating")
        .unwrap();
    gateway
}

async fn reply(eq: &Equipment, text: &str) -> String {
    tokio::time::timeout(WAIT, eq.link.request(msg(text)))
        .await
        .expect("a reply in time")
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .to_string()
}

/// The stream 9 function a primary is answered with.
async fn stream_nine(eq: &mut Equipment, text: &str) -> u8 {
    let pending = eq.link.send_request(msg(text)).await.unwrap();
    let s9 = tokio::time::timeout(WAIT, eq.others.recv())
        .await
        .expect("a stream 9 message in time")
        .unwrap();
    assert_eq!(s9.stream, 9, "{text}: {s9}");
    let Some(Item::B(mhead)) = &s9.body else {
        panic!("no MHEAD: {s9}")
    };
    assert_eq!(
        u32::from_be_bytes([mhead[6], mhead[7], mhead[8], mhead[9]]),
        pending.system_bytes,
        "the MHEAD names the primary"
    );
    match pending.wait().await {
        Err(LinkError::StreamNine { function, .. }) => assert_eq!(function, s9.function),
        other => panic!("{text}: expected the stream 9 message to end it, got {other:?}"),
    }
    s9.function
}

/// Rows of the message store: (StreamFunction, Direction, MessageName, CommonID).
fn stored(dir: &Path) -> Vec<(String, String, Option<String>, String)> {
    let conn = rusqlite::Connection::open(dir.join("data/secsgate.sqlite")).unwrap();
    let mut stmt = conn
        .prepare("SELECT StreamFunction, Direction, MessageName, CommonID FROM SECSGEM_Messages ORDER BY ID")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_s9f3_s9f5_s9f7_for_the_three_kinds_of_no_match() {
    let mut eq = equipment().await;
    let dir = project("s9", &toml(eq.port, ""), &[]);
    let gateway = start(&dir).await;

    assert_eq!(stream_nine(&mut eq, "S64F1 W").await, 3);
    assert_eq!(
        stream_nine(&mut eq, "S6F13 W <L [3] <U4 1> <U4 100> <L>>").await,
        5
    );
    assert_eq!(
        stream_nine(&mut eq, "S5F1 W <L [3] <B 0x81> <U4 3> <A \"leak\">>").await,
        5
    );
    assert_eq!(
        stream_nine(&mut eq, "S5F1 W <L [3] <B 0x81> <U4 1> <U4 99>>").await,
        7
    );
    assert_eq!(
        stream_nine(&mut eq, "S6F11 W <L [3] <U4 1> <A \"x\"> <L>>").await,
        7
    );
    // What matches is answered as usual.
    assert_eq!(
        reply(&eq, "S5F1 W <L [3] <B 0x81> <U4 2> <A \"vacuum lost\">>").await,
        "S5F2 <B 0x00> ."
    );
    assert_eq!(
        reply(&eq, "S6F11 W <L [3] <U4 1> <U4 100> <L>>").await,
        "S6F12 <B 0x00> ."
    );
    gateway.shutdown().await;

    // The store names what matched; the refused ones are in Errors.
    let rows = stored(&dir);
    let named: Vec<_> = rows
        .iter()
        .filter(|(sf, d, _, _)| d == "Received" && sf != "S1F14")
        .map(|(sf, _, name, _)| (sf.as_str(), name.as_deref()))
        .collect();
    assert_eq!(
        named,
        [
            ("S64F1", None),
            ("S6F13", None),
            ("S5F1", None),
            ("S5F1", None),
            ("S6F11", None),
            ("S5F1", Some("VacuumLost")),
            ("S6F11", Some("LotStarted")),
        ]
    );
    let conn = rusqlite::Connection::open(dir.join("data/secsgate.sqlite")).unwrap();
    let reasons: Vec<String> = conn
        .prepare("SELECT Reason FROM SECSGEM_Errors WHERE Kind = 'validation' ORDER BY ID")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert!(reasons[0].ends_with("answered S9F3"), "{}", reasons[0]);
    assert!(
        reasons[2]
            .contains("matches none of its definitions (Overheat, VacuumLost): no key matched"),
        "{}",
        reasons[2]
    );
    assert!(
        reasons[3].contains("body[2]: ALTX must be A, not U4; answered S9F7"),
        "{}",
        reasons[3]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tool that sends remote commands to its host (an SDL may define them either way): the
/// gateway refuses a malformed one with the S2F42 a definition says, as a tool would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_a_remote_command_with_hcack_and_cpacks() {
    let eq = equipment().await;
    let sdl = r#"{"messages": {
      "S2F41": [{"name": "Recipe", "direction": "h<-e", "reply": true,
                 "remote_command": {"RCMD": "RECIPE", "parameters": {"PPID": "A", "STEP": "U4"}}}],
      "S2F42": {"direction": "h->e", "body": ["B", {"L*": [["A", "B"]]}]}
    }}"#;
    let dir = project("rcmd", &toml(eq.port, ""), &[("tool.sdl", sdl)]);
    let gateway = start(&dir).await;
    let recipe = |pairs: &str| format!("S2F41 W <L [2] <A \"RECIPE\"> <L {pairs}>>");
    // PPID missing, SPEED unknown.
    assert_eq!(
        reply(
            &eq,
            &recipe("<L [2] <A \"STEP\"> <U4 2>> <L [2] <A \"SPEED\"> <U4 9>>")
        )
        .await,
        "S2F42 <L [2] <B 0x03> <L [2] <L [2] <A \"SPEED\"> <B 0x01>> <L [2] <A \"PPID\"> <B 0x02>>>> ."
    );
    assert_eq!(
        reply(&eq, "S2F41 W <L [2] <A \"PURGE\"> <L>>").await,
        "S2F42 <L [2] <B 0x01> <L [0]>> ."
    );
    // A good one passes the SDL and gets the GEM host's answer to what it does not handle.
    let good = recipe("<L [2] <A \"STEP\"> <U4 2>> <L [2] <A \"PPID\"> <A \"R1\">>");
    assert_eq!(reply(&eq, &good).await, "S2F0 .");
    gateway.shutdown().await;
    let conn = rusqlite::Connection::open(dir.join("data/secsgate.sqlite")).unwrap();
    let reasons: Vec<String> = conn
        .prepare("SELECT Reason FROM SECSGEM_Errors WHERE Kind = 'validation' ORDER BY ID")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        reasons,
        [
            "remote command refused: body[1]: invalid parameters (SPEED CPACK 1, PPID CPACK 2); answered S2F42 HCACK 3",
            "remote command refused: S2F41: no remote command \"PURGE\" among its definitions (Recipe); answered S2F42 HCACK 1",
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handlers_for_one_sf_selected_by_ceid() {
    let eq = equipment().await;
    let mapping = "\
[[equipment.handler]]
message = \"LotStarted\"
handler = \"onLotStarted\"

[[equipment.handler]]
message = \"LotEnded\"
handler = \"onLotEnded\"

[[equipment.handler]]
stream_function = \"S6F11\"
handler = \"onEveryEvent\"

[[equipment.custom_response]]
message = \"LotEnded\"
handler = \"answerLotEnded\"

[[equipment.custom_response]]
stream_function = \"S6F11\"
handler = \"answerEvent\"
";
    let answer = |code: u8| {
        format!(
            "system.secsgem.sendResponse(payload['TxID'], payload['SystemBytes'], 'S6F12', {{'format': 'B', 'value': {code}}}, payload['Equipment'])\n"
        )
    };
    let seen = "dict(payload.items())";
    let started = emit("started", seen);
    let ended = emit("ended", seen);
    let every = emit("every", "[payload['MessageName'], payload['CommonID']]");
    let answer_ended = format!(
        "{}{}",
        emit("answered_ended", "payload['MessageName']"),
        answer(3)
    );
    let answer_other = format!(
        "{}{}",
        emit("answered", "payload['MessageName']"),
        answer(7)
    );
    let dir = project(
        "handlers",
        &toml(eq.port, mapping),
        &[
            ("handlers/onLotStarted.py", &started),
            ("handlers/onLotEnded.py", &ended),
            ("handlers/onEveryEvent.py", &every),
            ("handlers/answerLotEnded.py", &answer_ended),
            ("handlers/answerEvent.py", &answer_other),
        ],
    );
    let gateway = start(&dir).await;
    let engine = gateway.engine().clone();

    // CEID 100: LotStarted. The S/F-level custom response answers (ACKC6 7); the handler
    // mapped to LotStarted and the one mapped to S6F11 get it.
    let lot_started =
        "S6F11 W <L [3] <U4 1> <U4 100> <L [1] <L [2] <U4 9> <L [1] <A \"LOT-1\">>>>>";
    assert_eq!(reply(&eq, lot_started).await, "S6F12 <B 0x07> .");
    assert_eq!(output(&engine, &dir, "answered").await, "LotStarted");
    let payload = output(&engine, &dir, "started").await;
    assert_eq!(payload["MessageName"], "LotStarted");
    assert_eq!(payload["StreamFunction"], "S6F11");
    assert_eq!(payload["CommonID"], "100");
    assert_eq!(payload["RequestResponse"], "Request");
    let message: Value = serde_json::from_str(payload["Message"].as_str().unwrap()).unwrap();
    assert_eq!(
        message["header"]["doc"], "Lot started",
        "annotated as LotStarted"
    );
    assert_eq!(
        output(&engine, &dir, "every").await,
        serde_json::json!(["LotStarted", "100"])
    );

    // CEID 101: LotEnded. Its own custom response answers (ACKC6 3).
    let lot_ended = "S6F11 W <L [3] <U4 2> <U4 101> <L>>";
    assert_eq!(reply(&eq, lot_ended).await, "S6F12 <B 0x03> .");
    assert_eq!(output(&engine, &dir, "answered_ended").await, "LotEnded");
    assert_eq!(
        output(&engine, &dir, "ended").await["MessageName"],
        "LotEnded"
    );
    assert_eq!(
        output(&engine, &dir, "every").await,
        serde_json::json!(["LotEnded", "101"])
    );

    // Another CEID: the catch-all; only the S/F-level mappings take it.
    assert_eq!(
        reply(&eq, "S6F11 W <L [3] <U4 3> <U4 4000> <L>>").await,
        "S6F12 <B 0x07> ."
    );
    assert_eq!(output(&engine, &dir, "answered").await, "AnyEvent");
    assert_eq!(
        output(&engine, &dir, "every").await,
        serde_json::json!(["AnyEvent", "3"])
    );

    // LotStarted once more: the handlers of one equipment run in order, so once it is seen
    // every earlier job has finished. 3 + 3 + 2 + 3 jobs: nothing else ran.
    assert_eq!(reply(&eq, lot_started).await, "S6F12 <B 0x07> .");
    assert_eq!(
        output(&engine, &dir, "every").await,
        serde_json::json!(["LotStarted", "100"])
    );
    assert_eq!(
        output(&engine, &dir, "started").await["MessageName"],
        "LotStarted"
    );
    assert_eq!(output(&engine, &dir, "answered").await, "LotStarted");
    // The count is kept per batch of jobs: once it shows the last job, it shows every job
    // before it.
    let mut done = engine.watch_completed();
    tokio::time::timeout(WAIT, done.wait_for(|n| *n >= 11))
        .await
        .expect("11 jobs finished")
        .unwrap();
    assert_eq!(engine.completed(), 11);
    assert!(
        !dir.join("out/ended.json").exists(),
        "onLotEnded ran for a LotStarted"
    );
    gateway.shutdown().await;
    let names: Vec<_> = stored(&dir)
        .into_iter()
        .filter(|(sf, _, _, _)| sf == "S6F11")
        .map(|(_, _, name, id)| (name, id))
        .collect();
    assert_eq!(
        names,
        [
            (Some("LotStarted".to_string()), "100".to_string()),
            (Some("LotEnded".to_string()), "101".to_string()),
            (Some("AnyEvent".to_string()), "3".to_string()),
            (Some("LotStarted".to_string()), "100".to_string()),
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn handler_mappings_name_definitions_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("handlers")).unwrap();
    std::fs::write(dir.path().join("handlers/h.py"), "pass\n").unwrap();
    std::fs::write(dir.path().join("tool.sdl"), TOOL_SDL).unwrap();
    let load = |extra: &str| {
        let text = format!("[[equipment]]\nname = \"T\"\nport = 5000\nsdl = \"tool.sdl\"\n{extra}");
        Project::parse(dir.path(), &dir.path().join("project.toml"), &text)
    };
    let ok = load("\n[[equipment.custom_response]]\nmessage = \"LotEnded\"\nhandler = \"h\"\n\n[[equipment.handler]]\nmessage = \"Overheat\"\nhandler = \"h\"\n").unwrap();
    let e = &ok.equipment[0];
    assert_eq!(
        e.custom_responses[0].selector,
        Selector::Message {
            name: "LotEnded".into(),
            stream_function: "S6F11".parse().unwrap()
        }
    );
    assert_eq!(e.handlers[0].selector.stream_function().to_string(), "S5F1");

    let errors = |extra: &str| -> Vec<String> {
        load(extra)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(
        errors("\n[[equipment.handler]]\nmessage = \"LotStrated\"\nhandler = \"h\"\n"),
        [format!(
            "{}:7: equipment[0].handler[0].message: no definition named 'LotStrated' in the SDL tool.sdl (its names: AnyEvent, ChamberAlarm, LotEnded, LotStarted, Overheat, VacuumLost)",
            dir.path().join("project.toml").display()
        )]
    );
    let both = errors(
        "\n[[equipment.custom_response]]\nstream_function = \"S6F11\"\nmessage = \"LotEnded\"\nhandler = \"h\"\n",
    );
    assert!(
        both[0].ends_with(
            ":8: equipment[0].custom_response[0].message: give stream_function or message, not both"
        ),
        "{both:?}"
    );
    let neither = errors("\n[[equipment.handler]]\nhandler = \"h\"\n");
    assert!(
        neither[0].contains(":6: equipment[0].handler[0]: needs stream_function"),
        "{neither:?}"
    );
    let twice = errors(
        "\n[[equipment.custom_response]]\nmessage = \"LotEnded\"\nhandler = \"h\"\n\n[[equipment.custom_response]]\nmessage = \"LotEnded\"\nhandler = \"h\"\n",
    );
    assert!(twice[0].ends_with(":11: equipment[0].custom_response[1].message: LotEnded (S6F11) has more than one custom response"), "{twice:?}");
    // The standard catalogue names no definition; sdl = "none" has none at all.
    let text = "[[equipment]]\nname = \"T\"\nport = 5000\n\n[[equipment.handler]]\nmessage = \"LotEnded\"\nhandler = \"h\"\n";
    let e = Project::parse(dir.path(), &dir.path().join("project.toml"), text).unwrap_err();
    assert!(e[0].to_string().contains(":6: equipment[0].handler[0].message: no definition named 'LotEnded' in the SDL sdl/messages.sdl (it names no definition)"), "{}", e[0]);
    let text = text.replace("port = 5000\n", "port = 5000\nsdl = \"none\"\n");
    let e = Project::parse(dir.path(), &dir.path().join("project.toml"), &text).unwrap_err();
    assert!(e[0].to_string().contains("equipment[0].handler[0].message: 'LotEnded' names an SDL definition, but the equipment has no SDL"), "{}", e[0]);
}

// ------------------------------------------------------------ the simulator

const SIM_CONFIG: &str = r#"
[equipment]
mdln = "MATCHER"
sdl = "host.sdl"

[[collection_event]]
id = 100
name = "LotStarted"

[[event_run]]
name = "lot"
[[event_run.step]]
event = 100

[[remote_command]]
name = "START"
ack = 4
run = "lot"
parameters = [{ name = "LOTID", format = "A" }, { name = "RECIPE", format = "A" }, { name = "PRIORITY", format = "U1" }]

[[echo]]
message = "StopNow"
reply = "<L [2] <B 0> <L>>"

[[echo]]
message = "Stop"
reply = "<L [2] <B 5> <L>>"

[[echo]]
message = "Greeting"
reply = "<B 0>"

[[echo]]
message = "Terminal"
reply = "<B 1>"
"#;

fn sim_files(dir: &Path, config: &str) -> PathBuf {
    std::fs::write(dir.join("host.sdl"), HOST_SDL).unwrap();
    let path = dir.join("sim.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_answers_start_and_stop_by_definition_and_refuses_as_the_sdl_says() {
    let dir = tempfile::tempdir().unwrap();
    let config = SimConfig::load(&sim_files(dir.path(), SIM_CONFIG)).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let mut settings = Settings::new(Mode::Passive("127.0.0.1:0".into()));
    settings.protocol.linktest = None;
    let sim = Simulator::start("matcher".into(), config, settings, dir.path().join("spool"))
        .await
        .expect("simulator starts");
    let mut host = Settings::new(Mode::Active(sim.local_addr().unwrap().to_string()));
    host.protocol.linktest = None;
    let endpoint = driver::start(host).await.unwrap();
    endpoint.link.wait_selected(WAIT).await.unwrap();
    let link = endpoint.link.clone();
    // The simulator's own primaries (its S1F13, event reports) are acknowledged.
    let acker = link.clone();
    let mut incoming = endpoint.incoming;
    tokio::spawn(async move {
        while let Some(Received::Message(m)) = incoming.recv().await {
            if m.w_bit {
                let body = match (m.stream, m.function) {
                    (1, 13) => sml::parse_item("<L [2] <B 0> <L>>").ok(),
                    _ => Some(Item::B(vec![0])),
                };
                let _ = acker.reply(&m, body).await;
            }
        }
    });
    let ask = |text: String| {
        let link = link.clone();
        async move {
            match tokio::time::timeout(WAIT, link.request(msg(&text))).await {
                Ok(Ok(reply)) => reply.body.map_or("(none)".into(), |b| b.to_string()),
                Ok(Err(LinkError::StreamNine { function, .. })) => format!("S9F{function}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    };
    assert_eq!(
        ask("S1F13 W <L>".into()).await,
        "<L [2] <B 0x00> <L [2] <A \"MATCHER\"> <A \"0.1.0\">>>"
            .replace("0.1.0", env!("CARGO_PKG_VERSION"))
    );

    // START: the definition matches whatever the order, and the [[remote_command]] carries
    // it out (HCACK 4).
    let start = s2f41(
        "START",
        &[("RECIPE", "<A \"R1\">"), ("LOTID", "<A \"LOT-7\">")],
    );
    assert_eq!(ask(start).await, "<L [2] <B 0x04> <L [0]>>");
    // A missing RECIPE and an unknown SPEED: refused by the SDL, HCACK 3 with CPACKs.
    let bad = s2f41("START", &[("SPEED", "<U4 3>"), ("LOTID", "<A \"LOT-7\">")]);
    assert_eq!(
        ask(bad).await,
        "<L [2] <B 0x03> <L [2] <L [2] <A \"SPEED\"> <B 0x01>> <L [2] <A \"RECIPE\"> <B 0x02>>>>"
    );
    // STOP answered by content: StopNow (with MODE) and Stop have their own replies.
    assert_eq!(
        ask(s2f41("STOP", &[("MODE", "<U1 1>")])).await,
        "<L [2] <B 0x00> <L [0]>>"
    );
    assert_eq!(ask(s2f41("STOP", &[])).await, "<L [2] <B 0x05> <L [0]>>");
    // A command no definition has: HCACK 1.
    assert_eq!(ask(s2f41("PAUSE", &[])).await, "<L [2] <B 0x01> <L [0]>>");
    // Not a remote command's shape: S9F5 (no key could be read).
    assert_eq!(ask("S2F41 W <U4 1>".into()).await, "S9F5");
    // S10F3 by its text.
    assert_eq!(
        ask("S10F3 W <L [2] <B 0x00> <A \"hello\">>".into()).await,
        "<B 0x00>"
    );
    assert_eq!(
        ask("S10F3 W <L [2] <B 0x00> <A \"other\">>".into()).await,
        "<B 0x01>"
    );
    assert_eq!(
        ask("S10F3 W <L [2] <U1 0> <A \"other\">>".into()).await,
        "S9F7"
    );
    // What the SDL does not define is the GEM engine's, as before.
    assert_eq!(
        ask("S1F1 W".into()).await,
        format!(
            "<L [2] <A \"MATCHER\"> <A \"{}\">>",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(ask("S10F5 W <L [2] <B 0x00> <L>>".into()).await, "S9F5");
    assert_eq!(ask("S64F1 W".into()).await, "S9F3");
    endpoint.link.shutdown().await;
    sim.shutdown().await;
}

#[test]
fn simulator_configs_name_definitions_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let error = |config: &str| {
        SimConfig::load(&sim_files(dir.path(), config))
            .unwrap_err()
            .to_string()
    };
    let e = error(&SIM_CONFIG.replace("message = \"Stop\"\n", "message = \"Halt\"\n"));
    assert!(
        e.contains("echo.message: no definition named 'Halt' in")
            && e.contains("(its names: Greeting, StartLot, Stop, StopNow, Terminal)"),
        "{e}"
    );
    // START defined in the SDL but carried out by nothing.
    let e = error(&SIM_CONFIG.replace("name = \"START\"", "name = \"BEGIN\""));
    assert!(
        e.contains("sim.toml:4: equipment.sdl:") && e.contains("the S2F41 definition StartLot of command \"START\" has neither a [[remote_command]] named START nor an [[echo]] with message = \"StartLot\""),
        "{e}"
    );
    let e = error("[[echo]]\nmessage = \"Stop\"\nreply = \"<B 0>\"\n");
    assert!(
        e.contains("echo.message: 'Stop' names an SDL definition, but [equipment] has no sdl"),
        "{e}"
    );
    let e = error("[equipment]\nsdl = \"missing.sdl\"\n");
    assert!(
        e.contains("sim.toml:2: equipment.sdl:") && e.contains("missing.sdl: cannot read"),
        "{e}"
    );
}
