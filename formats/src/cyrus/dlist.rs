//! Cyrus's "dlist" notation: the typed lists Cyrus writes into cyrus.header and as the values
//! of mailboxes.db, e.g. `%(T e N user.alice I aa12amv1n7v4y439awalz6pe A %(alice lrswipkxtecdan))`.
//!
//! The grammar, as Cyrus 3.x writes and reads it (imap/dlist.c):
//!
//! ```text
//! value   = kvlist / list / literal / quoted / atom      ; "NIL" as an atom is Nil
//! kvlist  = "%(" [key SP value *(SP key SP value)] ")"   ; keys are atoms, quoted or literals
//! list    = "("  [value *(SP value)] ")"
//! literal = "{" digits ["+"] "}" [CR] LF <that many bytes>
//! quoted  = DQUOTE *(char / "\" DQUOTE / "\\") DQUOTE
//! atom    = 1*<any byte but SP, CR, LF, "(", ")", DQUOTE, "{">
//! ```
//!
//! Flags such as `\Seen` are atoms that start with a backslash. Cyrus also knows file literals
//! (`%{partition guid size}`), which appear only in the replication protocol, never in the files
//! mailbackup reads: they are refused here.

use std::fmt;

/// One parsed dlist value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dlist {
    /// An atom, quoted string or literal: raw bytes (Cyrus does not promise UTF-8).
    Atom(Vec<u8>),
    /// A plain list `( ... )`.
    List(Vec<Dlist>),
    /// A key-value list `%( ... )`, in file order (keys may repeat; [`Dlist::get`] takes the first).
    Kv(Vec<(String, Dlist)>),
    /// The atom `NIL`.
    Nil,
}

/// A dlist that could not be parsed: where, what was expected and what was there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dlist: at byte {offset}: expected {expected}, found {found}")]
pub struct DlistError {
    /// Byte offset in the input where parsing failed.
    pub offset: usize,
    /// What the grammar allowed at that point.
    pub expected: &'static str,
    /// What was there instead (a short, printable rendering).
    pub found: String,
}

/// Deepest nesting accepted: real files nest three levels; this bound keeps hostile input from
/// exhausting the stack.
const MAX_DEPTH: usize = 64;

/// Parses one dlist value at the start of `input` and returns it with the number of bytes used.
/// Bytes after the value (such as a trailing newline) are left to the caller.
pub fn parse(input: &[u8]) -> Result<(Dlist, usize), DlistError> {
    let mut p = Parser { input, pos: 0 };
    let value = p.value(0)?;
    Ok((value, p.pos))
}

impl Dlist {
    /// The value of `key` in a key-value list (the first, if the key repeats).
    pub fn get(&self, key: &str) -> Option<&Dlist> {
        self.kv()?.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The bytes of an atom, quoted string or literal.
    pub fn atom(&self) -> Option<&[u8]> {
        match self {
            Dlist::Atom(a) => Some(a),
            _ => None,
        }
    }

    /// The atom as UTF-8 text, if it is an atom and valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.atom()?).ok()
    }

    /// The atom as an unsigned decimal number.
    pub fn as_u64(&self) -> Option<u64> {
        let a = self.atom()?;
        if a.is_empty() || !a.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(a).ok()?.parse().ok()
    }

    /// The items of a plain list.
    pub fn list(&self) -> Option<&[Dlist]> {
        match self {
            Dlist::List(l) => Some(l),
            _ => None,
        }
    }

    /// The pairs of a key-value list.
    pub fn kv(&self) -> Option<&[(String, Dlist)]> {
        match self {
            Dlist::Kv(kv) => Some(kv),
            _ => None,
        }
    }
}

impl Dlist {
    /// The value in dlist notation, as Cyrus would read it back: atoms that need it are quoted,
    /// or sent as literals when they hold bytes a quoted string cannot.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_into(&mut out);
        out
    }

    fn write_into(&self, out: &mut Vec<u8>) {
        match self {
            Dlist::Atom(a) => write_atom(out, a),
            Dlist::Nil => out.extend_from_slice(b"NIL"),
            Dlist::List(items) => {
                out.push(b'(');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    v.write_into(out);
                }
                out.push(b')');
            }
            Dlist::Kv(pairs) => {
                out.extend_from_slice(b"%(");
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    write_atom(out, k.as_bytes());
                    out.push(b' ');
                    v.write_into(out);
                }
                out.push(b')');
            }
        }
    }
}

