//! One IMAP response out of a buffer of whatever has arrived: a line ending in CRLF (or LF);
//! a line that ends with a literal's announcement `{n}` is followed by `n` bytes and then
//! the rest of the response, another line.
//!
//! [`parse_response`] is called with the bytes received so far; it answers `Ok(None)` when
//! they do not hold a whole response yet (the caller reads more and calls again), and
//! fails as soon as what has arrived breaks a [`Limits`] bound: a line longer than
//! `max_line`, a literal announced longer than `max_literal` (its digits are checked before
//! the number is used: 20 digits overflow no `u64`, and the bound comes before any
//! buffer), or literals adding up past `max_literal`. Nothing is allocated by the
//! announced length: the caller's buffer grows only with the bytes the server really sent.

/// Bounds on what a server may send in one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest response text (its lines, literals not counted), in bytes.
    pub max_line: usize,
    /// The most literal bytes in one response (one literal or several).
    pub max_literal: u64,
}

impl Default for Limits {
    /// 1 MiB of text (a CAPABILITY or LIST line is well under 10 KiB) and 256 MiB of
    /// literals (a message fetched to compare it with one being restored).
    fn default() -> Self {
        Limits {
            max_line: 1 << 20,
            max_literal: 256 << 20,
        }
    }
}

/// One response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// The response's text without line ends, each literal left as its `{n}` announcement
    /// (so the text reads as the server's one logical line).
    pub text: Vec<u8>,
    /// The literals, in order.
    pub literals: Vec<Vec<u8>>,
}

/// A response that breaks a bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The text goes on past `max_line` bytes without ending.
    #[error("a response line longer than {limit} bytes (at byte {at} of the response): not an IMAP server, or a broken one")]
    LineTooLong {
        /// The bound.
        limit: usize,
        /// How far the response got.
        at: usize,
    },
    /// A literal announced longer than the bound (or longer than any number).
    #[error("a literal of {announced} bytes announced (at byte {at} of the response), more than the {limit} bytes allowed")]
    LiteralTooLarge {
        /// The digits announced (at most 40 of them).
        announced: String,
        /// The bound.
        limit: u64,
        /// Where the `{` is, in the response's text.
        at: usize,
    },
}

/// One line of a response within the buffer: where it starts, its length without the line
/// end, and where the literal it announces starts and how long it is.
type Piece = (usize, usize, Option<(usize, usize)>);

