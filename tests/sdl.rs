//! SDL files in Ignition's shape: every key loads and means what it says, unknown keys warn
//! and wrong values fail at their file, line and key, CommonID extraction, the standard
//! catalogue (`sdl/messages.sdl`), the project's `sdl` key and `secsgate check`.

use std::path::{Path, PathBuf};
use std::process::Command;

use secsgate::config::Project;
use secsgate::sdl::{Block, Direction, Sdl, Spec};
use secsgate::secs2::{Message, StreamFunction, json, sml};

fn sf(text: &str) -> StreamFunction {
    text.parse().unwrap()
}

fn msg(text: &str) -> Message {
    sml::parse_message(text).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// An SDL written the way Ignition's SDL editor saves one, using every key.
const IGNITION_SHAPED: &str = r#"{
  "doc": ["Etch tool SDL.", "Based on the default messages.sdl."],
  "formats": {
    "A": {"doc": "ASCII"},
    "B": {"doc": "Binary"},
    "Bool": {"doc": "Boolean"},
    "Local": {"doc": "Localized string"},
    "B64": {"doc": "Base64 binary"},
    "U4": {"doc": "Unsigned Integer Four Bytes"},
    "I": {"doc": "Any signed integer"},
    "U": {"doc": "Any unsigned integer"},
    "F": {"doc": "Any float"}
  },
  "defaults": {"direction": "h<->e", "reply": "false", "block": "single", "realtime": "FALSE", "SQLTags": false},
  "items": {
    "A": {
      "ACKC6": {"doc": "ACKC6, Acknowledge Code", "format": "B", "length": 1,
                "codes": {"0": "Accepted", ">0": "Error, not accepted"}},
      "ALTX": {"doc": "ALTX, Alarm Text", "format": "A", "length": 120}
    },
    "C": {"CEID": {"doc": "CEID, Collected Event ID", "format": "U"}},
    "D": {"DATAID": {"doc": "DATAID, Data ID", "format": ["U4", "A"]}},
    "E": {
      "ECID": {"doc": "ECID, Equipment Constant ID", "format": ["U", "I", "A"]},
      "ECV": {"doc": "ECV, Equipment Constant Value", "format": ["U", "I", "F", "A", "Bool"]}
    },
    "V": {"doc": "V, Variable Data"}
  },
  "messages": {
    "S2": {
      "F13": {"doc": "Equipment Constant Request", "direction": "h->e", "reply": "True", "body": "ECID*"},
      "F14": {"doc": "Equipment Constant Data", "direction": "h<-e", "reply": false,
              "realtime": "true", "SQLTags": "True", "CommonID": ["ECV"], "body": "ECV*"}
    },
    "S5": {
      "F1": {"doc": ["Alarm Report Send", "(ARS)"], "direction": "h<-e", "reply": true,
             "body": {"L": [{"name": "ALCD", "format": "B", "doc": "ALCD, Alarm Code",
                             "codes": {"0-127": "Alarm cleared", "128-255": "Alarm set"}},
                            {"name": "ALID", "format": "U4", "doc": "ALID, Alarm ID"},
                            {"name": "ALTX"}]}}
    },
    "S6": {
      "F11": {"doc": "Event Report Send", "direction": "h<-e", "reply": "TRUE", "block": "multiple",
              "realtime": true, "SQLTags": false, "CommonID": ["CEID"],
              "body": [{"name": "DATAID"}, "CEID",
                       {"L*": {"L": [{"name": "RPTID", "format": "U4", "doc": "RPTID, Report ID"},
                                     {"L*": "V"}]}}]},
      "F12": {"doc": "Event Report Acknowledge", "direction": "h->e", "body": "ACKC6"}
    },
    "S1F1": {"doc": "Are You There", "reply": true}
  }
}
"#;

