//! Helpers for the end-to-end tests: a private Cyrus IMAP on loopback, started and stopped
//! by the scripts in `tests/cyrus/`.
