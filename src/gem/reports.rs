//! Dynamic event report configuration (E30): define reports (S2F33), link them to events
//! (S2F35), enable events (S2F37); event reports sent (S6F11) and requested (S6F15, S6F17,
//! S6F19, S6F21).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::equipment::{Equipment, primary};
use super::items::{self, Illegal, Parsed, code, id_item, l, list, list_of, required};
use super::model::Id;
use crate::secs2::Item;

/// DRACK (S2F34).
mod drack {
    pub const NO_SPACE: u8 = 1;
    pub const BAD_FORMAT: u8 = 2;
    pub const ALREADY_DEFINED: u8 = 3;
    pub const NO_SUCH_VID: u8 = 4;
}

/// LRACK (S2F36).
mod lrack {
    pub const BAD_FORMAT: u8 = 2;
    pub const ALREADY_LINKED: u8 = 3;
    pub const NO_SUCH_CEID: u8 = 4;
    pub const NO_SUCH_RPTID: u8 = 5;
}

/// A RPTID with its VIDs, or a CEID with its RPTIDs (`None`: an ID nothing can have).
type IdList = (Id, Vec<Option<Id>>);

/// Reads `<L[2] <DATAID> <L[n] <L[2] <ID> <L[m] <ID>…>>…>>` (S2F33, S2F35) into
/// (ID, IDs) pairs. An ID item of a format no ID can have gives `Ok(Err(bad_format))`;
/// a wrong structure is illegal data.
fn id_lists(body: Option<&Item>, bad_format: u8) -> Parsed<Result<Vec<IdList>, u8>> {
    let [dataid, entries] = list_of(required(body)?, 2)? else {
        return Err(Illegal);
    };
    let mut out = Vec::new();
    let mut format_error = items::id(dataid).is_err();
    for entry in list(entries)? {
        let [head, members] = list_of(entry, 2)? else {
            return Err(Illegal);
        };
        let members = list(members)?;
        let head = items::id(head);
        let members: Vec<_> = members.iter().map(items::id).collect();
        match (head, members.iter().all(Result::is_ok)) {
            (Ok(Some(h)), true) => out.push((h, members.into_iter().flatten().collect())),
            _ => format_error = true,
        }
    }
    Ok(if format_error {
        Err(bad_format)
    } else {
        Ok(out)
    })
}

impl Equipment {
    /// S2F33 Define Report -> S2F34 DRACK. `<L[0]>` after DATAID deletes every report (and
    /// its links); a RPTID with `<L[0]>` deletes that report. All or nothing: 1 no space,
    /// 2 invalid format, 3 RPTID already defined, 4 VID does not exist.
    pub(super) fn s2f33_define_reports(
        &mut self,
        body: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        let reports = match id_lists(body, drack::BAD_FORMAT)? {
            Ok(r) => r,
            Err(code) => return Self::acked(code),
        };
        if reports.is_empty() {
            self.reports.clear();
            self.links.clear();
            return Self::acked(0);
        }
        let mut seen = BTreeSet::new();
        let mut added = 0;
        for (rptid, vids) in &reports {
            if !seen.insert(*rptid) || (!vids.is_empty() && self.reports.contains_key(rptid)) {
                return Self::acked(drack::ALREADY_DEFINED);
            }
            if vids
                .iter()
                .any(|v| !v.is_some_and(|v| self.model.has_vid(v)))
            {
                return Self::acked(drack::NO_SUCH_VID);
            }
            added += usize::from(!vids.is_empty());
        }
        if self.reports.len() + added > self.model.capacities.reports {
            return Self::acked(drack::NO_SPACE);
        }
        for (rptid, vids) in reports {
            if vids.is_empty() {
                self.reports.remove(&rptid);
                for linked in self.links.values_mut() {
                    linked.retain(|r| *r != rptid);
                }
            } else {
                self.reports
                    .insert(rptid, vids.into_iter().flatten().collect());
            }
        }
        self.links.retain(|_, r| !r.is_empty());
        Self::acked(0)
    }

    /// S2F35 Link Event Report -> S2F36 LRACK. A CEID with `<L[0]>` unlinks every report
    /// from it. All or nothing: 2 invalid format, 3 CEID already has links, 4 CEID does not
    /// exist, 5 RPTID does not exist.
    pub(super) fn s2f35_link_events(
        &mut self,
        body: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        let links = match id_lists(body, lrack::BAD_FORMAT)? {
            Ok(r) => r,
            Err(code) => return Self::acked(code),
        };
        let mut seen = BTreeSet::new();
        for (ceid, rptids) in &links {
            if !self.model.events.contains_key(ceid) {
                return Self::acked(lrack::NO_SUCH_CEID);
            }
            let linked = self.links.get(ceid).is_some_and(|r| !r.is_empty());
            let mut unique = BTreeSet::new();
            if !rptids.is_empty()
                && (linked || !seen.insert(*ceid) || !rptids.iter().all(|r| unique.insert(*r)))
            {
                return Self::acked(lrack::ALREADY_LINKED);
            }
            if rptids
                .iter()
                .any(|r| !r.is_some_and(|r| self.reports.contains_key(&r)))
            {
                return Self::acked(lrack::NO_SUCH_RPTID);
            }
        }
        for (ceid, rptids) in links {
            if rptids.is_empty() {
                self.links.remove(&ceid);
            } else {
                self.links
                    .insert(ceid, rptids.into_iter().flatten().collect());
            }
        }
        Self::acked(0)
    }

