//! What the gateway, as a GEM host, answers by itself to primaries the equipment sends, when no
//! custom response handler takes them.

use std::time::{SystemTime, UNIX_EPOCH};

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
        (2, 17) => Some(Item::A(time_16(SystemTime::now()).into_bytes())),
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

/// `YYYYMMDDhhmmsscc` (UTC, centiseconds), the 16-byte TIME format of SEMI E5.
pub fn time_16(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        since.subsec_millis() / 10
    )
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secs2::sml::parse_message;
    use std::time::Duration;

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

    #[test]
    fn time_format() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(time_16(t), "2023111422132012");
        assert_eq!(
            time_16(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000022900000000"
        );
    }
}
