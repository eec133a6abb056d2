//! Process programs (E30 process program management, stream 7): where the equipment keeps
//! the programs the host downloads (S7F3), uploads (S7F5), lists (S7F19) and deletes (S7F17).
//!
//! [`MemoryPrograms`] keeps them in memory; the simulator keeps them as files in a folder
//! (`crate::store::programs`).

use std::collections::BTreeMap;
use std::time::Instant;

use tracing::error;

use super::equipment::Equipment;
use super::items::{Illegal, Parsed, l, list, list_of, required, text, unsigned};
use super::model::Standard;
use crate::secs2::Item;

/// A process program store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("process program storage failed: {0}")]
pub struct ProgramError(pub String);

/// Process programs by PPID.
pub trait ProgramStore: Send {
    /// Every PPID, sorted.
    fn list(&self) -> Result<Vec<String>, ProgramError>;
    /// The body of a program, `None` if there is no such PPID.
    fn load(&self, ppid: &str) -> Result<Option<Vec<u8>>, ProgramError>;
    /// Stores a program; returns true if it is new (false if it replaced one).
    fn save(&mut self, ppid: &str, body: &[u8]) -> Result<bool, ProgramError>;
    /// Deletes a program; returns false if there was none.
    fn delete(&mut self, ppid: &str) -> Result<bool, ProgramError>;
    /// How many programs are stored and their bytes in all.
    fn usage(&self) -> Result<Usage, ProgramError> {
        let mut usage = Usage::default();
        for ppid in self.list()? {
            usage.count += 1;
            usage.bytes += self.size(&ppid)?.unwrap_or(0);
        }
        Ok(usage)
    }
    /// The size of a program in bytes, `None` if there is no such PPID.
    fn size(&self, ppid: &str) -> Result<Option<u64>, ProgramError> {
        Ok(self.load(ppid)?.map(|b| b.len() as u64))
    }
}

/// What a program store holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub count: usize,
    pub bytes: u64,
}

/// A quota on stored programs: at most `count` programs of `bytes` in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub count: usize,
    pub bytes: u64,
}

impl Quota {
    /// Whether a program of `length` bytes may be stored under a PPID that now holds
    /// `existing` bytes (`None`: a new PPID), given what the store holds. Replacing a program
    /// with one no larger always fits, even when the store is over a quota lowered since.
    pub fn fits(&self, usage: Usage, existing: Option<u64>, length: u64) -> bool {
        match existing {
            Some(old) if length <= old => true,
            Some(old) => usage.bytes - old.min(usage.bytes) + length <= self.bytes,
            None => usage.count < self.count && usage.bytes + length <= self.bytes,
        }
    }
}

/// Process programs in memory.
#[derive(Debug, Default)]
pub struct MemoryPrograms(BTreeMap<String, Vec<u8>>);

impl ProgramStore for MemoryPrograms {
    fn list(&self) -> Result<Vec<String>, ProgramError> {
        Ok(self.0.keys().cloned().collect())
    }
    fn load(&self, ppid: &str) -> Result<Option<Vec<u8>>, ProgramError> {
        Ok(self.0.get(ppid).cloned())
    }
    fn save(&mut self, ppid: &str, body: &[u8]) -> Result<bool, ProgramError> {
        Ok(self.0.insert(ppid.to_string(), body.to_vec()).is_none())
    }
    fn delete(&mut self, ppid: &str) -> Result<bool, ProgramError> {
        Ok(self.0.remove(ppid).is_some())
    }
    fn size(&self, ppid: &str) -> Result<Option<u64>, ProgramError> {
        Ok(self.0.get(ppid).map(|b| b.len() as u64))
    }
}

/// Whether a program body reads as text (sent back as `A`) rather than binary (`B`).
pub fn is_text(body: &[u8]) -> bool {
    body.iter()
        .all(|&b| b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b))
}

/// ACKC7 (S7F4, S7F18).
mod ackc7 {
    pub const PERMISSION: u8 = 1;
    pub const LENGTH: u8 = 2;
    pub const MATRIX_OVERFLOW: u8 = 3;
    pub const NOT_FOUND: u8 = 4;
}

/// PPGNT (S7F2).
mod ppgnt {
    pub const NO_SPACE: u8 = 2;
    pub const INVALID_PPID: u8 = 3;
}

/// PPChangeStatus values of the ProcessProgramChange event.
mod change {
    pub const CREATED: u8 = 1;
    pub const EDITED: u8 = 2;
    pub const DELETED: u8 = 3;
}

/// Longest PPID accepted.
const PPID_MAX: usize = 255;

/// A PPID (A or B) as text; `Ok(None)` if it is empty or too long to be one.
fn ppid(item: &Item) -> Parsed<Option<String>> {
    let text = match item {
        Item::A(_) | Item::J(_) | Item::W { .. } => item.as_text().unwrap_or_default(),
        Item::B(b) => b.iter().map(|&c| char::from(c)).collect(),
        _ => return Err(Illegal),
    };
    Ok((!text.is_empty() && text.len() <= PPID_MAX).then_some(text))
}

/// PPBODY bytes (A, J, W, B or U1).
fn ppbody(item: &Item) -> Parsed<Vec<u8>> {
    match item {
        Item::A(b) | Item::J(b) | Item::B(b) | Item::U1(b) => Ok(b.clone()),
        Item::W { bytes, .. } => Ok(bytes.clone()),
        _ => Err(Illegal),
    }
}