#[test]
fn an_ignition_shaped_sdl_loads_and_means_what_it_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "tool.sdl", IGNITION_SHAPED);
    let (sdl, warnings) = Sdl::load(&path).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        sdl.doc,
        ["Etch tool SDL.", "Based on the default messages.sdl."]
    );
    for code in ["Bool", "Local", "B64", "I", "U", "F"] {
        assert!(sdl.formats.contains_key(code), "{code}");
    }
    assert_eq!(sdl.formats["Bool"], "Boolean");

    // Flags, with booleans written as strings in any case.
    let s2f14 = sf("S2F14");
    assert!(sdl.realtime(s2f14));
    assert!(sdl.sql_tags(s2f14));
    assert_eq!(sdl.common_id(s2f14), ["ECV"]);
    assert_eq!(sdl.block(s2f14), Some(Block::Single), "from defaults");
    assert!(sdl.message(sf("S2F13")).unwrap().reply);
    let s6f11 = sf("S6F11");
    assert!(sdl.realtime(s6f11) && !sdl.sql_tags(s6f11));
    assert_eq!(sdl.block(s6f11), Some(Block::Multiple));
    assert_eq!(sdl.doc(s6f11), Some("Event Report Send"));
    assert_eq!(sdl.doc(sf("S5F1")), Some("Alarm Report Send (ARS)"));
    assert_eq!(sdl.message(s6f11).unwrap().direction, Direction::ToHost);
    // Defaults fill what a message leaves out; a flat "S1F1" key is a message too.
    let s1f1 = sdl.message(sf("S1F1")).unwrap();
    assert_eq!(
        (s1f1.direction, s1f1.reply, s1f1.realtime, s1f1.sql_tags),
        (Direction::Both, true, false, false)
    );
    let s6f12 = sdl.message(sf("S6F12")).unwrap();
    assert!(!s6f12.reply && !s6f12.realtime && s6f12.common_id.is_empty());
    assert!(sdl.common_id(sf("S5F1")).is_empty());
    assert_eq!(sdl.block(sf("S9F1")), None);

    // Items by letter, item objects in bodies (named, inline, referring), checked and
    // annotated.
    assert!(sdl.items.contains_key("ALTX") && sdl.items.contains_key("V"));
    let event =
        msg("S6F11 W <L [3] <U4 1> <U2 4000> <L [1] <L [2] <U4 9> <L [2] <F4 1.5> <A \"L1\">>>>>");
    assert_eq!(sdl.check(&event, false), Ok(()));
    let bad = msg("S6F11 W <L [3] <U4 1> <U2 4000> <L [1] <L [2] <U2 9> <L>>>>");
    assert_eq!(
        sdl.check(&bad, false).unwrap_err().to_string(),
        "body[2][0][0]: RPTID must be U4, not U2"
    );
    let mut v = json::message_to_json(&event);
    sdl.annotate(&event, &mut v);
    assert_eq!(v["header"]["doc"], "Event Report Send");
    assert_eq!(v["body"][2][0][0]["doc"], "RPTID, Report ID");
    let alarm = msg("S5F1 W <L [3] <B 0x84> <U4 7> <A \"overheat\">>");
    assert_eq!(sdl.check(&alarm, false), Ok(()));
    let mut v = json::message_to_json(&alarm);
    sdl.annotate(&alarm, &mut v);
    assert_eq!(v["body"][0]["codeDesc"], "Alarm set");
    assert_eq!(v["body"][2]["doc"], "ALTX, Alarm Text");
    let long = format!("S5F1 W <L [3] <B 0x04> <U4 7> <A \"{}\">>", "x".repeat(121));
    assert_eq!(
        sdl.check(&msg(&long), false).unwrap_err().to_string(),
        "body[2]: ALTX must have at most 120 values, not 121"
    );
}

#[test]
fn common_id_is_the_values_of_the_named_items() {
    let dir = tempfile::tempdir().unwrap();
    let (sdl, _) = Sdl::load(&write(dir.path(), "tool.sdl", IGNITION_SHAPED)).unwrap();
    let event = msg("S6F11 W <L [3] <U4 1> <U4 4000> <L>>");
    assert_eq!(sdl.common_id_value(&event).as_deref(), Some("4000"));
    // S2F14 with CommonID ["ECV"], as Ignition's worked example sets it: every ECV, in order.
    let constants = msg("S2F14 <L [3] <U4 80> <F4 1.5> <A \"ON\">>");
    assert_eq!(
        sdl.common_id_value(&constants).as_deref(),
        Some("80,1.5,ON")
    );
    assert_eq!(sdl.common_id_value(&msg("S2F14 <L>")).as_deref(), Some(""));
    // No CommonID in the SDL, or no such message: None.
    assert_eq!(sdl.common_id_value(&msg("S6F12 <B 0x00>")), None);
    assert_eq!(sdl.common_id_value(&msg("S7F1 W <L>")), None);

    // Several items, joined with "_" in the list's order.
    let two = IGNITION_SHAPED.replace(
        r#""CommonID": ["CEID"]"#,
        r#""CommonID": ["CEID", "DATAID"]"#,
    );
    let (sdl, warnings) = Sdl::load(&write(dir.path(), "two.sdl", &two)).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let event = msg("S6F11 W <L [3] <A \"D7\"> <U4 4000> <L>>");
    assert_eq!(sdl.common_id_value(&event).as_deref(), Some("4000_D7"));

    // The standard catalogue: S6F11 by CEID.
    let standard = Sdl::standard();
    assert_eq!(standard.common_id(sf("S6F11")), ["CEID"]);
    assert_eq!(
        standard
            .common_id_value(&msg("S6F11 W <L [3] <U4 1> <U4 4000> <L>>"))
            .as_deref(),
        Some("4000")
    );
    assert_eq!(standard.common_id_value(&msg("S2F14 <L [1] <U4 5>>")), None);
}

