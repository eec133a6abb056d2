//! The equipment clock (E30 Clock capability): the `TIME`/`STIME`/`CLOCK` text forms and
//! their conversion to and from Unix time. Times are UTC.
//!
//! The EC *TimeFormat* selects the form sent: 0 = `A[12]` "YYMMDDhhmmss", 1 = `A[16]`
//! "YYYYMMDDhhmmsscc" (cc = centiseconds), 2 = extended "YYYY-MM-DDThh:mm:ss.ccZ". All three
//! are accepted on S2F31.

/// A calendar date and time of day, UTC, to the centisecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub centis: u32,
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl DateTime {
    /// The date and time `ms` milliseconds after the Unix epoch.
    pub fn from_unix_millis(ms: i64) -> DateTime {
        let days = ms.div_euclid(86_400_000);
        let rest = ms.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: (rest / 3_600_000) as u32,
            minute: (rest / 60_000 % 60) as u32,
            second: (rest / 1000 % 60) as u32,
            centis: (rest % 1000 / 10) as u32,
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn to_unix_millis(&self) -> i64 {
        let days = days_from_civil(self.year, self.month, self.day);
        days * 86_400_000
            + i64::from(self.hour) * 3_600_000
            + i64::from(self.minute) * 60_000
            + i64::from(self.second) * 1000
            + i64::from(self.centis) * 10
    }

    /// The text form selected by the TimeFormat EC (0, 1 or 2; anything else is 1).
    pub fn format(&self, time_format: u64) -> String {
        let (y, mo, d, h, mi, s, c) = (
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.centis,
        );
        match time_format {
            0 => format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}", y.rem_euclid(100)),
            2 => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{c:02}Z"),
            _ => format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}{c:02}"),
        }
    }

    /// Reads any of the three forms; `None` when the text is not a valid date and time.
    pub fn parse(text: &str) -> Option<DateTime> {
        let t = text.trim();
        let dt = if t.len() == 12 || t.len() == 16 {
            let n = |r: std::ops::Range<usize>| -> Option<u32> {
                let s = t.get(r)?;
                if s.bytes().all(|b| b.is_ascii_digit()) {
                    s.parse().ok()
                } else {
                    None
                }
            };
            let (year, o) = if t.len() == 12 {
                // Two-digit years: 70-99 are 19xx, 00-69 are 20xx.
                let yy = i64::from(n(0..2)?);
                (if yy >= 70 { 1900 + yy } else { 2000 + yy }, 2)
            } else {
                (i64::from(n(0..4)?), 4)
            };
            DateTime {
                year,
                month: n(o..o + 2)?,
                day: n(o + 2..o + 4)?,
                hour: n(o + 4..o + 6)?,
                minute: n(o + 6..o + 8)?,
                second: n(o + 8..o + 10)?,
                centis: if t.len() == 16 { n(14..16)? } else { 0 },
            }
        } else {
            parse_extended(t)?
        };
        dt.valid().then_some(dt)
    }

    fn valid(&self) -> bool {
        let days_in_month = match self.month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if self.year % 4 == 0 && (self.year % 100 != 0 || self.year % 400 == 0) => 29,
            2 => 28,
            _ => return false,
        };
        (1..=days_in_month).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60
            && self.centis < 100
    }
}

/// "YYYY-MM-DDThh:mm:ss[.f…](Z|±hh:mm)", normalised to UTC.
fn parse_extended(t: &str) -> Option<DateTime> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let mut dt = DateTime {
        year: i64::from(n(0..4)?),
        month: n(5..7)?,
        day: n(8..10)?,
        hour: n(11..13)?,
        minute: n(14..16)?,
        second: n(17..19)?,
        centis: 0,
    };
    let mut rest = t.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let cc = format!("{:0<2}", &frac[..digits.min(2)]);
        dt.centis = cc.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_minutes: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest.get(1..)?.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?)
        }
    };
    if !dt.valid() {
        return None;
    }
    Some(DateTime::from_unix_millis(
        dt.to_unix_millis() - offset_minutes * 60_000,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_forms() {
        // 2024-02-29 13:45:07.89 UTC
        let ms = 1_709_214_307_890;
        let dt = DateTime::from_unix_millis(ms);
        assert_eq!(dt.format(0), "240229134507");
        assert_eq!(dt.format(1), "2024022913450789");
        assert_eq!(dt.format(2), "2024-02-29T13:45:07.89Z");
        assert_eq!(dt.to_unix_millis(), ms);
        for form in 0..3 {
            let back = DateTime::parse(&dt.format(form)).unwrap();
            assert_eq!(back.format(form), dt.format(form));
        }
        assert_eq!(
            DateTime::parse("2024-02-29T15:45:07+02:00")
                .unwrap()
                .format(0),
            "240229134507"
        );
        assert_eq!(DateTime::from_unix_millis(0).format(1), "1970010100000000");
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "2402301345",
            "240230134507",
            "2023022913450700",
            "24022913450a",
            "2024-02-29 13:45:07Z",
            "2024-02-29T13:45:07",
            "2024-13-01T00:00:00Z",
        ] {
            assert_eq!(DateTime::parse(bad), None, "{bad}");
        }
    }
}
