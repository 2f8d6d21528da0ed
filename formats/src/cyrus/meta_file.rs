//! The meta files of a Cyrus mailbox that mailbackup copies: one name for them in every layer
//! (the spool reader, the wire protocol, the data file's entry paths).

/// One of a mailbox's meta files (the files beside the message files that Cyrus keeps under
/// its locks). cyrus.cache is not one of them: it is derived from the message files and
/// Cyrus rebuilds it (`reconstruct`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetaFile {
    /// `cyrus.header`: the mailbox's name, unique id, ACL and user flag names.
    Header,
    /// `cyrus.index`: one record per message (UID, flags, GUID, dates, ...).
    Index,
    /// `cyrus.annotations`: per-message annotations (a twoskip database); often absent.
    Annotations,
}

impl MetaFile {
    /// Every meta file, in the order they are copied and stored.
    pub const ALL: [MetaFile; 3] = [MetaFile::Header, MetaFile::Index, MetaFile::Annotations];

    /// The file name in the mailbox directory (also the last component of the file's path
    /// in the data file).
    pub const fn file_name(self) -> &'static str {
        match self {
            MetaFile::Header => "cyrus.header",
            MetaFile::Index => "cyrus.index",
            MetaFile::Annotations => "cyrus.annotations",
        }
    }

    /// The meta file called `name`, if it is one.
    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.file_name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in MetaFile::ALL {
            assert_eq!(MetaFile::from_file_name(m.file_name()), Some(m));
        }
        assert_eq!(MetaFile::from_file_name("cyrus.cache"), None);
    }
}