#[test]
fn unknown_keys_are_warnings_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = IGNITION_SHAPED.replace(
        r#""realtime": true, "SQLTags": false, "CommonID": ["CEID"],"#,
        r#""realtme": true, "SQLTags": false, "CommonID": ["CEID"],"#,
    );
    assert_ne!(text, IGNITION_SHAPED);
    let path = write(dir.path(), "messages.sdl", &text);
    let (sdl, warnings) = Sdl::load(&path).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("\"realtme\""))
        .unwrap()
        + 1;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        warnings[0].to_string(),
        format!(
            "{}:{line}: messages.S6.F11.realtme: unknown key, ignored; did you mean 'realtime'?",
            path.display()
        )
    );
    assert_eq!(warnings[0].key, "messages.S6.F11.realtme");
    // The file still loads; the misspelt key means nothing (defaults say not realtime).
    assert!(!sdl.realtime(sf("S6F11")));
    assert!(sdl.realtime(sf("S2F14")));
}

#[test]
fn wrong_values_are_errors_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#""SQLTags": "True", "CommonID": ["ECV"]"#,
            r#""SQLTags": "yes", "CommonID": ["ECV"]"#,
            "\"SQLTags\": \"yes\"",
            "messages.S2.F14.SQLTags: expected true or false, found \"yes\"",
        ),
        (
            r#""CommonID": ["CEID"],"#,
            r#""CommonID": {"item": "CEID"},"#,
            "\"CommonID\": {\"item\"",
            "messages.S6.F11.CommonID: expected a list of item names",
        ),
        (
            r#""block": "multiple""#,
            r#""block": "several""#,
            "\"block\": \"several\"",
            "messages.S6.F11.block: expected \"single\" or \"multiple\", found \"several\"",
        ),
        (
            r#""format": "A", "length": 120"#,
            r#""format": "A", "length": -1"#,
            "\"length\": -1",
            "items.A.ALTX.length: expected a number of values",
        ),
        (
            r#""direction": "h->e", "body": "ACKC6""#,
            r#""direction": "h=>e", "body": "ACKC6""#,
            "\"h=>e\"",
            "messages.S6.F12.direction: 'h=>e' is not h->e",
        ),
    ];
    for (from, to, marker, expect) in cases {
        let text = IGNITION_SHAPED.replace(from, to);
        assert_ne!(text, IGNITION_SHAPED, "{from}");
        let path = write(dir.path(), "bad.sdl", &text);
        let line = text.lines().position(|l| l.contains(marker)).unwrap() + 1;
        let err = Sdl::load(&path).unwrap_err();
        assert_eq!(err.line, line, "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("{}:{line}: {expect}", path.display())),
            "{err}"
        );
    }
}

/// Every S/F of streams 1-21 the standard catalogue defines.
const CATALOGUE: &[(u8, &[u8])] = &[
    (
        1,
        &[
            0, 1, 2, 3, 4, 11, 12, 13, 14, 15, 16, 17, 18, 21, 22, 23, 24,
        ],
    ),
    (
        2,
        &[
            0, 13, 14, 15, 16, 17, 18, 23, 24, 25, 26, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39,
            40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50,
        ],
    ),
    (3, &[0, 15, 16]),
    (4, &[0, 25, 26]),
    (5, &[0, 1, 2, 3, 4, 5, 6, 7, 8]),
    (
        6,
        &[
            0, 1, 2, 5, 6, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
        ],
    ),
    (7, &[0, 1, 2, 3, 4, 5, 6, 17, 18, 19, 20]),
    (9, &[1, 3, 5, 7, 9, 11, 13]),
    (10, &[0, 1, 2, 3, 4, 5, 6, 7, 9, 10]),
    (13, &[0, 11, 12]),
    (14, &[0, 23, 24]),
    (15, &[0, 1, 2]),
    (16, &[0, 1, 2]),
];

