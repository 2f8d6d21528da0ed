//! A response's text split into tokens: atoms (`BODY[]` and the like kept whole), strings
//! (quoted, or a literal taken from the response), `NIL`, `(` and `)`. Enough for the
//! responses the restore client reads (CAPABILITY, NAMESPACE, LIST, FETCH); a token is
//! never longer than the response it came from.

use super::Response;

/// A token of a server response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// An atom (or a number, a flag, a tag).
    Atom(Vec<u8>),
    /// A quoted string or a literal.
    Str(Vec<u8>),
    /// `NIL`.
    Nil,
    /// `(`.
    Open,
    /// `)`.
    Close,
}

/// A response text that does not split into tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// A quoted string without its closing quote.
    #[error("unterminated quoted string at byte {at} of a response")]
    Unterminated {
        /// Where it starts.
        at: usize,
    },
    /// A literal's announcement without its `}`.
    #[error("expected }} after {{ at byte {at} of a response")]
    Unclosed {
        /// Where the `{` is.
        at: usize,
    },
    /// A literal announced in the text but not among the response's literals.
    #[error("a literal announced at byte {at} of a response is missing")]
    MissingLiteral {
        /// Where it was announced.
        at: usize,
    },
}

/// Splits `r`'s text into tokens, literals in their places.
pub fn tokenize(r: &Response) -> Result<Vec<Tok>, TokenError> {
    let b = &r.text;
    let mut lits = r.literals.iter();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\r' | b'\n' => i += 1,
            b'(' => {
                out.push(Tok::Open);
                i += 1
            }
            b')' => {
                out.push(Tok::Close);
                i += 1
            }
            b'"' => {
                let start = i;
                let mut s = Vec::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(TokenError::Unterminated { at: start }),
                        Some(b'\\') => {
                            s.extend(b.get(i + 1));
                            i += 2
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            s.push(*c);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Str(s));
            }
            b'{' => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'}')
                    .map(|p| i + p)
                    .ok_or(TokenError::Unclosed { at: i })?;
                out.push(Tok::Str(
                    lits.next()
                        .cloned()
                        .ok_or(TokenError::MissingLiteral { at: i })?,
                ));
                i = end + 1;
            }
            _ => {
                let start = i;
                // `BODY[]` and the like stay one atom.
                let mut depth = 0usize;
                while i < b.len() {
                    match b[i] {
                        b'[' => depth += 1,
                        b']' => depth = depth.saturating_sub(1),
                        b' ' | b'(' | b')' | b'\r' | b'\n' if depth == 0 => break,
                        _ => {}
                    }
                    i += 1;
                }
                let a = b[start..i].to_vec();
                out.push(if a.eq_ignore_ascii_case(b"NIL") {
                    Tok::Nil
                } else {
                    Tok::Atom(a)
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_fetch_responses() {
        let r = Response {
            text: b"* 3 FETCH (UID 4 BODY[] {5} FLAGS (\\Seen $Work) X \"a\\\"b\" nil)".to_vec(),
            literals: vec![b"hello".to_vec()],
        };
        let t = tokenize(&r).unwrap();
        assert_eq!(t[4], Tok::Atom(b"UID".to_vec()));
        assert_eq!(t[6], Tok::Atom(b"BODY[]".to_vec()));
        assert_eq!(t[7], Tok::Str(b"hello".to_vec()));
        assert_eq!(t.last().unwrap(), &Tok::Close);
        assert!(t.contains(&Tok::Str(b"a\"b".to_vec())));
        assert!(t.contains(&Tok::Nil));
    }

    #[test]
    fn broken_texts_say_where() {
        let r = |t: &[u8]| Response {
            text: t.to_vec(),
            literals: Vec::new(),
        };
        assert_eq!(
            tokenize(&r(b"* X \"abc")),
            Err(TokenError::Unterminated { at: 4 })
        );
        assert_eq!(tokenize(&r(b"* X {3")), Err(TokenError::Unclosed { at: 4 }));
        assert_eq!(
            tokenize(&r(b"* X {3}")),
            Err(TokenError::MissingLiteral { at: 4 })
        );
        // A `]` without `[` does not make an atom swallow the rest.
        assert_eq!(tokenize(&r(b"a] b")).unwrap().len(), 2);
    }
}
