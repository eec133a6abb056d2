//! The host's side of spooling (E30): S2F43 selects the streams and functions to spool,
//! S6F23 transmits or purges the spool. The spool itself is [`super::spool`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::equipment::{Equipment, SPOOLABLE};
use super::items::{Illegal, Parsed, ack, code, l, list, list_of, required, unsigned};
use super::model::Standard;
use crate::secs2::Item;

/// STRACK (S2F44).
mod strack {
    pub const NOT_ALLOWED: u8 = 1;
    pub const UNKNOWN_STREAM: u8 = 2;
    pub const UNKNOWN_FUNCTION: u8 = 3;
    pub const SECONDARY: u8 = 4;
}

/// RSDA (S6F24).
mod rsda {
    pub const BUSY: u8 = 1;
    pub const NO_DATA: u8 = 2;
}

/// STRACK for spooling `functions` (empty = all) of `stream`, `None` if acceptable.
fn check_stream(stream: u64, functions: &[u64]) -> Option<u8> {
    if stream == 1 {
        return Some(strack::NOT_ALLOWED);
    }
    if !SPOOLABLE.iter().any(|(s, _)| u64::from(*s) == stream) {
        return Some(strack::UNKNOWN_STREAM);
    }
    if functions.iter().any(|f| f % 2 == 0) {
        return Some(strack::SECONDARY);
    }
    let known = |f: u64| {
        SPOOLABLE
            .iter()
            .any(|(s, g)| u64::from(*s) == stream && u64::from(*g) == f)
    };
    if functions.iter().any(|f| !known(*f)) {
        return Some(strack::UNKNOWN_FUNCTION);
    }
    None
}

impl Equipment {
    /// S2F43 Reset Spooling Streams and Functions `<L[m] <L[2] STRID <L[n] FCNID…>>…>` ->
    /// S2F44 `<L[2] RSPACK <L[m] <L[3] STRID STRACK <L[n] FCNID…>>…>>` listing the streams in
    /// error (RSPACK 1, nothing changed). m = 0 spools nothing; n = 0 spools every function of
    /// the stream. Stream 1 cannot be spooled; only the primaries this equipment sends (S5F1,
    /// S6F1, S6F11) are known.
    pub(super) fn s2f43_spool_streams(
        &mut self,
        body: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        let mut streams = BTreeMap::new();
        let mut errors = Vec::new();
        for entry in list(required(body)?)? {
            let [strid, fcnids] = list_of(entry, 2)? else {
                return Err(Illegal);
            };
            let stream = unsigned(strid)?;
            let functions = list(fcnids)?
                .iter()
                .map(unsigned)
                .collect::<Parsed<Vec<_>>>()?;
            match check_stream(stream, &functions) {
                Some(code) => errors.push(l(vec![strid.clone(), ack(code), fcnids.clone()])),
                None => {
                    let set: BTreeSet<u8> = functions
                        .iter()
                        .filter_map(|f| u8::try_from(*f).ok())
                        .collect();
                    if let Ok(s) = u8::try_from(stream) {
                        streams.insert(s, set);
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Ok(Some(l(vec![ack(1), l(errors)])));
        }
        self.spool.set_streams(streams);
        Ok(Some(l(vec![ack(0), l(Vec::new())])))
    }

    /// S6F23 Request Spooled Data `<U1 RSDC>` -> S6F24 RSDA. RSDC 0 transmits the spool
    /// (at most MaxSpoolTransmit messages, 0 = all; each leaves the spool once the host
    /// acknowledges it), 1 purges it. RSDA 0 ok, 1 busy (a transmission is under way), 2 no
    /// spooled data.
    pub(super) fn s6f23_spooled_data(
        &mut self,
        body: Option<&Item>,
        now: Instant,
    ) -> Parsed<Option<Item>> {
        let rsdc = code(required(body)?)?;
        if !(0..=1).contains(&rsdc) {
            return Err(Illegal);
        }
        if self.spool.count() == 0 {
            return Self::acked(rsda::NO_DATA);
        }
        if self.spool.transmitting() {
            return Self::acked(rsda::BUSY);
        }
        if rsdc == 0 {
            self.transmit_spool();
        } else {
            self.spool.purge();
            self.fire_standard(Standard::SpoolingDeactivated, now);
        }
        Self::acked(0)
    }
}