/// The messages the GEM references name (semi.md §5.3, §5.6; the GEM tool and host message
/// tables): the catalogue must define each.
const NAMED_BY_THE_REFERENCES: &str = "S1F1 S1F2 S1F3 S1F4 S1F11 S1F12 S1F13 S1F14 S1F15 S1F16 \
    S1F17 S1F18 S1F21 S1F22 S1F23 S1F24 S2F13 S2F14 S2F15 S2F16 S2F17 S2F18 S2F23 S2F24 S2F25 \
    S2F26 S2F29 S2F30 S2F31 S2F32 S2F33 S2F34 S2F35 S2F36 S2F37 S2F38 S2F39 S2F40 S2F41 S2F42 \
    S2F43 S2F44 S2F45 S2F46 S2F47 S2F48 S2F49 S2F50 S3F15 S3F16 S4F25 S4F26 S5F1 S5F2 S5F3 \
    S5F4 S5F5 S5F6 S5F7 S5F8 S6F1 S6F2 S6F5 S6F6 S6F11 S6F12 S6F13 S6F15 S6F16 S6F17 S6F18 \
    S6F19 S6F20 S6F21 S6F22 S6F23 S6F24 S7F1 S7F2 S7F3 S7F4 S7F5 S7F6 S7F17 S7F18 S7F19 S7F20 \
    S9F1 S9F3 S9F5 S9F7 S9F9 S9F11 S9F13 S10F1 S10F2 S10F3 S10F5 S10F9 S13F11 S13F12 S14F23 \
    S14F24 S15F1 S15F2 S16F1 S16F2";

