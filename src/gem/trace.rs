//! Trace data collection (E30): S2F23 starts a trace that samples SVs every DSPER, TOTSMP
//! times, and sends them REPGSZ samples at a time in S6F1
//! `<L[4] <TRID> <SMPLN> <A STIME> <L[n] <SV>…>>` (n = SVIDs × samples in the group; SMPLN
//! and STIME are those of the group's last sample). TOTSMP 0 stops the trace.

use std::time::{Duration, Instant};

use super::equipment::{Equipment, primary};
use super::items::{self, Illegal, Parsed, id_item, l, list, list_of, required, unsigned};
use super::model::{Id, VariableClass};
use crate::secs2::Item;

/// TIAACK (S2F24).
mod tiaack {
    pub const TOO_MANY_SVIDS: u8 = 1;
    pub const NO_MORE_TRACES: u8 = 2;
    pub const INVALID_PERIOD: u8 = 3;
    pub const UNKNOWN_SVID: u8 = 4;
    pub const INVALID_REPGSZ: u8 = 5;
}

/// A running trace.
#[derive(Debug, Clone)]
pub struct Trace {
    trid: Id,
    period: Duration,
    total: u64,
    group: u64,
    svids: Vec<Id>,
    taken: u64,
    samples: Vec<Item>,
    /// When the next sample is due.
    pub(super) next: Instant,
}

/// DSPER: `A[6]` "hhmmss" or `A[8]` "hhmmsscc"; `None` if malformed or zero.
pub fn parse_dsper(item: &Item) -> Option<Duration> {
    let t = match item {
        Item::A(_) => item.as_text()?,
        _ => return None,
    };
    if !(t.len() == 6 || t.len() == 8) || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| t[r].parse::<u64>().ok();
    let (h, m, s) = (n(0..2)?, n(2..4)?, n(4..6)?);
    let cc = if t.len() == 8 { n(6..8)? } else { 0 };
    if m >= 60 || s >= 60 {
        return None;
    }
    let period = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + cc * 10);
    (!period.is_zero()).then_some(period)
}

impl Equipment {
    /// S2F23 Trace Initialize Send `<L[5] TRID DSPER TOTSMP REPGSZ <L[n] SVID…>>` -> S2F24
    /// TIAACK: 0 ok, 1 too many SVIDs, 2 no more traces, 3 invalid period, 4 unknown SVID,
    /// 5 invalid REPGSZ. A new trace with a running TRID replaces it.
    pub(super) fn s2f23_trace(
        &mut self,
        body: Option<&Item>,
        now: Instant,
    ) -> Parsed<Option<Item>> {
        let [trid, dsper, totsmp, repgsz, svids] = list_of(required(body)?, 5)? else {
            return Err(Illegal);
        };
        let trid = items::id(trid)?.ok_or(Illegal)?;
        let total = unsigned(totsmp)?;
        let group = unsigned(repgsz)?;
        let svids = list(svids)?
            .iter()
            .map(items::id)
            .collect::<Parsed<Vec<_>>>()?;
        if total == 0 {
            self.traces.remove(&trid);
            return Self::acked(0);
        }
        let Some(period) = parse_dsper(dsper) else {
            return Self::acked(tiaack::INVALID_PERIOD);
        };
        if svids.len() > self.model.capacities.trace_variables {
            return Self::acked(tiaack::TOO_MANY_SVIDS);
        }
        let Some(svids) = svids
            .into_iter()
            .map(|s| {
                s.filter(|s| {
                    self.model
                        .variables
                        .get(s)
                        .is_some_and(|v| v.class == VariableClass::Status)
                })
            })
            .collect::<Option<Vec<_>>>()
        else {
            return Self::acked(tiaack::UNKNOWN_SVID);
        };
        if group == 0 || group > total {
            return Self::acked(tiaack::INVALID_REPGSZ);
        }
        if !self.traces.contains_key(&trid) && self.traces.len() >= self.model.capacities.traces {
            return Self::acked(tiaack::NO_MORE_TRACES);
        }
        self.traces.insert(
            trid,
            Trace {
                trid,
                period,
                total,
                group,
                svids,
                taken: 0,
                samples: Vec::new(),
                next: now + period,
            },
        );
        Self::acked(0)
    }

    /// Takes the samples due at `now` and sends each complete group.
    pub(super) fn sample_traces(&mut self, now: Instant) {
        let due: Vec<Id> = self
            .traces
            .values()
            .filter(|t| t.next <= now)
            .map(|t| t.trid)
            .collect();
        for trid in due {
            let Some(mut trace) = self.traces.remove(&trid) else {
                continue;
            };
            for &svid in &trace.svids {
                trace
                    .samples
                    .push(self.value(svid, now).unwrap_or_else(items::none));
            }
            trace.taken += 1;
            trace.next += trace.period;
            if trace.next <= now {
                trace.next = now + trace.period;
            }
            let finished = trace.taken >= trace.total;
            if finished || trace.taken.is_multiple_of(trace.group) {
                let body = l(vec![
                    id_item(trid),
                    Item::U4(vec![u32::try_from(trace.taken).unwrap_or(u32::MAX)]),
                    items::text(&self.clock_text(now)),
                    l(std::mem::take(&mut trace.samples)),
                ]);
                self.send_data(primary(6, 1, true, Some(body)), now);
            }
            if !finished {
                self.traces.insert(trid, trace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsper_forms() {
        assert_eq!(
            parse_dsper(&Item::ascii("000001")),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            parse_dsper(&Item::ascii("00000105")),
            Some(Duration::from_millis(1050))
        );
        assert_eq!(
            parse_dsper(&Item::ascii("010000")),
            Some(Duration::from_secs(3600))
        );
        for bad in ["000000", "0001", "00006000", "0000x1"] {
            assert_eq!(parse_dsper(&Item::ascii(bad)), None, "{bad}");
        }
        assert_eq!(parse_dsper(&Item::U4(vec![1])), None);
    }
}
