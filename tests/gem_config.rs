//! The simulator config file: the shipped default loads, and every mistake is reported with
//! the file, the line and the key.

use secsgate::sim::{ConfigError, SimConfig};

/// The (line, key, message) of a config error.
fn error(text: &str) -> (usize, String, String) {
    match SimConfig::parse(text, "sim.toml", None) {
        Err(ConfigError::Invalid {
            file,
            line,
            key,
            message,
        }) => {
            assert_eq!(file, "sim.toml");
            (line, key, message)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

#[test]
fn the_shipped_default_config_is_valid() {
    let c = SimConfig::default_config();
    assert_eq!(c.model.mdln, "SECSGATE-SIM");
    assert!(c.run_names().contains(&"lot".to_string()));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdl/simulator.toml");
    let loaded = SimConfig::load(&path).unwrap();
    assert_eq!(loaded.model, c.model);
}

#[test]
fn toml_mistakes_name_line_and_key() {
    let (line, key, msg) = error("[equipment]\nmdln = \"X\"\ncolour = 3\n");
    assert_eq!((line, key.as_str()), (3, "equipment.colour"));
    assert!(msg.contains("unknown field"), "{msg}");
    let (line, key, _) = error("[[status_variable]]\nid = \"one\"\nname = \"x\"\n");
    assert_eq!((line, key.as_str()), (2, "status_variable.id"));
    let (line, _, _) = error("[equipment\n");
    assert_eq!(line, 1);
}

#[test]
fn model_mistakes_name_line_and_key() {
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "[[status_variable]]\nid = 1\nname = \"a\"\nformat = \"Q9\"\n",
            4,
            "status_variable.format",
            "unknown SECS-II format",
        ),
        (
            "[[status_variable]]\nid = 1\nname = \"a\"\nformat = \"U1\"\nvalue = 300\n",
            5,
            "status_variable.value",
            "out of range",
        ),
        (
            "[[status_variable]]\nid = 2001\nname = \"a\"\n",
            2,
            "status_variable.id",
            "Clock",
        ),
        (
            "[[report]]\nid = 1\nvariables = [5]\n",
            3,
            "report.variables",
            "variable 5 is not defined",
        ),
        (
            "[[alarm]]\nid = 1\ntext = \"t\"\nset_event = 9\n",
            4,
            "alarm.set_event",
            "collection event 9 is not defined",
        ),
        (
            "[[remote_command]]\nname = \"GO\"\nrun = \"nowhere\"\n",
            3,
            "remote_command.run",
            "event run 'nowhere' is not defined",
        ),
        (
            "[[echo]]\nrequest = \"S1F3\"\nreply = \"<L>\"\n",
            2,
            "echo.request",
            "answered by the GEM engine",
        ),
        (
            "[[echo]]\nrequest = \"S10F3\"\nreply = \"<L\"\n",
            3,
            "echo.reply",
            "",
        ),
        (
            "[[event_run]]\nname = \"r\"\n[[event_run.step]]\ndelay = \"soon\"\n",
            4,
            "event_run.step.delay",
            "expected a duration",
        ),
        (
            "[[event_run]]\nname = \"r\"\n[[event_run.step]]\nevent = 5\n",
            4,
            "event_run.step.event",
            "collection event 5 is not defined",
        ),
        (
            "[[event_run]]\nname = \"r\"\n[[event_run.step]]\nset = { Nope = 1 }\n",
            4,
            "event_run.step.set.Nope",
            "no variable",
        ),
        (
            "[equipment]\ncontrol_state = \"sideways\"\n",
            2,
            "equipment.control_state",
            "not one of",
        ),
        (
            "[standard_ids]\nClock = 2002\n",
            2,
            "standard_ids.Clock",
            "already used",
        ),
        (
            "[[status_variable]]\nid = 1\nname = \"a\"\nformat = \"A\"\nvalue = \"x\"\nlive = { kind = \"counter\", every = \"1s\" }\n",
            6,
            "live",
            "numeric",
        ),
    ];
    for (text, line, key, part) in cases {
        let (l, k, m) = error(text);
        assert_eq!((l, k.as_str()), (*line, *key), "{text}\n-> {m}");
        assert!(m.contains(part), "{text}\n-> {m}");
    }
}

#[test]
fn missing_files_say_which() {
    let err = SimConfig::load(std::path::Path::new("/nonexistent/sim.toml")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/sim.toml"), "{err}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// A damaged config (cut short, a character replaced) is an error, never a panic.
    #[test]
    fn damaged_configs_do_not_panic(cut in 0usize..8000, at in 0usize..8000, c in proptest::prelude::any::<char>()) {
        let text = secsgate::sim::config::DEFAULT_CONFIG;
        let mut chars: Vec<char> = text.chars().collect();
        let at = at % chars.len();
        chars[at] = c;
        let damaged: String = chars.into_iter().take(cut % (text.len() + 1)).collect();
        let _ = SimConfig::parse(&damaged, "damaged.toml", None);
    }
}