#[test]
fn the_standard_catalogue_covers_the_referenced_streams() {
    let sdl = Sdl::standard();
    let defined: Vec<(u8, Vec<u8>)> = CATALOGUE.iter().map(|(s, f)| (*s, f.to_vec())).collect();
    let mut found: Vec<(u8, Vec<u8>)> = Vec::new();
    for sf in sdl.messages.keys() {
        match found.last_mut() {
            Some((s, fs)) if *s == sf.stream => fs.push(sf.function),
            _ => found.push((sf.stream, vec![sf.function])),
        }
    }
    assert_eq!(found, defined);
    assert_eq!(sdl.messages.len(), 124);
    for name in NAMED_BY_THE_REFERENCES.split_whitespace() {
        assert!(
            sdl.message(sf(name)).is_some(),
            "{name} is not in the catalogue"
        );
    }
    // Every reply-expecting primary's reply is there too.
    for (sf, def) in sdl.messages.iter().map(|(sf, d)| (sf, &d[0])) {
        if def.reply && sf.function % 2 == 1 {
            let reply = StreamFunction {
                stream: sf.stream,
                function: sf.function + 1,
            };
            assert!(sdl.message(reply).is_some(), "{sf} has no {reply}");
        }
    }

    // A sample from each stream, each way, checks against its body.
    let host = [
        "S1F3 W <L [2] <U4 1> <A \"SV2\">>",
        "S2F39 W <L [2] <U4 1> <U4 100000>>",
        "S3F15 W <L [2] <U4 1> <U4 100000>>",
        "S4F25 W <L [2] <U4 1> <U4 100000>>",
        "S5F3 W <L [2] <B 0x80> <U4 1>>",
        "S6F15 W <U4 100>",
        "S7F5 W <A \"RECIPE1\">",
        "S10F9 W <A \"shift change\">",
        "S13F11 W <L [3] <U4 1> <A \"TABLE:1\"> <U4 2048>>",
        "S14F23 W <L [2] <U4 1> <U4 2048>>",
        "S15F1 W <L [3] <U4 1> <A \"RCP\"> <U4 2048>>",
        "S16F1 W <L [2] <U4 1> <U4 2048>>",
    ];
    let equipment = [
        "S1F2 <L [2] <A \"MDLN\"> <A \"1.0\">>",
        "S2F40 <B 0x00>",
        "S3F16 <B 0x01>",
        "S4F26 <B 0x00>",
        "S5F1 W <L [3] <B 0x84> <U4 7> <A \"overheat\">>",
        "S6F13 W <L [3] <U4 1> <U4 4000> <L [1] <L [2] <U4 9> <L [1] <L [2] <U4 3> <F4 1.5>>>>>>",
        "S7F6 <L [2] <A \"RECIPE1\"> <B 0x01 0x02>>",
        "S9F13 <L [2] <A \"S07F03\"> <A \"RECIPE1\">>",
        "S10F7 <B 0x00>",
        "S13F12 <B 0x00>",
        "S14F24 <B 0x00>",
        "S15F2 <B 0x00>",
        "S16F2 <B 0x02>",
    ];
    for text in host {
        assert_eq!(sdl.check(&msg(text), true), Ok(()), "{text}");
    }
    for text in equipment {
        assert_eq!(sdl.check(&msg(text), false), Ok(()), "{text}");
    }
    // Code tables reach codeDesc; ack codes are one byte.
    let grant = msg("S2F40 <B 0x03>");
    let mut v = json::message_to_json(&grant);
    sdl.annotate(&grant, &mut v);
    assert_eq!(v["body"]["codeDesc"], "Duplicate DATAID");
    assert!(sdl.check(&msg("S6F12 <B 0x00 0x00>"), true).is_err());

    // Routing flags: tags for S6F1 (as Ignition's default SDL), the realtime set.
    assert!(sdl.sql_tags(sf("S6F1")));
    assert_eq!(
        sdl.messages
            .iter()
            .filter(|(_, m)| m[0].sql_tags)
            .map(|(sf, _)| sf.to_string())
            .collect::<Vec<_>>(),
        ["S6F1"]
    );
    let realtime: Vec<String> = sdl
        .messages
        .iter()
        .filter(|(_, m)| m[0].realtime)
        .map(|(sf, _)| sf.to_string())
        .collect();
    assert_eq!(
        realtime,
        [
            "S5F1", "S6F1", "S6F11", "S6F13", "S9F1", "S9F3", "S9F5", "S9F7", "S9F9", "S9F11",
            "S9F13", "S10F1"
        ]
    );
    assert_eq!(sdl.block(sf("S7F3")), Some(Block::Multiple));
    assert_eq!(sdl.block(sf("S1F3")), Some(Block::Single));
}

fn items_named(spec: &Spec, out: &mut Vec<String>) {
    match spec {
        Spec::Item(name) => out.push(name.clone()),
        Spec::Inline(def) => out.push(def.name.clone()),
        Spec::List(specs)
        | Spec::ListOrEmpty(specs)
        | Spec::Open {
            elements: specs, ..
        } => specs.iter().for_each(|s| items_named(s, out)),
        Spec::Repeat(inner) | Spec::Key(inner, _) => items_named(inner, out),
        Spec::Any => {}
    }
}

#[test]
fn every_catalogue_message_has_a_doc_and_a_body_of_defined_items() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (sdl, warnings) = Sdl::load(&root.join("sdl/messages.sdl")).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut header_only = Vec::new();
    for (sf, def) in sdl.messages.iter().map(|(sf, d)| (sf, &d[0])) {
        assert!(
            def.doc.as_deref().is_some_and(|d| !d.trim().is_empty()),
            "{sf} has no doc"
        );
        if let Some(body) = &def.body {
            let mut names = Vec::new();
            items_named(body, &mut names);
            for name in names {
                let item = sdl.items.get(&name);
                assert!(item.is_some(), "{sf}: item {name} is not defined");
                assert!(
                    item.and_then(|i| i.doc.as_deref())
                        .is_some_and(|d| d.starts_with(&name)),
                    "{sf}: item {name} has no \"{name}, ...\" doc"
                );
            }
        } else {
            header_only.push(sf.to_string());
        }
        for id in &def.common_id {
            assert!(def.body.as_ref().is_some_and(|b| b.names(id)), "{sf}: {id}");
        }
    }
    // E5's header-only messages: the aborts, the requests that carry nothing.
    assert_eq!(
        header_only,
        [
            "S1F0", "S1F1", "S1F15", "S1F17", "S2F0", "S2F17", "S3F0", "S4F0", "S5F0", "S5F7",
            "S6F0", "S7F0", "S7F19", "S10F0", "S13F0", "S14F0", "S15F0", "S16F0"
        ]
    );
}