impl Equipment {
    fn program_changed(&mut self, name: &str, status: u8, now: Instant) {
        self.set_standard(Standard::PpChangeName, text(name));
        self.set_standard(Standard::PpChangeStatus, Item::U1(vec![status]));
        self.fire_standard(Standard::ProcessProgramChange, now);
    }

    /// Whether a program of `length` bytes fits the quota of stored programs under `name`. A
    /// store that cannot say what it holds is not refused here (saving it will tell).
    fn program_fits(&self, name: &str, length: u64) -> bool {
        let quota = Quota {
            count: self.model.capacities.process_programs,
            bytes: self.model.capacities.process_program_bytes,
        };
        match self
            .programs
            .usage()
            .and_then(|u| Ok((u, self.programs.size(name)?)))
        {
            Ok((usage, existing)) => quota.fits(usage, existing, length),
            Err(e) => {
                error!(ppid = %name, error = %e, "cannot measure the stored process programs");
                true
            }
        }
    }

    /// S7F1 Process Program Load Inquire `<L[2] PPID LENGTH>` -> S7F2 PPGNT: 0 granted,
    /// 2 no space (longer than the equipment accepts, or the store is full: the count or
    /// total bytes of programs would pass their quota), 3 invalid PPID.
    pub(super) fn s7f1_load_inquire(
        &mut self,
        body: Option<&Item>,
        _: Instant,
    ) -> Parsed<Option<Item>> {
        let [id, length] = list_of(required(body)?, 2)? else {
            return Err(Illegal);
        };
        let length = unsigned(length)?;
        let Some(name) = ppid(id)? else {
            return Self::acked(ppgnt::INVALID_PPID);
        };
        if length > self.model.capacities.process_program as u64
            || !self.program_fits(&name, length)
        {
            return Self::acked(ppgnt::NO_SPACE);
        }
        Self::acked(0)
    }

    /// S7F3 Process Program Send `<L[2] PPID PPBODY>` -> S7F4 ACKC7: 0 stored, 1 not
    /// permitted (invalid PPID, or it cannot be stored), 2 length error (longer than one
    /// program may be), 3 matrix overflow (the store is full: the count or total bytes of
    /// programs would pass their quota).
    pub(super) fn s7f3_download(
        &mut self,
        body: Option<&Item>,
        now: Instant,
    ) -> Parsed<Option<Item>> {
        let [id, program] = list_of(required(body)?, 2)? else {
            return Err(Illegal);
        };
        let program = ppbody(program)?;
        let Some(name) = ppid(id)? else {
            return Self::acked(ackc7::PERMISSION);
        };
        if program.len() > self.model.capacities.process_program {
            return Self::acked(ackc7::LENGTH);
        }
        if !self.program_fits(&name, program.len() as u64) {
            return Self::acked(ackc7::MATRIX_OVERFLOW);
        }
        match self.programs.save(&name, &program) {
            Ok(created) => {
                let status = if created {
                    change::CREATED
                } else {
                    change::EDITED
                };
                self.program_changed(&name, status, now);
                Self::acked(0)
            }
            Err(e) => {
                error!(ppid = %name, error = %e, "cannot store process program");
                Self::acked(ackc7::PERMISSION)
            }
        }
    }

    /// S7F5 Process Program Request `<PPID>` -> S7F6 `<L[2] PPID PPBODY>` (PPBODY `A` for a
    /// text program, else `B`), or `<L[0]>` if there is no such program.
    pub(super) fn s7f5_upload(&mut self, body: Option<&Item>, _: Instant) -> Parsed<Option<Item>> {
        let id = required(body)?;
        let found = match ppid(id)? {
            Some(name) => self.programs.load(&name).unwrap_or_else(|e| {
                error!(ppid = %name, error = %e, "cannot read process program");
                None
            }),
            None => None,
        };
        Ok(Some(match found {
            Some(program) if is_text(&program) => l(vec![id.clone(), Item::A(program)]),
            Some(program) => l(vec![id.clone(), Item::B(program)]),
            None => l(Vec::new()),
        }))
    }

    /// S7F17 Delete Process Program Send `<L[n] PPID…>` (n = 0: all) -> S7F18 ACKC7: 0
    /// deleted, 4 a PPID was not found (nothing deleted).
    pub(super) fn s7f17_delete(
        &mut self,
        body: Option<&Item>,
        now: Instant,
    ) -> Parsed<Option<Item>> {
        let requested = list(required(body)?)?
            .iter()
            .map(ppid)
            .collect::<Parsed<Vec<_>>>()?;
        let existing = self.programs.list().unwrap_or_else(|e| {
            error!(error = %e, "cannot list process programs");
            Vec::new()
        });
        let names: Vec<String> = if requested.is_empty() {
            existing
        } else {
            match requested
                .into_iter()
                .map(|p| p.filter(|p| existing.contains(p)))
                .collect::<Option<Vec<_>>>()
            {
                Some(n) => n,
                None => return Self::acked(ackc7::NOT_FOUND),
            }
        };
        for name in names {
            match self.programs.delete(&name) {
                Ok(true) => self.program_changed(&name, change::DELETED, now),
                Ok(false) => {}
                Err(e) => error!(ppid = %name, error = %e, "cannot delete process program"),
            }
        }
        Self::acked(0)
    }

    /// S7F19 Current EPPD Request -> S7F20 `<L[n] <A PPID>…>`.
    pub(super) fn s7f19_directory(&mut self, _: Option<&Item>, _: Instant) -> Parsed<Option<Item>> {
        let names = self.programs.list().unwrap_or_else(|e| {
            error!(error = %e, "cannot list process programs");
            Vec::new()
        });
        Ok(Some(l(names.iter().map(|n| text(n)).collect())))
    }
}