    /// S2F37 Enable/Disable Event Report `<L[2] <BOOLEAN CEED> <L[n] <CEID>…>>` -> S2F38
    /// ERACK: 0 done, 1 a CEID does not exist (nothing changed). n = 0 means every event.
    pub(super) fn s2f37_enable_events(
        &mut self,
        body: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        let [ceed, ceids] = list_of(required(body)?, 2)? else {
            return Err(Illegal);
        };
        let enable = code(ceed)? != 0;
        let ceids = list(ceids)?
            .iter()
            .map(items::id)
            .collect::<Parsed<Vec<_>>>()?;
        let targets: Vec<Id> = if ceids.is_empty() {
            self.model.events.keys().copied().collect()
        } else {
            match ceids
                .into_iter()
                .map(|c| c.filter(|c| self.model.events.contains_key(c)))
                .collect::<Option<Vec<_>>>()
            {
                Some(t) => t,
                None => return Self::acked(1),
            }
        };
        for ceid in targets {
            if enable {
                self.enabled_events.insert(ceid);
            } else {
                self.enabled_events.remove(&ceid);
            }
        }
        Self::acked(0)
    }

    /// Reports collection event `ceid` with S6F11 if it is enabled.
    pub(super) fn fire(&mut self, ceid: Id, now: Instant) {
        if !self.enabled_events.contains(&ceid) {
            return;
        }
        let body = self.event_report(ceid, now, false);
        self.send_data(primary(6, 11, true, Some(body)), now);
    }

    /// `<L[3] DATAID CEID <L[n] <L[2] RPTID <L[m] V…>>…>>` with the values of now
    /// (annotated: each V is `<L[2] VID V>`).
    fn event_report(&mut self, ceid: Id, now: Instant, annotated: bool) -> Item {
        let data_id = self.next_data_id();
        let reports = self
            .links
            .get(&ceid)
            .map(|rptids| {
                rptids
                    .iter()
                    .map(|&r| l(vec![id_item(r), self.report_values(r, now, annotated)]))
                    .collect()
            })
            .unwrap_or_default();
        l(vec![id_item(data_id), id_item(ceid), l(reports)])
    }

    /// `<L[m] V…>` of report `rptid` (`<L[0]>` if it is not defined).
    fn report_values(&self, rptid: Id, now: Instant, annotated: bool) -> Item {
        let Some(vids) = self.reports.get(&rptid) else {
            return items::none();
        };
        l(vids
            .iter()
            .map(|&vid| {
                let v = self.value(vid, now).unwrap_or_else(items::none);
                if annotated {
                    l(vec![id_item(vid), v])
                } else {
                    v
                }
            })
            .collect())
    }

    fn requested_event(
        &mut self,
        body: Option<&Item>,
        now: Instant,
        annotated: bool,
    ) -> Parsed<Option<Item>> {
        let ceid = items::id(required(body)?)?;
        Ok(Some(
            match ceid.filter(|c| self.model.events.contains_key(c)) {
                Some(c) => self.event_report(c, now, annotated),
                None => items::none(),
            },
        ))
    }

    fn requested_report(
        &mut self,
        body: Option<&Item>,
        now: Instant,
        annotated: bool,
    ) -> Parsed<Option<Item>> {
        let rptid = items::id(required(body)?)?;
        Ok(Some(match rptid {
            Some(r) => self.report_values(r, now, annotated),
            None => items::none(),
        }))
    }

    /// S6F15 Event Report Request `<CEID>` -> S6F16 as S6F11 (`<L[0]>`: no such CEID).
    pub(super) fn s6f15_event_report(
        &mut self,
        body: Option<&Item>,
        now: Instant,
    ) -> Parsed<Option<Item>> {
        self.requested_event(body, now, false)
    }

    /// S6F17 Annotated Event Report Request `<CEID>` -> S6F18 with `<L[2] VID V>` values.
    pub(super) fn s6f17_annotated_event_report(
        &mut self,
        body: Option<&Item>,
        now: Instant,
    ) -> Parsed<Option<Item>> {
        self.requested_event(body, now, true)
    }

    /// S6F19 Individual Report Request `<RPTID>` -> S6F20 `<L[n] V…>` (`<L[0]>`: undefined).
    pub(super) fn s6f19_report(
        &mut self,
        body: Option<&Item>,
        now: Instant,
    ) -> Parsed<Option<Item>> {
        self.requested_report(body, now, false)
    }

    /// S6F21 Annotated Individual Report Request `<RPTID>` -> S6F22 `<L[n] <L[2] VID V>…>`.
    pub(super) fn s6f21_annotated_report(
        &mut self,
        body: Option<&Item>,
        now: Instant,
    ) -> Parsed<Option<Item>> {
        self.requested_report(body, now, true)
    }

    /// The reports in force: RPTID -> VIDs.
    pub fn reports(&self) -> &BTreeMap<Id, Vec<Id>> {
        &self.reports
    }

    /// The event links in force: CEID -> RPTIDs.
    pub fn links(&self) -> &BTreeMap<Id, Vec<Id>> {
        &self.links
    }
}