fn project(dir: &Path, sdl_line: &str) -> PathBuf {
    std::fs::write(
        dir.join("project.toml"),
        format!("[[equipment]]\nname = \"T\"\nport = 5000\n{sdl_line}\n"),
    )
    .unwrap();
    dir.to_path_buf()
}

#[test]
fn equipment_use_the_standard_catalogue_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let load = |line: &str| Project::load(&project(dir.path(), line)).unwrap();
    let none = load("");
    let sdl = none.equipment[0].sdl.as_ref().expect("standard by default");
    assert_eq!(sdl.messages.len(), Sdl::standard().messages.len());
    assert!(load("sdl = \"standard\"").equipment[0].sdl.is_some());
    assert!(load("sdl = \"none\"").equipment[0].sdl.is_none());
    write(dir.path(), "tool.sdl", IGNITION_SHAPED);
    let own = load("sdl = \"tool.sdl\"");
    assert!(own.equipment[0].sdl.as_ref().unwrap().sql_tags(sf("S2F14")));
    assert!(own.warnings.is_empty());
}

#[test]
fn check_prints_sdl_warnings_and_errors_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), "sdl = \"tool.sdl\"");
    let text = IGNITION_SHAPED.replace("\"realtime\": true,", "\"realtme\": true,");
    let path = write(dir.path(), "tool.sdl", &text);
    let line = text
        .lines()
        .position(|l| l.contains("\"realtme\""))
        .unwrap()
        + 1;
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_secsgate"))
            .arg("check")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "secsgate: warning: {}:{line}: messages.S6.F11.realtme: unknown key, ignored; did you mean 'realtime'?",
            path.display()
        )),
        "{stderr}"
    );
    // Also in the project the gateway loads.
    let project = Project::load(dir.path()).unwrap();
    assert_eq!(project.warnings.len(), 1);
    assert_eq!(project.warnings[0].line, line);

    let text = IGNITION_SHAPED.replace("\"reply\": \"TRUE\"", "\"reply\": 2");
    write(dir.path(), "tool.sdl", &text);
    let line = text
        .lines()
        .position(|l| l.contains("\"reply\": 2"))
        .unwrap()
        + 1;
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:{line}: messages.S6.F11.reply: expected true or false, found 2",
            path.display()
        )),
        "{stderr}"
    );
}

fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::Value;
    let word = prop::sample::select(vec![
        "doc",
        "formats",
        "items",
        "defaults",
        "messages",
        "S1",
        "F1",
        "S6",
        "F11",
        "L",
        "L*",
        "L?",
        "body",
        "name",
        "format",
        "codes",
        "length",
        "reply",
        "realtime",
        "SQLTags",
        "CommonID",
        "block",
        "direction",
        "U4",
        "Bool",
        "A",
        "ANY",
        "SVID*",
        "h->e",
        "true",
        "0-5",
        ">0",
        "*",
        "multiple",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        word.clone().prop_map(|w| Value::String(w.to_string())),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((word.clone(), inner), 0..5).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

proptest::proptest! {
    /// Whatever an SDL file holds, loading it returns an SDL or an error, never a panic, and
    /// every warning and error has a key path.
    #[test]
    fn any_sdl_content_loads_or_fails_without_panicking(value in any_json(), shape in 0..4usize) {
        let value = match shape {
            0 => value,
            1 => serde_json::json!({"items": value}),
            2 => serde_json::json!({"items": {"CEID": {}}, "messages": {"S6": {"F11": value}}}),
            _ => serde_json::json!({"items": {"CEID": {}}, "messages": {"S6": {"F11": {"body": value, "CommonID": ["CEID"]}}}}),
        };
        let text = serde_json::to_string_pretty(&value).unwrap();
        match Sdl::parse(Path::new("p.sdl"), &text) {
            Ok((sdl, warnings)) => {
                for w in &warnings {
                    proptest::prop_assert!(!w.key.is_empty(), "{}", w);
                }
                let m = msg("S6F11 W <L [3] <U4 1> <U4 2> <L>>");
                let _ = sdl.check(&m, false);
                let _ = sdl.common_id_value(&m);
            }
            Err(e) => proptest::prop_assert!(!e.message.is_empty()),
        }
    }
}
