//! What an IMAP server answers, as the restore's IMAP client reads it (RFC 9051's response
//! syntax, the part the client needs). Pure: bytes in, responses out; the socket lives in
//! backup-server's `restore::imap`.
//!
//! * [`response`]: one response out of the bytes received so far: its line(s) and the
//!   literals they announce, every length bounded by [`Limits`] before it sizes anything,
//!   so a server announcing `{18446744073709551615}` or sending a line without end gets a
//!   [`ResponseError`], never an allocation of its choosing.
//! * [`tokens`]: a response's text split into atoms, strings (quoted or literal), NIL and
//!   parentheses.
//! * [`mutf7`]: folder names between modified UTF-7 (the wire, the store) and UTF-8 (the
//!   command line).

pub mod mutf7;
pub mod response;
pub mod tokens;

pub use response::{parse_response, Limits, Response, ResponseError};
pub use tokens::{tokenize, Tok, TokenError};
