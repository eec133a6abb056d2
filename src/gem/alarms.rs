//! Alarm management (E30): S5F1 sent when an enabled alarm is set or cleared, with its
//! set/clear collection events; S5F3 enables/disables alarms, S5F5 lists them, S5F7 lists
//! the enabled ones.

use std::time::Instant;

use super::equipment::{Equipment, GemError, primary};
use super::items::{self, Illegal, Parsed, ack, code, id_item, l, list_of, required, text};
use super::model::{Alarm, Id, Standard};
use crate::secs2::Item;

/// ALTX is at most 120 characters.
const ALTX_MAX: usize = 120;

/// ALCD: the category, with bit 8 set while the alarm is set.
fn alcd(alarm: &Alarm, set: bool) -> u8 {
    (alarm.category & 0x7f) | if set { 0x80 } else { 0 }
}

fn altx(alarm: &Alarm) -> Item {
    text(&alarm.text.chars().take(ALTX_MAX).collect::<String>())
}

/// A requested ID (`None` if no object can have it) and the item to echo.
type Requested = (Option<Id>, Item);

/// The IDs of an S5F5 ALID item: a vector of IDs (`<U4 1 2 3>`; zero-length = all) or, as
/// some hosts send it, a list of single IDs. `None` means all.
fn requested_alids(body: &Item) -> Parsed<Option<Vec<Requested>>> {
    let one = |i: &Item| items::id(i).map(|id| (id, i.clone()));
    match body {
        Item::L(children) if children.is_empty() => Ok(None),
        Item::L(children) => children.iter().map(one).collect::<Parsed<_>>().map(Some),
        Item::A(_) | Item::J(_) | Item::W { .. } if body.is_empty() => Ok(None),
        Item::A(_) | Item::J(_) | Item::W { .. } => Ok(Some(vec![one(body)?])),
        _ => {
            let values = integer_values(body).ok_or(Illegal)?;
            if values.is_empty() {
                return Ok(None);
            }
            Ok(Some(
                values
                    .into_iter()
                    .map(|v| (Id::try_from(v).ok(), single(body, v)))
                    .collect(),
            ))
        }
    }
}

/// The values of an integer vector item.
fn integer_values(item: &Item) -> Option<Vec<i128>> {
    fn all<T: Copy + Into<i128>>(v: &[T]) -> Vec<i128> {
        v.iter().map(|&x| x.into()).collect()
    }
    Some(match item {
        Item::U1(v) => all(v),
        Item::U2(v) => all(v),
        Item::U4(v) => all(v),
        Item::U8(v) => all(v),
        Item::I1(v) => all(v),
        Item::I2(v) => all(v),
        Item::I4(v) => all(v),
        Item::I8(v) => all(v),
        _ => return None,
    })
}

/// One value of an integer vector, in the vector's format.
fn single(format_of: &Item, v: i128) -> Item {
    items::convert(
        &Item::I8(vec![i64::try_from(v).unwrap_or(0)]),
        format_of.format(),
    )
    .unwrap_or_else(|| Item::I8(vec![i64::try_from(v).unwrap_or(0)]))
}

impl Equipment {
    /// The tool sets or clears alarm `alid`: S5F1 if the host enabled it, and the alarm's
    /// set or clear event (with the AlarmID DV). Setting a set alarm changes nothing.
    pub fn set_alarm(&mut self, alid: Id, set: bool, now: Instant) -> Result<(), GemError> {
        let alarm = self
            .model
            .alarms
            .get(&alid)
            .cloned()
            .ok_or(GemError::UnknownAlarm(alid))?;
        let changed = if set {
            self.set_alarms.insert(alid)
        } else {
            self.set_alarms.remove(&alid)
        };
        if !changed {
            return Ok(());
        }
        self.set_standard(Standard::AlarmId, id_item(alid));
        if self.enabled_alarms.contains(&alid) {
            let body = l(vec![ack(alcd(&alarm, set)), id_item(alid), altx(&alarm)]);
            self.send_data(primary(5, 1, true, Some(body)), now);
        }
        let event = if set {
            alarm.set_event
        } else {
            alarm.clear_event
        };
        if let Some(ceid) = event {
            self.fire(ceid, now);
        }
        Ok(())
    }

    /// S5F3 Enable/Disable Alarm Send `<L[2] <B ALED> <ALID>>` -> S5F4 ACKC5: 0 done,
    /// 1 unknown ALID or ALED not 0 (disable) or 128 (enable). A zero-length ALID means all.
    pub(super) fn s5f3_enable_alarms(
        &mut self,
        body: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        let [aled, alid] = list_of(required(body)?, 2)? else {
            return Err(Illegal);
        };
        let enable = match code(aled)? {
            0 => false,
            v if v & 0x80 != 0 => true,
            _ => return Self::acked(1),
        };
        let targets: Vec<Id> = if alid.is_empty() {
            self.model.alarms.keys().copied().collect()
        } else {
            match items::id(alid)?.filter(|a| self.model.alarms.contains_key(a)) {
                Some(a) => vec![a],
                None => return Self::acked(1),
            }
        };
        for a in targets {
            if enable {
                self.enabled_alarms.insert(a);
            } else {
                self.enabled_alarms.remove(&a);
            }
        }
        Self::acked(0)
    }

    fn alarm_entry(&self, id: Option<Id>, echo: Item) -> Item {
        match id.and_then(|a| self.model.alarms.get(&a)) {
            Some(a) => l(vec![
                ack(alcd(a, self.set_alarms.contains(&a.id))),
                echo,
                altx(a),
            ]),
            None => l(vec![Item::B(Vec::new()), echo, text("")]),
        }
    }

    /// S5F5 List Alarms Request `<ALID…>` (zero-length: all) -> S5F6
    /// `<L[n] <L[3] ALCD ALID ALTX>…>`; an unknown ALID has zero-length ALCD and ALTX.
    pub(super) fn s5f5_list_alarms(
        &mut self,
        body: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        let entries = match body.map(requested_alids).transpose()?.flatten() {
            None => self
                .model
                .alarms
                .keys()
                .map(|&a| self.alarm_entry(Some(a), id_item(a)))
                .collect(),
            Some(requested) => requested
                .into_iter()
                .map(|(id, echo)| self.alarm_entry(id, echo))
                .collect(),
        };
        Ok(Some(l(entries)))
    }

    /// S5F7 List Enabled Alarm Request -> S5F8 `<L[n] <L[3] ALCD ALID ALTX>…>`.
    pub(super) fn s5f7_enabled_alarms(
        &mut self,
        _: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        let entries = self
            .enabled_alarms
            .iter()
            .map(|&a| self.alarm_entry(Some(a), id_item(a)))
            .collect();
        Ok(Some(l(entries)))
    }
}
