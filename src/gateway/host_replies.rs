//! What the gateway, as a GEM host, answers by itself to primaries the equipment sends, when no
//! custom response handler takes them.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::gem::clock::DateTime;
use crate::secs2::{Item, Message};

/// Ack code 0 (accepted) as `<B 0x00>`.
fn accepted() -> Option<Item> {
    Some(Item::B(vec![0]))
}

/// The default reply to a W-bit primary from the equipment, or `None` when no reply is sent
/// (no W-bit). Unknown W-bit primaries are aborted with SxF0.
pub fn default_reply(primary: &Message) -> Option<Message> {
    if !primary.w_bit || primary.function.is_multiple_of(2) {
        return None;
    }
    let body = match (primary.stream, primary.function) {
        // Are You There: the host answers with an empty list.
        (1, 1) => Some(Item::L(vec![])),
        // Establish Communications: COMMACK 0 and the host's empty MDLN/SOFTREV list.
        (1, 13) => Some(Item::L(vec![Item::B(vec![0]), Item::L(vec![])])),
        // Date and time request: TIME as YYYYMMDDhhmmsscc.
        (2, 17) => Some(Item::A(now_text(1).into_bytes())),
        // Event reports, alarms, trace data, terminal display, and the multi-block inquiries
        // (S2F39, S3F15, S4F25, S6F5, S7F1, S13F11, S14F23, S15F1, S16F1, S19F19): accepted.
        (5, 1)
        | (6, 1)
        | (6, 11)
        | (6, 13)
        | (10, 1)
        | (10, 3)
        | (2, 39)
        | (3, 15)
        | (4, 25)
        | (6, 5)
        | (7, 1)
        | (13, 11)
        | (14, 23)
        | (15, 1)
        | (16, 1)
        | (19, 19) => accepted(),
        _ => {
            // Not a message the host handles: abort the transaction.
            return Some(Message {
                function: 0,
                ..primary.reply_with(None)
            });
        }
    };
    Some(primary.reply_with(body))
}

/// The current UTC time in a TIME format of SEMI E5 (0: YYMMDDhhmmss, 1: YYYYMMDDhhmmsscc,
/// 2: ISO 8601).
pub fn now_text(time_format: u64) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    DateTime::from_unix_millis(ms).format(time_format)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secs2::sml::parse_message;

    fn reply(text: &str) -> Option<String> {
        let mut m = parse_message(text).unwrap();
        m.system_bytes = 9;
        default_reply(&m).map(|r| {
            assert_eq!(r.system_bytes, 9);
            r.to_string()
        })
    }

    #[test]
    fn gem_host_answers() {
        assert_eq!(
            reply("S6F11 W <L [3] <U4 1> <U4 2> <L>>").as_deref(),
            Some("S6F12 <B 0x00> .")
        );
        assert_eq!(
            reply("S5F1 W <L [3] <B 0x80> <U4 1> <A \"x\">>").as_deref(),
            Some("S5F2 <B 0x00> .")
        );
        assert_eq!(
            reply("S1F13 W <L [2] <A \"M\"> <A \"1\">>").as_deref(),
            Some("S1F14 <L [2] <B 0x00> <L [0]>> .")
        );
        assert_eq!(reply("S1F1 W").as_deref(), Some("S1F2 <L [0]> ."));
        assert_eq!(reply("S99F1 W").as_deref(), Some("S99F0 ."));
        assert_eq!(reply("S6F11 <L>"), None);
        assert!(reply("S2F17 W").unwrap().starts_with("S2F18 <A \"20"));
    }
}
