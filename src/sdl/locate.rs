//! Line numbers of JSON key paths: serde_json gives a position only for syntax errors, so the
//! SDL loader scans the source once and records where every key and array element starts.
//!
//! Paths are written the way SDL messages name them: `messages.S6.F11.realtime` for object
//! keys, `messages.S1.F3.body[0]` for array elements.

use std::collections::HashMap;

/// The line (1-based) of every key path of a JSON text.
#[derive(Debug, Default, Clone)]
pub(crate) struct Lines {
    lines: HashMap<String, usize>,
}

impl Lines {
    /// Scans `text`. The text should be valid JSON; on anything unexpected the scan stops and
    /// keeps what it found, so a line is never wrong, only sometimes unknown (0).
    pub(crate) fn scan(text: &str) -> Lines {
        let mut s = Scanner {
            bytes: text.as_bytes(),
            pos: 0,
            line: 1,
            out: HashMap::new(),
        };
        // `None`: malformed text; the paths found before it are kept.
        let _ = s.value("");
        Lines { lines: s.out }
    }

    /// The line of `path`, or of its nearest enclosing key when `path` itself is not in the
    /// text (a default, a missing key); 0 when nothing of it is.
    pub(crate) fn line(&self, path: &str) -> usize {
        let mut p = path;
        loop {
            if let Some(&line) = self.lines.get(p) {
                return line;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return 0,
            }
        }
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: usize,
    out: HashMap<String, usize>,
}

impl Scanner<'_> {
    fn skip_ws(&mut self) {
        while let Some(&b) = self.bytes.get(self.pos) {
            match b {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => return,
            }
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// A string starting at `"`; returns its decoded text.
    fn string(&mut self) -> Option<String> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.peek()? {
                b'\\' => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    break;
                }
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                _ => self.pos += 1,
            }
        }
        let raw = std::str::from_utf8(self.bytes.get(start..self.pos)?).ok()?;
        serde_json::from_str(raw).ok()
    }

    fn value(&mut self, path: &str) -> Option<()> {
        self.skip_ws();
        match self.peek()? {
            b'{' => {
                self.pos += 1;
                loop {
                    self.skip_ws();
                    match self.peek()? {
                        b'}' => {
                            self.pos += 1;
                            return Some(());
                        }
                        b',' => self.pos += 1,
                        b'"' => {
                            let line = self.line;
                            let key = self.string()?;
                            let child = if path.is_empty() {
                                key
                            } else {
                                format!("{path}.{key}")
                            };
                            self.out.entry(child.clone()).or_insert(line);
                            self.skip_ws();
                            if self.peek()? != b':' {
                                return None;
                            }
                            self.pos += 1;
                            self.value(&child)?;
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.pos += 1;
                let mut i = 0;
                loop {
                    self.skip_ws();
                    match self.peek()? {
                        b']' => {
                            self.pos += 1;
                            return Some(());
                        }
                        b',' => self.pos += 1,
                        _ => {
                            let child = format!("{path}[{i}]");
                            self.out.entry(child.clone()).or_insert(self.line);
                            self.value(&child)?;
                            i += 1;
                        }
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            _ => {
                // A number, true, false or null: up to the next delimiter. Nothing at all
                // (`[}`) is broken text: stop rather than loop.
                let start = self.pos;
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace() {
                        break;
                    }
                    self.pos += 1;
                }
                (self.pos > start).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_elements_by_path() {
        let text = "{\n  \"doc\": [\"a\",\n    \"b\"],\n  \"messages\": {\n    \"S6\": {\"F11\": {\n      \"realtme\": true,\n      \"body\": [\"DATAID\",\n        {\"L*\": \"V\"}]\n    }}\n  },\n  \"say \\\"hi\\\"\": 1\n}\n";
        let lines = Lines::scan(text);
        assert_eq!(lines.line("doc"), 2);
        assert_eq!(lines.line("doc[1]"), 3);
        assert_eq!(lines.line("messages"), 4);
        assert_eq!(lines.line("messages.S6.F11"), 5);
        assert_eq!(lines.line("messages.S6.F11.realtme"), 6);
        assert_eq!(lines.line("messages.S6.F11.body[0]"), 7);
        assert_eq!(lines.line("messages.S6.F11.body[1].L*"), 8);
        assert_eq!(lines.line("say \"hi\""), 11);
        // Missing keys fall back to the nearest enclosing one.
        assert_eq!(lines.line("messages.S6.F11.reply"), 5);
        assert_eq!(lines.line("messages.S6.F11.body[0][2]"), 7);
        assert_eq!(lines.line("nothing.here"), 0);
    }

    proptest::proptest! {
        /// Broken, truncated or odd text never panics the scanner.
        #[test]
        fn scanning_any_text_never_panics(text in "[{}\\[\\]\":,\\\\ a-z0-9\n\u{e9}]{0,80}") {
            let lines = Lines::scan(&text);
            let _ = lines.line("a.b[0]");
        }
    }

    #[test]
    fn keeps_what_it_found_in_broken_text() {
        assert_eq!(Lines::scan("[}").line("x"), 0);
        assert_eq!(Lines::scan("{\"a\": [1, }").line("a[0]"), 1);
        let lines = Lines::scan("{\n\"a\": 1,\n\"b\": {\"c\": [1, 2,\n");
        assert_eq!(lines.line("a"), 2);
        assert_eq!(lines.line("b.c[1]"), 3);
        assert_eq!(lines.line("b.c[9]"), 3);
    }
}
