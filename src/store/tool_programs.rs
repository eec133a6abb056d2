//! Process programs the tools send the gateway (S7F3), for `system.secsgem.getToolProgram`,
//! `getToolProgramDataset` and `deleteToolProgram`: one file per PPID in a folder, named as
//! [`super::programs::file_name`] names it plus `.A` (text PPBODY) or `.B` (binary PPBODY),
//! so the body comes back in the format the tool sent. The file's modification time is the
//! program's edit date. Files are written as the simulator's programs are (a synced temporary
//! file renamed into place).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::programs::{file_name, ppid_of, save_program_file};
use crate::gem::programs::{ProgramError, Quota, Usage};
use crate::secs2::Item;

/// The format a PPBODY came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// `A`: text.
    Text,
    /// `B`: binary.
    Binary,
}

impl BodyFormat {
    /// The SECS-II format code, as `bodyFormat` shows it.
    pub fn code(self) -> &'static str {
        match self {
            BodyFormat::Text => "A",
            BodyFormat::Binary => "B",
        }
    }
}

/// One stored process program.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolProgram {
    pub ppid: String,
    pub format: BodyFormat,
    pub body: Vec<u8>,
    /// When it was last stored.
    pub edited: SystemTime,
}

/// The programs the tools sent, in a folder.
#[derive(Clone, Debug)]
pub struct ToolPrograms {
    dir: PathBuf,
    /// Held while checking the quota and storing, so that two tools sending at once cannot
    /// both take the last room.
    saving: Arc<Mutex<()>>,
}

/// What became of an S7F3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Saved {
    /// Stored under this PPID.
    Stored(String),
    /// Not stored: the folder would pass its quota (the text says which).
    Full { ppid: String, why: String },
}

fn failed(what: &str, path: &Path, e: std::io::Error) -> ProgramError {
    ProgramError(format!("cannot {what} {}: {e}", path.display()))
}

