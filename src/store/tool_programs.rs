//! Process programs the tools send the gateway (S7F3), for `system.secsgem.getToolProgram`,
//! `getToolProgramDataset` and `deleteToolProgram`: one file per PPID in a folder, named as
//! [`super::programs::file_name`] names it plus `.A` (text PPBODY) or `.B` (binary PPBODY),
//! so the body comes back in the format the tool sent. The file's modification time is the
//! program's edit date. Files are written as the simulator's programs are (a synced temporary
//! file renamed into place).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::programs::{file_name, ppid_of, save_program_file};
use crate::gem::programs::ProgramError;
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
    /// same PPID. Returns its PPID.
    pub fn save_s7f3(&self, body: Option<&Item>) -> Result<String, ProgramError> {
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
        self.save(&ppid, format, bytes)?;
        Ok(ppid)
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
        assert_eq!(p.save_s7f3(Some(&text)).unwrap(), "ETCH/1");
        let binary = parse_item("<L [2] <A \"BIN\"> <B 0x00 0xFF>>").unwrap();
        assert_eq!(p.save_s7f3(Some(&binary)).unwrap(), "BIN");
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
                p.save_s7f3(Some(&parse_item(bad).unwrap())).is_err(),
                "{bad}"
            );
        }
        assert!(p.save_s7f3(None).is_err());
    }
}