impl fmt::Display for Dlist {
    /// The dlist notation, with any non-UTF-8 bytes shown lossily.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

fn write_atom(out: &mut Vec<u8>, a: &[u8]) {
    // 0x1f is the hierarchy separator of mailboxes.db names: Cyrus writes it bare.
    let printable = |b: u8| (0x20..0x7f).contains(&b) || b == 0x1f;
    let bare = !a.is_empty()
        && a != b"NIL"
        && a[0] != b'%'
        && a.iter().all(|&b| printable(b) && !is_special(b));
    if bare {
        out.extend_from_slice(a);
    } else if a.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        out.push(b'"');
        for &b in a {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}+}}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
    }
}

/// Bytes that end an atom.
fn is_special(b: u8) -> bool {
    matches!(b, b' ' | b'\r' | b'\n' | b'(' | b')' | b'"' | b'{')
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn err(&self, expected: &'static str) -> DlistError {
        let found = match self.input.get(self.pos..) {
            Some([]) | None => "end of input".to_string(),
            Some(rest) => {
                let shown: String = rest
                    .iter()
                    .take(16)
                    .flat_map(|&b| std::ascii::escape_default(b))
                    .map(char::from)
                    .collect();
                format!("\"{shown}\"")
            }
        };
        DlistError {
            offset: self.pos,
            expected,
            found,
        }
    }

    fn value(&mut self, depth: usize) -> Result<Dlist, DlistError> {
        if depth > MAX_DEPTH {
            return Err(self.err("less deeply nested lists"));
        }
        match self.peek() {
            Some(b'(') => {
                self.pos += 1;
                let mut items = Vec::new();
                while !self.close()? {
                    items.push(self.value(depth + 1)?);
                }
                Ok(Dlist::List(items))
            }
            Some(b'%') => {
                self.pos += 1;
                if self.peek() != Some(b'(') {
                    return Err(self.err("'(' after '%' (file literals are not allowed here)"));
                }
                self.pos += 1;
                let mut pairs = Vec::new();
                while !self.close()? {
                    let key = self.string("a key")?;
                    let key = String::from_utf8(key).map_err(|_| DlistError {
                        offset: self.pos,
                        expected: "a UTF-8 key",
                        found: "invalid UTF-8".into(),
                    })?;
                    if self.peek() != Some(b' ') {
                        return Err(self.err("a space between key and value"));
                    }
                    self.pos += 1;
                    pairs.push((key, self.value(depth + 1)?));
                }
                Ok(Dlist::Kv(pairs))
            }
            _ => {
                let nil = self.input[self.pos..].starts_with(b"NIL")
                    && self.input.get(self.pos + 3).is_none_or(|&b| is_special(b));
                if nil {
                    self.pos += 3;
                    return Ok(Dlist::Nil);
                }
                Ok(Dlist::Atom(self.string("a value")?))
            }
        }
    }

    /// Inside a list: skips one separating space and returns true at the closing parenthesis.
    fn close(&mut self) -> Result<bool, DlistError> {
        match self.peek() {
            Some(b')') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b' ') => {
                // Cyrus skips runs of spaces between items.
                while self.peek() == Some(b' ') {
                    self.pos += 1;
                }
                if self.peek() == Some(b')') {
                    self.pos += 1;
                    return Ok(true);
                }
                Ok(false)
            }
            None => Err(self.err("')' closing the list")),
            // The first item follows the opening parenthesis directly.
            Some(_) if matches!(self.input.get(self.pos.wrapping_sub(1)), Some(b'(')) => Ok(false),
            Some(_) => Err(self.err("a space or ')' after a list item")),
        }
    }

    /// An atom, quoted string or literal.
    fn string(&mut self, expected: &'static str) -> Result<Vec<u8>, DlistError> {
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                let mut out = Vec::new();
                loop {
                    match self.peek() {
                        None | Some(b'\r') | Some(b'\n') => return Err(self.err("a closing '\"'")),
                        Some(b'"') => {
                            self.pos += 1;
                            return Ok(out);
                        }
                        Some(b'\\') => {
                            self.pos += 1;
                            match self.peek() {
                                Some(c @ (b'"' | b'\\')) => out.push(c),
                                _ => {
                                    return Err(
                                        self.err("'\"' or '\\' after '\\' in a quoted string")
                                    )
                                }
                            }
                            self.pos += 1;
                        }
                        Some(c) => {
                            out.push(c);
                            self.pos += 1;
                        }
                    }
                }
            }
            Some(b'{') => {
                self.pos += 1;
                let start = self.pos;
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.pos += 1;
                }
                let digits = &self.input[start..self.pos];
                if digits.is_empty() || digits.len() > 12 {
                    return Err(self.err("the length of a literal"));
                }
                let len: usize = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| self.err("the length of a literal"))?;
                if self.peek() == Some(b'+') {
                    self.pos += 1;
                }
                if self.peek() != Some(b'}') {
                    return Err(self.err("'}' after the length of a literal"));
                }
                self.pos += 1;
                if self.peek() == Some(b'\r') {
                    self.pos += 1;
                }
                if self.peek() != Some(b'\n') {
                    return Err(self.err("a newline after a literal's length"));
                }
                self.pos += 1;
                let end = self
                    .pos
                    .checked_add(len)
                    .filter(|&e| e <= self.input.len())
                    .ok_or_else(|| self.err("as many bytes as the literal's length"))?;
                let out = self.input[self.pos..end].to_vec();
                self.pos = end;
                Ok(out)
            }
            Some(b) if !is_special(b) => {
                let start = self.pos;
                while self.peek().is_some_and(|b| !is_special(b)) {
                    self.pos += 1;
                }
                Ok(self.input[start..self.pos].to_vec())
            }
            _ => Err(self.err(expected)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[u8]) -> Dlist {
        let (v, used) = parse(s).unwrap();
        assert_eq!(used, s.len(), "whole input used");
        v
    }

    fn atom(s: &str) -> Dlist {
        Dlist::Atom(s.as_bytes().to_vec())
    }

    #[test]
    fn cyrus_header_line() {
        let v =
            p(b"%(T e N user.u3x0 I tr3g9qzoe6kapjm5i3coxngy A %(u3x0 lrswipkxtecdan) U ($Work))");
        assert_eq!(v.get("T"), Some(&atom("e")));
        assert_eq!(v.get("N").unwrap().as_str(), Some("user.u3x0"));
        assert_eq!(
            v.get("A").unwrap().get("u3x0").unwrap().as_str(),
            Some("lrswipkxtecdan")
        );
        assert_eq!(v.get("U").unwrap().list(), Some(&[atom("$Work")][..]));
        assert_eq!(v.get("Q"), None);
    }

    #[test]
    fn mailboxes_db_value_with_unit_separator_and_empty_list() {
        let v = p(b"%(T e N user\x1fu3x0 M 1795415424 H ())");
        assert_eq!(v.get("N").unwrap().atom(), Some(&b"user\x1fu3x0"[..]));
        assert_eq!(v.get("M").unwrap().as_u64(), Some(1795415424));
        assert_eq!(v.get("H"), Some(&Dlist::List(vec![])));
    }

    #[test]
    fn quoted_literal_nil_and_flags() {
        let v = p(b"(\"a \\\"b\\\\\" {3+}\r\nx y NIL \\Seen NILS)");
        assert_eq!(
            v,
            Dlist::List(vec![
                atom("a \"b\\"),
                atom("x y"),
                Dlist::Nil,
                atom("\\Seen"),
                atom("NILS"),
            ])
        );
    }

    #[test]
    fn trailing_bytes_are_left_to_the_caller() {
        let (v, used) = parse(b"%(A 1)\nrest").unwrap();
        assert_eq!(used, 6);
        assert_eq!(v.get("A").unwrap().as_u64(), Some(1));
    }

    #[test]
    fn errors_name_the_offset() {
        let e = parse(b"%(A 1").unwrap_err();
        assert_eq!(e.offset, 5);
        assert!(e.to_string().contains("')' closing the list"), "{e}");
        let e = parse(b"{99}\r\nshort").unwrap_err();
        assert!(e.to_string().contains("literal"), "{e}");
        let e = parse(b"%{default abc 3}\r\nxyz").unwrap_err();
        assert_eq!(e.offset, 1);
        let e = parse(b"%(A)").unwrap_err();
        assert!(e.to_string().contains("space between key and value"), "{e}");
        assert!(parse(&[b'('; 1000]).is_err());
        assert!(parse(b"").is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in [
            &b"%(T e N user.u3x0 A %(u3x0 lrswipkxtecdan) U ($Work \\Seen) H ())"[..],
            b"(\"a b\" NIL {3+}\r\n\x00\x01\x02)",
        ] {
            let v = p(s);
            let again = v.to_bytes();
            assert_eq!(p(&again), v, "{:?}", String::from_utf8_lossy(&again));
        }
    }
}
