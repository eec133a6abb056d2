//! Process programs as files in a folder: one file per PPID, holding the PPBODY bytes. A
//! PPID's characters other than letters, digits, `-`, `_` and `.` are written `%XX` in the
//! file name (and a leading `.` too), so any PPID maps to one safe file name and back.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::gem::programs::{ProgramError, ProgramStore};

/// Process programs kept in a folder.
#[derive(Debug, Clone)]
pub struct FolderPrograms {
    dir: PathBuf,
}

fn failed(what: &str, path: &Path, e: std::io::Error) -> ProgramError {
    ProgramError(format!("cannot {what} {}: {e}", path.display()))
}

/// The file name of a PPID.
pub fn file_name(ppid: &str) -> String {
    let mut out = String::with_capacity(ppid.len());
    for (i, b) in ppid.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Writes a program's file durably: a hidden temporary file in `dir`, synced, then renamed
/// over `path`, so a reader never sees half a program.
pub(crate) fn save_program_file(
    dir: &Path,
    ppid: &str,
    path: &Path,
    body: &[u8],
) -> Result<(), ProgramError> {
    let tmp = dir.join(format!(".{}.tmp", file_name(ppid)));
    let mut file = fs::File::create(&tmp).map_err(|e| failed("create", &tmp, e))?;
    file.write_all(body)
        .and_then(|_| file.sync_all())
        .map_err(|e| failed("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| failed("write", path, e))
}

/// The PPID of a file name, `None` if the name is not one [`file_name`] makes.
pub fn ppid_of(name: &str) -> Option<String> {
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl FolderPrograms {
    /// Process programs in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<FolderPrograms, ProgramError> {
        fs::create_dir_all(dir).map_err(|e| failed("create", dir, e))?;
        Ok(FolderPrograms {
            dir: dir.to_path_buf(),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, ppid: &str) -> PathBuf {
        self.dir.join(file_name(ppid))
    }
}

impl ProgramStore for FolderPrograms {
    fn list(&self) -> Result<Vec<String>, ProgramError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| failed("list", &self.dir, e))?;
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .filter_map(|n| ppid_of(&n))
            .collect();
        names.sort();
        Ok(names)
    }

    fn load(&self, ppid: &str) -> Result<Option<Vec<u8>>, ProgramError> {
        let path = self.path(ppid);
        match fs::read(&path) {
            Ok(body) => Ok(Some(body)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed("read", &path, e)),
        }
    }

    fn save(&mut self, ppid: &str, body: &[u8]) -> Result<bool, ProgramError> {
        let path = self.path(ppid);
        let created = !path.exists();
        save_program_file(&self.dir, ppid, &path, body)?;
        Ok(created)
    }

    fn delete(&mut self, ppid: &str) -> Result<bool, ProgramError> {
        let path = self.path(ppid);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(failed("delete", &path, e)),
        }
    }

    fn size(&self, ppid: &str) -> Result<Option<u64>, ProgramError> {
        let path = self.path(ppid);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed("read", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for ppid in ["RECIPE-1", "a/b c", ".hidden", "x.y", "100%", "Ü"] {
            let name = file_name(ppid);
            assert!(!name.contains('/') && !name.starts_with('.'), "{name}");
            assert_eq!(ppid_of(&name).as_deref(), Some(ppid));
        }
    }

    #[test]
    fn stores_lists_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = FolderPrograms::open(dir.path()).unwrap();
        assert!(p.save("b/1", b"text").unwrap());
        assert!(!p.save("b/1", b"text2").unwrap());
        assert!(p.save("a", &[0, 1, 2]).unwrap());
        assert_eq!(p.list().unwrap(), vec!["a".to_string(), "b/1".to_string()]);
        assert_eq!(p.load("b/1").unwrap().as_deref(), Some(&b"text2"[..]));
        assert!(p.delete("a").unwrap());
        assert!(!p.delete("a").unwrap());
        assert_eq!(p.load("a").unwrap(), None);
    }

    #[test]
    fn usage_counts_programs_and_bytes() {
        use crate::gem::programs::Usage;
        let dir = tempfile::tempdir().unwrap();
        let mut p = FolderPrograms::open(dir.path()).unwrap();
        assert_eq!(p.usage().unwrap(), Usage::default());
        p.save("a", b"12345").unwrap();
        p.save("b/1", b"123").unwrap();
        assert_eq!(p.usage().unwrap(), Usage { count: 2, bytes: 8 });
        assert_eq!(p.size("b/1").unwrap(), Some(3));
        assert_eq!(p.size("c").unwrap(), None);
    }
}
