//! Stream 1 and the stream 2 requests about variables, constants and the clock: status data
//! collection (S1F3, S1F11), identification (S1F1, S1F13), host-initiated control (S1F15,
//! S1F17), variable and event namelists (S1F21, S1F23), equipment constants (S2F13, S2F15,
//! S2F29), the clock (S2F17, S2F31) and loopback (S2F25).

use std::time::Instant;

use super::clock::DateTime;
use super::equipment::Equipment;
use super::items::{self, Illegal, Parsed, ack, convert, l, list, list_of, number, required, text};
use super::model::{Id, VariableClass};
use super::state::ControlState;
use crate::secs2::Item;

/// EAC (S2F16): why equipment constants were not set.
mod eac {
    pub const ACCEPTED: u8 = 0;
    pub const UNKNOWN: u8 = 1;
    pub const OUT_OF_RANGE: u8 = 3;
}

impl Equipment {
    fn identification(&self) -> Item {
        l(vec![text(&self.model.mdln), text(&self.model.softrev)])
    }

    /// S1F1 Are You There -> S1F2 `<L[2] MDLN SOFTREV>`.
    pub(super) fn s1f1_are_you_there(
        &mut self,
        _: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        Ok(Some(self.identification()))
    }

    /// S1F3 Selected Equipment Status Request -> S1F4 values; `<L[0]>` for an unknown SVID.
    pub(super) fn s1f3_status_values(
        &mut self,
        body: Option<&Item>,
        now: Instant,
    ) -> Parsed<Option<Item>> {
        let all = self.variable_ids(VariableClass::Status);
        self.each_id(body, all.into_iter(), |eq, id, _| {
            id.filter(|i| eq.is_variable(*i, VariableClass::Status))
                .and_then(|i| eq.value(i, now))
                .unwrap_or_else(items::none)
        })
    }

    /// S1F11 Status Variable Namelist Request -> S1F12 `<L[3] SVID SVNAME UNITS>` each;
    /// name and units are zero-length for an unknown SVID.
    pub(super) fn s1f11_status_names(
        &mut self,
        body: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        let all = self.variable_ids(VariableClass::Status);
        self.each_id(body, all.into_iter(), |eq, id, echo| {
            eq.name_and_units(id, VariableClass::Status, echo)
        })
    }

    /// S1F21 Data Variable Namelist Request -> S1F22 `<L[3] VID DVVALNAME UNITS>` each.
    pub(super) fn s1f21_data_variable_names(
        &mut self,
        body: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        let all = self.variable_ids(VariableClass::Data);
        self.each_id(body, all.into_iter(), |eq, id, echo| {
            eq.name_and_units(id, VariableClass::Data, echo)
        })
    }

    fn is_variable(&self, id: Id, class: VariableClass) -> bool {
        self.model
            .variables
            .get(&id)
            .is_some_and(|v| v.class == class)
    }

    fn name_and_units(&self, id: Option<Id>, class: VariableClass, echo: Item) -> Item {
        match id
            .and_then(|i| self.model.variables.get(&i))
            .filter(|v| v.class == class)
        {
            Some(v) => l(vec![echo, text(&v.name), text(&v.units)]),
            None => l(vec![echo, text(""), text("")]),
        }
    }

    /// S1F23 Collection Event Namelist Request -> S1F24 `<L[3] CEID CENAME <L[m] VID…>>`
    /// each, the VIDs being the DVs valid for the event.
    pub(super) fn s1f23_event_names(
        &mut self,
        body: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        let all: Vec<Id> = self.model.events.keys().copied().collect();
        self.each_id(body, all.into_iter(), |eq, id, echo| {
            match id.and_then(|i| eq.model.events.get(&i)) {
                Some(e) => l(vec![
                    echo,
                    text(&e.name),
                    l(e.data_variables
                        .iter()
                        .map(|&v| items::id_item(v))
                        .collect()),
                ]),
                None => l(vec![echo, text(""), items::none()]),
            }
        })
    }

    /// S1F13 Establish Communications Request -> S1F14 `<L[2] <B 0> <L[2] MDLN SOFTREV>>`;
    /// the equipment is then COMMUNICATING.
    pub(super) fn s1f13_establish_communication(
        &mut self,
        _: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        self.become_communicating();
        Ok(Some(l(vec![ack(0), self.identification()])))
    }

    /// S1F15 Request OFF-LINE -> S1F16 OFLACK 0; the equipment goes HOST OFF-LINE.
    pub(super) fn s1f15_offline(&mut self, _: Option<&Item>, now: Instant) -> Parsed<Option<Item>> {
        self.go_host_offline(now);
        Self::acked(0)
    }

