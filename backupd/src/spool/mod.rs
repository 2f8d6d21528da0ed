//! Reading Cyrus's files under Cyrus's locks.

pub mod folders;
pub mod layout;
pub mod locks;
pub mod mailboxes;
pub mod messages;
pub mod meta;
pub mod user_files;

pub use mailboxes::*;