impl ToolPrograms {
    /// The programs kept in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<ToolPrograms, ProgramError> {
        fs::create_dir_all(dir).map_err(|e| failed("create", dir, e))?;
        Ok(ToolPrograms {
            dir: dir.to_path_buf(),
            saving: Arc::new(Mutex::new(())),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, ppid: &str, format: BodyFormat) -> PathBuf {
        self.dir
            .join(format!("{}.{}", file_name(ppid), format.code()))
    }

    /// Stores the program of an S7F3 `<L[2] <A PPID> <A|B PPBODY>>`, replacing one with the
    /// same PPID, unless that would pass `quota` (replacing a program with one no larger
    /// always fits).
    pub fn save_s7f3(&self, body: Option<&Item>, quota: Quota) -> Result<Saved, ProgramError> {
        let (ppid, ppbody) = match body.and_then(Item::as_list) {
            Some([Item::A(ppid), ppbody]) => (String::from_utf8_lossy(ppid).into_owned(), ppbody),
            _ => {
                return Err(ProgramError(
                    "S7F3 must be <L [2] <A PPID> <A or B PPBODY>>".into(),
                ));
            }
        };
        let (format, bytes) = match ppbody {
            Item::A(b) => (BodyFormat::Text, b.as_slice()),
            Item::B(b) => (BodyFormat::Binary, b.as_slice()),
            other => {
                return Err(ProgramError(format!(
                    "PPBODY of '{ppid}' is {}, not A or B",
                    other.format()
                )));
            }
        };
        let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let usage = self.usage()?;
        let existing = self.size(&ppid)?;
        if !quota.fits(usage, existing, bytes.len() as u64) {
            let why = if existing.is_none() && usage.count >= quota.count {
                format!("{} programs stored, the limit", usage.count)
            } else {
                format!(
                    "{} bytes stored; {} more would pass the limit of {}",
                    usage.bytes,
                    bytes.len() as u64 - existing.unwrap_or(0),
                    quota.bytes
                )
            };
            return Ok(Saved::Full { ppid, why });
        }
        self.save(&ppid, format, bytes)?;
        Ok(Saved::Stored(ppid))
    }

    /// How many programs are stored and their bytes in all (from the files' sizes).
    pub fn usage(&self) -> Result<Usage, ProgramError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| failed("list", &self.dir, e))?;
        let mut usage = Usage::default();
        for entry in entries.filter_map(Result::ok) {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') || !(name.ends_with(".A") || name.ends_with(".B")) {
                continue;
            }
            // Metadata of the entry itself: a symlink counts as its own (small) size.
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                usage.count += 1;
                usage.bytes += meta.len();
            }
        }
        Ok(usage)
    }

    /// The size of a PPID's program in bytes, `None` if there is none.
    pub fn size(&self, ppid: &str) -> Result<Option<u64>, ProgramError> {
        let mut found = None;
        for format in [BodyFormat::Text, BodyFormat::Binary] {
            let path = self.path(ppid, format);
            match fs::metadata(&path) {
                Ok(m) => *found.get_or_insert(0) += m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(failed("read", &path, e)),
            }
        }
        Ok(found)
    }

    /// Stores a program, replacing one with the same PPID in either format.
    pub fn save(&self, ppid: &str, format: BodyFormat, body: &[u8]) -> Result<(), ProgramError> {
        save_program_file(&self.dir, ppid, &self.path(ppid, format), body)?;
        let other = match format {
            BodyFormat::Text => BodyFormat::Binary,
            BodyFormat::Binary => BodyFormat::Text,
        };
        match fs::remove_file(self.path(ppid, other)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(failed("replace", &self.path(ppid, other), e))
            }
            _ => Ok(()),
        }
    }

    /// The program of a PPID, `None` if there is none.
    pub fn get(&self, ppid: &str) -> Result<Option<ToolProgram>, ProgramError> {
        for format in [BodyFormat::Text, BodyFormat::Binary] {
            let path = self.path(ppid, format);
            match fs::read(&path) {
                Ok(body) => {
                    let edited = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .map_err(|e| failed("read", &path, e))?;
                    return Ok(Some(ToolProgram {
                        ppid: ppid.to_string(),
                        format,
                        body,
                        edited,
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(failed("read", &path, e)),
            }
        }
        Ok(None)
    }

    /// Every program's PPID, edit date and format, sorted by PPID.
    pub fn list(&self) -> Result<Vec<(String, SystemTime, BodyFormat)>, ProgramError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| failed("list", &self.dir, e))?;
        let mut out = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let (stem, format) = if let Some(stem) = name.strip_suffix(".A") {
                (stem, BodyFormat::Text)
            } else if let Some(stem) = name.strip_suffix(".B") {
                (stem, BodyFormat::Binary)
            } else {
                continue;
            };
            let Some(ppid) = ppid_of(stem) else { continue };
            let edited = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(|e| failed("read", &entry.path(), e))?;
            out.push((ppid, edited, format));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Deletes a program; false if there was none.
    pub fn delete(&self, ppid: &str) -> Result<bool, ProgramError> {
        let mut deleted = false;
        for format in [BodyFormat::Text, BodyFormat::Binary] {
            let path = self.path(ppid, format);
            match fs::remove_file(&path) {
                Ok(()) => deleted = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(failed("delete", &path, e)),
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secs2::sml::parse_item;

    #[test]
    fn s7f3_bodies_are_kept_in_their_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = ToolPrograms::open(dir.path()).unwrap();
        let text = parse_item("<L [2] <A \"ETCH/1\"> <A \"step 1\\nstep 2\">>").unwrap();
        assert_eq!(
            p.save_s7f3(Some(&text), BIG).unwrap(),
            Saved::Stored("ETCH/1".into())
        );
        let binary = parse_item("<L [2] <A \"BIN\"> <B 0x00 0xFF>>").unwrap();
        assert_eq!(
            p.save_s7f3(Some(&binary), BIG).unwrap(),
            Saved::Stored("BIN".into())
        );
        let got = p.get("ETCH/1").unwrap().unwrap();
        assert_eq!(
            (got.format, got.body.as_slice()),
            (BodyFormat::Text, &b"step 1\nstep 2"[..])
        );
        let got = p.get("BIN").unwrap().unwrap();
        assert_eq!(
            (got.format, got.body.as_slice()),
            (BodyFormat::Binary, &[0u8, 0xFF][..])
        );
        // Replacing in the other format leaves one program.
        p.save("BIN", BodyFormat::Text, b"now text").unwrap();
        let listed: Vec<_> = p
            .list()
            .unwrap()
            .into_iter()
            .map(|(id, _, f)| (id, f))
            .collect();
        assert_eq!(
            listed,
            [
                ("BIN".to_string(), BodyFormat::Text),
                ("ETCH/1".to_string(), BodyFormat::Text)
            ]
        );
        assert!(p.delete("BIN").unwrap());
        assert!(!p.delete("BIN").unwrap());
        assert_eq!(p.get("BIN").unwrap(), None);
        for bad in [
            "<L [1] <A \"X\">>",
            "<L [2] <U4 1> <A \"x\">>",
            "<L [2] <A \"X\"> <U4 1>>",
        ] {
            assert!(
                p.save_s7f3(Some(&parse_item(bad).unwrap()), BIG).is_err(),
                "{bad}"
            );
        }
        assert!(p.save_s7f3(None, BIG).is_err());
    }

    const BIG: Quota = Quota {
        count: 1000,
        bytes: 1 << 20,
    };

    #[test]
    fn s7f3_beyond_the_quota_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let p = ToolPrograms::open(dir.path()).unwrap();
        let quota = Quota {
            count: 2,
            bytes: 20,
        };
        let s7f3 = |ppid: &str, n: usize| {
            let body =
                parse_item(&format!("<L [2] <A \"{ppid}\"> <A \"{}\">>", "x".repeat(n))).unwrap();
            p.save_s7f3(Some(&body), quota).unwrap()
        };
        let full = |s: Saved| matches!(s, Saved::Full { .. });
        assert_eq!(s7f3("P1", 10), Saved::Stored("P1".into()));
        assert!(full(s7f3("P2", 11)), "21 bytes in all");
        assert_eq!(s7f3("P2", 10), Saved::Stored("P2".into()));
        match s7f3("P3", 0) {
            Saved::Full { ppid, why } => {
                assert_eq!(ppid, "P3");
                assert!(why.contains("2 programs stored"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s7f3("P1", 4), Saved::Stored("P1".into()), "no larger: fits");
        assert!(full(s7f3("P1", 11)), "6 bytes more than there is room for");
        assert_eq!(s7f3("P1", 10), Saved::Stored("P1".into()));
        assert_eq!(
            p.usage().unwrap(),
            Usage {
                count: 2,
                bytes: 20
            }
        );
        assert_eq!(p.get("P1").unwrap().unwrap().body, b"xxxxxxxxxx");
        assert!(p.delete("P2").unwrap());
        assert_eq!(s7f3("P3", 10), Saved::Stored("P3".into()));
    }
}
