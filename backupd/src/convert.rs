//! Conversions between the spool's view ([`crate::access`]) and the wire's
//! ([`formats::protocol`]): the server turns the first into the second, the client the
//! second back into the first. Both carry the same fields; the wire types live in
//! `formats` because that crate cannot depend on this one.

use crate::access;
use formats::protocol as wire;

impl From<access::UserFileId> for wire::UserFileId {
    fn from(id: access::UserFileId) -> Self {
        match id {
            access::UserFileId::Seen => wire::UserFileId::Seen,
            access::UserFileId::Subscriptions => wire::UserFileId::Subscriptions,
            access::UserFileId::SieveScript(n) => wire::UserFileId::SieveScript(n),
            access::UserFileId::SieveActive => wire::UserFileId::SieveActive,
        }
    }
}

impl From<wire::UserFileId> for access::UserFileId {
    fn from(id: wire::UserFileId) -> Self {
        match id {
            wire::UserFileId::Seen => access::UserFileId::Seen,
            wire::UserFileId::Subscriptions => access::UserFileId::Subscriptions,
            wire::UserFileId::SieveScript(n) => access::UserFileId::SieveScript(n),
            wire::UserFileId::SieveActive => access::UserFileId::SieveActive,
        }
    }
}

impl From<access::UserEntry> for wire::UserEntry {
    fn from(u: access::UserEntry) -> Self {
        wire::UserEntry {
            user: u.user,
            partition: u.partition,
        }
    }
}

impl From<wire::UserEntry> for access::UserEntry {
    fn from(u: wire::UserEntry) -> Self {
        access::UserEntry {
            user: u.user,
            partition: u.partition,
        }
    }
}

impl From<access::FolderStat> for wire::FolderStat {
    fn from(f: access::FolderStat) -> Self {
        wire::FolderStat {
            name: f.name,
            uniqueid: f.uniqueid,
            partition: f.partition,
            uidvalidity: f.uidvalidity,
            header: f.header,
            index: f.index,
            annotations: f.annotations,
        }
    }
}

impl From<wire::FolderStat> for access::FolderStat {
    fn from(f: wire::FolderStat) -> Self {
        access::FolderStat {
            name: f.name,
            uniqueid: f.uniqueid,
            partition: f.partition,
            uidvalidity: f.uidvalidity,
            header: f.header,
            index: f.index,
            annotations: f.annotations,
        }
    }
}

impl From<access::UserFileStat> for wire::UserFileStat {
    fn from(f: access::UserFileStat) -> Self {
        wire::UserFileStat {
            id: f.id.into(),
            stat: f.stat,
        }
    }
}

impl From<wire::UserFileStat> for access::UserFileStat {
    fn from(f: wire::UserFileStat) -> Self {
        access::UserFileStat {
            id: f.id.into(),
            stat: f.stat,
        }
    }
}