    /// S1F17 Request ON-LINE -> S1F18 ONLACK: 0 accepted (from HOST OFF-LINE), 1 not
    /// allowed (EQUIPMENT OFF-LINE, ATTEMPT ON-LINE), 2 already ON-LINE.
    pub(super) fn s1f17_online(&mut self, _: Option<&Item>, now: Instant) -> Parsed<Option<Item>> {
        let onlack = self.control.onlack();
        if onlack == 0 {
            self.go_online(now);
        }
        Self::acked(onlack)
    }

    fn go_host_offline(&mut self, now: Instant) {
        if self.control.is_online() {
            self.set_control(ControlState::HostOffline, now);
        }
    }

    /// S2F13 Equipment Constant Request -> S2F14 values; `<L[0]>` for an unknown ECID.
    pub(super) fn s2f13_constant_values(
        &mut self,
        body: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        let all: Vec<Id> = self.model.constants.keys().copied().collect();
        self.each_id(body, all.into_iter(), |eq, id, _| {
            id.and_then(|i| eq.model.constants.get(&i))
                .map(|c| c.value.clone())
                .unwrap_or_else(items::none)
        })
    }

    /// S2F29 Equipment Constant Namelist Request -> S2F30
    /// `<L[6] ECID ECNAME ECMIN ECMAX ECDEF UNITS>` each; an unknown ECID has zero-length
    /// items after it.
    pub(super) fn s2f29_constant_names(
        &mut self,
        body: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        let all: Vec<Id> = self.model.constants.keys().copied().collect();
        self.each_id(body, all.into_iter(), |eq, id, echo| {
            match id.and_then(|i| eq.model.constants.get(&i)) {
                Some(c) => {
                    let bound = |b: &Option<Item>| {
                        b.clone().unwrap_or_else(|| Item::empty(c.value.format()))
                    };
                    l(vec![
                        echo,
                        text(&c.name),
                        bound(&c.min),
                        bound(&c.max),
                        c.default.clone(),
                        text(&c.units),
                    ])
                }
                None => {
                    let mut v = vec![echo];
                    v.extend(std::iter::repeat_n(text(""), 5));
                    l(v)
                }
            }
        })
    }

    /// S2F15 New Equipment Constant Send `<L[n] <L[2] ECID ECV>…>` -> S2F16 EAC: 0 set,
    /// 1 an ECID does not exist, 3 a value is out of range or of the wrong kind. All or
    /// nothing.
    pub(super) fn s2f15_set_constants(
        &mut self,
        body: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        let mut updates = Vec::new();
        let mut result = eac::ACCEPTED;
        for pair in list(required(body)?)? {
            let [ecid, ecv] = list_of(pair, 2)? else {
                return Err(Illegal);
            };
            let Some(c) = items::id(ecid)?.and_then(|i| self.model.constants.get(&i)) else {
                if result == eac::ACCEPTED {
                    result = eac::UNKNOWN;
                }
                continue;
            };
            match convert(ecv, c.value.format()).filter(|v| in_range(v, c)) {
                Some(v) => updates.push((c.id, v)),
                None if result == eac::ACCEPTED => result = eac::OUT_OF_RANGE,
                None => {}
            }
        }
        if result == eac::ACCEPTED {
            for (id, value) in updates {
                if let Some(c) = self.model.constants.get_mut(&id) {
                    c.value = value;
                }
            }
        }
        Self::acked(result)
    }

    /// S2F17 Date and Time Request -> S2F18 `<A TIME>`.
    pub(super) fn s2f17_date_time(
        &mut self,
        _: Option<&Item>,
        now: Instant,
    ) -> Parsed<Option<Item>> {
        Ok(Some(text(&self.clock_text(now))))
    }

    /// S2F31 Date and Time Set `<A TIME>` -> S2F32 TIACK: 0 set, 1 not a valid time.
    pub(super) fn s2f31_set_clock(
        &mut self,
        body: Option<&Item>,
        now: Instant,
    ) -> Parsed<Option<Item>> {
        let time = match required(body)? {
            item @ Item::A(_) => item.as_text().unwrap_or_default(),
            _ => return Err(Illegal),
        };
        match DateTime::parse(&time) {
            Some(dt) => {
                self.set_clock(dt, now);
                Self::acked(0)
            }
            None => Self::acked(1),
        }
    }

    /// S2F25 Loopback Diagnostic Request `<B …>` -> S2F26 with the same bytes.
    pub(super) fn s2f25_loopback(
        &mut self,
        body: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        match body {
            Some(b @ Item::B(_)) => Ok(Some(b.clone())),
            None => Ok(Some(Item::B(Vec::new()))),
            Some(_) => Err(Illegal),
        }
    }
}

/// Whether a value (already in the constant's format) lies within ECMIN..=ECMAX.
fn in_range(value: &Item, c: &super::model::Constant) -> bool {
    let Some(v) = number(value) else {
        return true;
    };
    let below = c.min.as_ref().and_then(number).is_some_and(|min| v < min);
    let above = c.max.as_ref().and_then(number).is_some_and(|max| v > max);
    !below && !above
}