/// Reads one response from the front of `buf`: `Ok(Some((response, bytes used)))`,
/// `Ok(None)` when `buf` holds no whole response yet, or the bound it breaks.
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(Response, usize)>, ResponseError> {
    // First find the end without copying anything: a caller with half a literal calls
    // again and again.
    let mut pos = 0;
    let mut text_len = 0usize;
    let mut literal_total = 0u64;
    let mut pieces: Vec<Piece> = Vec::new();
    loop {
        let rest = &buf[pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            if text_len + rest.len() > limits.max_line {
                return Err(ResponseError::LineTooLong {
                    limit: limits.max_line,
                    at: text_len + rest.len(),
                });
            }
            return Ok(None);
        };
        let line = &rest[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if text_len + line.len() > limits.max_line {
            return Err(ResponseError::LineTooLong {
                limit: limits.max_line,
                at: text_len + line.len(),
            });
        }
        let line_start = pos;
        let line_text_start = text_len;
        text_len += line.len();
        let after = pos + nl + 1;
        match literal_announced(line) {
            None => {
                pieces.push((line_start, line.len(), None));
                let mut resp = Response {
                    text: Vec::with_capacity(text_len),
                    literals: Vec::with_capacity(pieces.len() - 1),
                };
                for (start, len, lit) in pieces {
                    resp.text.extend_from_slice(&buf[start..start + len]);
                    if let Some((ls, ll)) = lit {
                        resp.literals.push(buf[ls..ls + ll].to_vec());
                    }
                }
                return Ok(Some((resp, after)));
            }
            Some((brace, digits)) => {
                let too_large = || ResponseError::LiteralTooLarge {
                    announced: String::from_utf8_lossy(&digits[..digits.len().min(40)])
                        .into_owned(),
                    limit: limits.max_literal,
                    at: line_text_start + brace,
                };
                // At most 19 digits: fits a u64 whatever they are.
                if digits.len() > 19 {
                    return Err(too_large());
                }
                let n = digits
                    .iter()
                    .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
                literal_total = literal_total.saturating_add(n);
                if n > limits.max_literal || literal_total > limits.max_literal {
                    return Err(too_large());
                }
                // n <= max_literal, which the caller chose: it fits a usize it can hold.
                let n = usize::try_from(n).map_err(|_| too_large())?;
                if buf.len() - after < n {
                    return Ok(None);
                }
                pieces.push((line_start, line.len(), Some((after, n))));
                pos = after + n;
            }
        }
    }
}

/// Whether a line ends with a literal's announcement `{digits}` (or the client-side form
/// `{digits+}`): where its `{` is and the digits.
fn literal_announced(line: &[u8]) -> Option<(usize, &[u8])> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&c| c == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit)).then_some((open, digits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limits {
        Limits {
            max_line: 64,
            max_literal: 100,
        }
    }

    #[test]
    fn reads_lines_and_literals_whole_or_asks_for_more() {
        let l = Limits::default();
        let (r, used) = parse_response(b"* OK hi\r\nA1 OK", &l).unwrap().unwrap();
        assert_eq!((r.text.as_slice(), used), (&b"* OK hi"[..], 9));
        assert!(r.literals.is_empty());
        let whole = b"* 1 FETCH (BODY[] {5}\r\nhello UID 3)\r\n";
        let (r, used) = parse_response(whole, &l).unwrap().unwrap();
        assert_eq!(used, whole.len());
        assert_eq!(r.text, b"* 1 FETCH (BODY[] {5} UID 3)");
        assert_eq!(r.literals, vec![b"hello".to_vec()]);
        for cut in 0..whole.len() {
            assert_eq!(parse_response(&whole[..cut], &l).unwrap(), None, "{cut}");
        }
        // A bare LF ends a line too; `{x}` is text, not a literal.
        let (r, _) = parse_response(b"* LIST () \"/\" {x}\n", &l)
            .unwrap()
            .unwrap();
        assert_eq!(r.text, b"* LIST () \"/\" {x}");
    }

    #[test]
    fn absurd_literal_lengths_are_refused_before_anything_is_sized() {
        for (announce, digits) in [
            (
                &b"* 1 FETCH (BODY[] {18446744073709551615}\r\n"[..],
                "18446744073709551615",
            ),
            (b"* 1 FETCH (BODY[] {1000000000000}\r\n", "1000000000000"),
            (
                b"* 1 FETCH (BODY[] {99999999999999999999999999}\r\n",
                "99999999999999999999999999",
            ),
            (b"* 1 FETCH (BODY[] {101}\r\n", "101"),
        ] {
            match parse_response(announce, &small()) {
                Err(ResponseError::LiteralTooLarge {
                    announced,
                    limit,
                    at,
                }) => {
                    assert_eq!((announced.as_str(), limit, at), (digits, 100, 18));
                }
                other => panic!("{other:?}"),
            }
        }
        // Several literals adding up past the bound.
        let two = [&b"* X {60}\r\n"[..], &[b'a'; 60], b" {60}\r\n"].concat();
        assert!(matches!(
            parse_response(&two, &small()),
            Err(ResponseError::LiteralTooLarge { .. })
        ));
        let e = parse_response(b"* X {1000000000000}\r\n", &Limits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a literal of 1000000000000 bytes announced (at byte 4 of the response), more than the 268435456 bytes allowed"
        );
    }

    #[test]
    fn endless_lines_are_refused_at_the_bound() {
        assert_eq!(parse_response(&[b'a'; 64], &small()).unwrap(), None);
        assert_eq!(
            parse_response(&[b'a'; 65], &small()),
            Err(ResponseError::LineTooLong { limit: 64, at: 65 })
        );
        // The bound covers the text of all lines of one response.
        let long = [&b"* X {1}\r\n"[..], b"a", &[b'b'; 60], b"\r\n"].concat();
        assert!(matches!(
            parse_response(&long, &small()),
            Err(ResponseError::LineTooLong { .. })
        ));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes: no panic; a response found never uses more than the buffer, its
        /// text and literals stay inside the bounds; a prefix of a whole response is
        /// either incomplete or the same error.
        #[test]
        fn any_bytes(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
            let l = Limits { max_line: 80, max_literal: 50 };
            if let Ok(Some((r, used))) = parse_response(&buf, &l) {
                prop_assert!(used <= buf.len());
                prop_assert!(r.text.len() <= l.max_line);
                prop_assert!(r.literals.iter().map(|x| x.len() as u64).sum::<u64>() <= l.max_literal);
                for cut in 0..used {
                    prop_assert!(!matches!(parse_response(&buf[..cut], &l), Ok(Some(_))));
                }
            }
        }

        /// Responses built from lines and literals read back as they were built.
        #[test]
        fn built_responses_read_back(
            parts in proptest::collection::vec(("[ -z|~]{0,10}", proptest::collection::vec(any::<u8>(), 0..20)), 0..4),
            last in "[ -z|~]{0,10}",
        ) {
            let mut buf = Vec::new();
            let mut text = Vec::new();
            for (t, lit) in &parts {
                let announce = format!("{t}{{{}}}", lit.len());
                buf.extend_from_slice(announce.as_bytes());
                buf.extend_from_slice(b"\r\n");
                buf.extend_from_slice(lit);
                text.extend_from_slice(announce.as_bytes());
            }
            // A line ending in `{digits}` would announce a literal.
            let last = format!("{last}.");
            buf.extend_from_slice(last.as_bytes());
            buf.extend_from_slice(b"\r\nA1 OK\r\n");
            text.extend_from_slice(last.as_bytes());
            let (r, used) = parse_response(&buf, &Limits::default()).unwrap().unwrap();
            prop_assert_eq!(used, buf.len() - 7);
            prop_assert_eq!(r.text, text);
            let lits: Vec<Vec<u8>> = parts.into_iter().map(|(_, l)| l).collect();
            prop_assert_eq!(r.literals, lits);
        }
    }
}
