//! Limits monitoring (E30): S2F45 defines, per variable, limits (LIMITID) with a deadband
//! between LOWERDB and UPPERDB; S2F47 reads them. A value above UPPERDB is in the limit's
//! upper zone, below LOWERDB in its lower zone, and inside the deadband it stays in the zone
//! it was in. Moving from one zone to the other fires the variable's limit event, with the
//! DVs LimitVariable (VID), EventLimit (LIMITID) and TransitionType (0 lower to upper, 1
//! upper to lower).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::equipment::Equipment;
use super::items::{
    self, Illegal, Parsed, ack, id_item, l, list, list_of, number, required, unsigned,
};
use super::model::{Id, LimitCapability, Standard};
use crate::secs2::{Format, Item};

/// LVACK (S2F46).
mod lvack {
    pub const NO_SUCH_VARIABLE: u8 = 1;
    pub const NO_LIMITS: u8 = 2;
    pub const REPEATED: u8 = 3;
    pub const LIMIT_ERROR: u8 = 4;
}

/// LIMITACK (S2F46).
mod limitack {
    pub const NO_SUCH_LIMIT: u8 = 1;
    pub const ABOVE_MAX: u8 = 2;
    pub const BELOW_MIN: u8 = 3;
    pub const UPPER_BELOW_LOWER: u8 = 4;
    pub const BAD_FORMAT: u8 = 5;
    pub const DUPLICATE: u8 = 7;
}

/// Which side of a limit's deadband the value was last seen on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Zone {
    /// Not yet outside the deadband.
    Unknown,
    Lower,
    Upper,
}

/// One defined limit.
#[derive(Clone, Debug)]
pub struct Limit {
    upper: Item,
    lower: Item,
    upper_value: f64,
    lower_value: f64,
    zone: Zone,
}

impl Limit {
    fn zone_of(&self, value: f64) -> Zone {
        if value > self.upper_value {
            Zone::Upper
        } else if value < self.lower_value {
            Zone::Lower
        } else {
            self.zone
        }
    }
}

/// One `<L[2] LIMITID <L[2] UPPERDB LOWERDB>>` (bounds `None` for `<L[0]>`: undefine).
type Definition = (u8, Option<(Item, Item)>);

impl Equipment {
    /// S2F45 Define Variable Limit Attributes -> S2F46
    /// `<L[2] VLAACK <L[m] <L[3] VID LVACK <L[2] LIMITID LIMITACK>>…>>` listing only the
    /// variables in error (VLAACK 1, nothing changed). An empty variable list undefines
    /// every limit, an empty limit list all of one variable's, an empty bound list one limit.
    pub(super) fn s2f45_define_limits(
        &mut self,
        body: Option<&Item>,
        now: Instant,
    ) -> Parsed<Option<Item>> {
        let [_dataid, variables] = list_of(required(body)?, 2)? else {
            return Err(Illegal);
        };
        let variables = list(variables)?;
        let mut errors = Vec::new();
        let mut accepted: Vec<(Id, Vec<Definition>)> = Vec::new();
        let mut seen = BTreeSet::new();
        for entry in variables {
            let [vid_item, limits] = list_of(entry, 2)? else {
                return Err(Illegal);
            };
            let vid = items::id(vid_item)?;
            let definitions = list(limits)?
                .iter()
                .map(read_definition)
                .collect::<Parsed<Vec<_>>>()?;
            let capability = vid.and_then(|v| self.model.variables.get(&v));
            let problem = match (vid, capability) {
                (None, _) | (_, None) => Some((lvack::NO_SUCH_VARIABLE, None)),
                (Some(_), Some(v)) if v.limits.is_none() => Some((lvack::NO_LIMITS, None)),
                (Some(v), Some(_)) if !seen.insert(v) => Some((lvack::REPEATED, None)),
                (Some(_), Some(v)) => check_definitions(&definitions, v.limits.as_ref())
                    .map(|(id, code)| (lvack::LIMIT_ERROR, Some((id, code)))),
            };
            match (problem, vid) {
                (Some((code, limit)), _) => {
                    let detail = limit
                        .map_or_else(items::none, |(id, c)| l(vec![Item::U1(vec![id]), ack(c)]));
                    errors.push(l(vec![vid_item.clone(), ack(code), detail]));
                }
                (None, Some(v)) => accepted.push((v, definitions)),
                (None, None) => {}
            }
        }
        if !errors.is_empty() {
            return Ok(Some(l(vec![ack(1), l(errors)])));
        }
        if variables.is_empty() {
            self.limits.clear();
        }
        for (vid, definitions) in accepted {
            self.apply_limits(vid, definitions, now);
        }
        Ok(Some(l(vec![ack(0), items::none()])))
    }

    fn apply_limits(&mut self, vid: Id, definitions: Vec<Definition>, now: Instant) {
        if definitions.is_empty() {
            self.limits.remove(&vid);
            return;
        }
        let current = self.value(vid, now).as_ref().and_then(number);
        let limits = self.limits.entry(vid).or_default();
        for (limit_id, bounds) in definitions {
            let Some((upper, lower)) = bounds else {
                limits.remove(&limit_id);
                continue;
            };
            let mut limit = Limit {
                upper_value: number(&upper).unwrap_or(f64::MAX),
                lower_value: number(&lower).unwrap_or(f64::MIN),
                upper,
                lower,
                zone: Zone::Unknown,
            };
            if let Some(v) = current {
                limit.zone = limit.zone_of(v);
            }
            limits.insert(limit_id, limit);
        }
        if limits.is_empty() {
            self.limits.remove(&vid);
        }
    }

