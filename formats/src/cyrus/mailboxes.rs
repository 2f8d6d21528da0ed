//! TODO(mailboxes): being written.