    /// S2F47 Variable Limit Attribute Request `<L[n] VID…>` (n = 0: every variable with
    /// limits capability) -> S2F48
    /// `<L[n] <L[2] VID <L[4] UNITS LIMITMIN LIMITMAX <L[m] <L[3] LIMITID UPPERDB LOWERDB>…>>>…>`;
    /// `<L[2] VID <L[0]>>` for a variable without limits capability.
    pub(super) fn s2f47_limit_attributes(
        &mut self,
        body: Option<&Item>,
        now: Instant,
    ) -> Parsed<Option<Item>> {
        let all: Vec<Id> = self
            .model
            .variables
            .values()
            .filter(|v| v.limits.is_some())
            .map(|v| v.id)
            .collect();
        self.each_id(body, all.into_iter(), |eq, vid, echo| {
            let v = vid.and_then(|v| eq.model.variables.get(&v));
            let Some((v, cap)) = v.and_then(|v| v.limits.as_ref().map(|c| (v, c))) else {
                return l(vec![echo, items::none()]);
            };
            let format = eq.value(v.id, now).map_or(Format::F8, |x| x.format());
            let bound =
                |x: f64| items::convert(&Item::F8(vec![x]), format).unwrap_or(Item::F8(vec![x]));
            let defined = eq
                .limits
                .get(&v.id)
                .map(|ls| {
                    ls.iter()
                        .map(|(id, lim)| {
                            l(vec![
                                Item::U1(vec![*id]),
                                lim.upper.clone(),
                                lim.lower.clone(),
                            ])
                        })
                        .collect()
                })
                .unwrap_or_default();
            l(vec![
                echo,
                l(vec![
                    items::text(&v.units),
                    bound(cap.min),
                    bound(cap.max),
                    l(defined),
                ]),
            ])
        })
    }

    /// Checks a variable's new value against its limits; fires its limit event for every
    /// zone change.
    pub(super) fn check_limits(&mut self, vid: Id, now: Instant) {
        let Some(event) = self
            .model
            .variables
            .get(&vid)
            .and_then(|v| v.limits.as_ref())
            .map(|c| c.event)
        else {
            return;
        };
        let Some(value) = self.value(vid, now).as_ref().and_then(number) else {
            return;
        };
        let mut crossings = Vec::new();
        if let Some(limits) = self.limits.get_mut(&vid) {
            for (id, limit) in limits.iter_mut() {
                let zone = limit.zone_of(value);
                if zone != limit.zone {
                    if limit.zone != Zone::Unknown {
                        crossings.push((*id, u8::from(zone == Zone::Lower)));
                    }
                    limit.zone = zone;
                }
            }
        }
        for (limit_id, transition) in crossings {
            self.set_standard(Standard::LimitVariable, id_item(vid));
            self.set_standard(Standard::EventLimit, Item::U1(vec![limit_id]));
            self.set_standard(Standard::TransitionType, Item::U1(vec![transition]));
            self.fire(event, now);
        }
    }

    /// The limits defined for a variable: LIMITID -> (UPPERDB, LOWERDB).
    pub fn limits_of(&self, vid: Id) -> BTreeMap<u8, (Item, Item)> {
        self.limits
            .get(&vid)
            .map(|ls| {
                ls.iter()
                    .map(|(id, l)| (*id, (l.upper.clone(), l.lower.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Reads `<L[2] LIMITID <L[2] UPPERDB LOWERDB>>` or `<L[2] LIMITID <L[0]>>`.
fn read_definition(item: &Item) -> Parsed<Definition> {
    let [limit_id, bounds] = list_of(item, 2)? else {
        return Err(Illegal);
    };
    let limit_id = u8::try_from(unsigned(limit_id)?).map_err(|_| Illegal)?;
    let bounds = list(bounds)?;
    Ok(match bounds {
        [] => (limit_id, None),
        [upper, lower] => (limit_id, Some((upper.clone(), lower.clone()))),
        _ => return Err(Illegal),
    })
}

/// The first limit definition in error, with its LIMITACK.
fn check_definitions(
    definitions: &[Definition],
    cap: Option<&LimitCapability>,
) -> Option<(u8, u8)> {
    let cap = cap?;
    let mut seen = BTreeSet::new();
    for (id, bounds) in definitions {
        let code = if *id == 0 || *id > cap.count {
            Some(limitack::NO_SUCH_LIMIT)
        } else if !seen.insert(*id) {
            Some(limitack::DUPLICATE)
        } else if let Some((upper, lower)) = bounds {
            match (number(upper), number(lower)) {
                (Some(u), Some(_)) if u > cap.max => Some(limitack::ABOVE_MAX),
                (Some(_), Some(lo)) if lo < cap.min => Some(limitack::BELOW_MIN),
                (Some(u), Some(lo)) if u < lo => Some(limitack::UPPER_BELOW_LOWER),
                (Some(_), Some(_)) => None,
                _ => Some(limitack::BAD_FORMAT),
            }
        } else {
            None
        };
        if let Some(code) = code {
            return Some((*id, code));
        }
    }
    None
}
