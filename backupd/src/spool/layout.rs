//! Where Cyrus 3.6 keeps a mailbox's files, worked out once from imapd.conf: the partition
//! roots, the meta partitions some servers put cyrus.header / cyrus.index on, and the archive
//! partitions that hold archived message files (imap/mboxname.c `mboxname_datapath`,
//! `mboxname_archivepath`, `mboxname_metapath`).
//!
//! Paths are built only from these roots and what mailboxes.db says (the partition name and
//! the unique id); never from a name a client sent.

use super::error::SpoolError;
use super::locks;
use super::mailbox::Mailbox;
use super::mailboxes::mailboxes_db_path;
use formats::cyrus::imapd_conf::{ImapdConf, VirtDomains};
use formats::cyrus::mailboxes::SpoolHashing;
use formats::cyrus::MetaFile;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The roots of one partition.
#[derive(Debug, Clone)]
struct Roots {
    data: PathBuf,
    archive: Option<PathBuf>,
    header: PathBuf,
    index: PathBuf,
    annotations: PathBuf,
}

/// The directories of a Cyrus server, from its imapd.conf.
#[derive(Debug, Clone)]
pub(crate) struct SpoolPaths {
    /// `configdirectory`.
    pub config_dir: PathBuf,
    /// mailboxes.db.
    pub mailboxes_db: PathBuf,
    /// Where the name lock files live.
    pub lock_root: PathBuf,
    /// `sievedir`.
    pub sieve_dir: PathBuf,
    /// `hashimapspool` / `fulldirhash`.
    pub hashing: SpoolHashing,
    /// Whether user ids carry a domain.
    pub virtdomains: bool,
    partitions: HashMap<String, Roots>,
}

impl SpoolPaths {
    /// Reads the roots out of `conf`; refuses a config without configdirectory or partitions.
    pub(crate) fn new(conf: &ImapdConf) -> Result<SpoolPaths, SpoolError> {
        let config =
            |e: formats::cyrus::imapd_conf::ImapdConfError| SpoolError::Config(e.to_string());
        let config_dir = PathBuf::from(
            conf.configdirectory()
                .ok_or_else(|| SpoolError::Config("configdirectory is not set".into()))?,
        );
        let mailboxes_db = mailboxes_db_path(conf)?;
        let lock_root = locks::lock_root(conf)
            .ok_or_else(|| SpoolError::Config("configdirectory is not set".into()))?;
        // metapartition_files: which meta files go to `metapartition-<name>` (none by default).
        let on_meta: Vec<&str> = conf
            .get("metapartition_files")
            .map(|v| v.split_ascii_whitespace().collect())
            .unwrap_or_default();
        let mut partitions = HashMap::new();
        for (name, root) in conf.partitions() {
            let data = PathBuf::from(root);
            let meta = conf
                .get(&format!("metapartition-{name}"))
                .map(PathBuf::from);
            let meta_root = |key: &str, file: &str| -> PathBuf {
                if let Some(dir) = conf.get(&format!("metadir-{key}-{name}")) {
                    return PathBuf::from(dir);
                }
                match &meta {
                    Some(m) if on_meta.contains(&file) => m.clone(),
                    _ => data.clone(),
                }
            };
            let roots = Roots {
                header: meta_root("header", "header"),
                index: meta_root("index", "index"),
                // Cyrus looks cyrus.annotations up under the index's key.
                annotations: meta_root("index", "annotations"),
                archive: conf
                    .get(&format!("archivepartition-{name}"))
                    .map(PathBuf::from),
                data,
            };
            partitions.insert(name.to_owned(), roots);
        }
        if partitions.is_empty() {
            return Err(SpoolError::Config("no partition-<name> is set".into()));
        }
        Ok(SpoolPaths {
            config_dir,
            mailboxes_db,
            lock_root,
            sieve_dir: PathBuf::from(conf.sievedir()),
            hashing: conf.spool_hashing().map_err(config)?,
            virtdomains: conf.virtdomains().map_err(config)? != VirtDomains::Off,
            partitions,
        })
    }

    fn roots(&self, mailbox: &Mailbox) -> Result<(&Roots, String), SpoolError> {
        let rel = mailbox.spool_dir().ok_or_else(|| {
            SpoolError::Config(format!(
                "mailbox {} ({}) has no files on this server",
                mailbox.uniqueid, mailbox.folder
            ))
        })?;
        let roots = self.partitions.get(&*mailbox.partition).ok_or_else(|| {
            SpoolError::Config(format!(
                "partition {:?} of mailbox {} ({}) is not in imapd.conf",
                mailbox.partition, mailbox.uniqueid, mailbox.folder
            ))
        })?;
        Ok((roots, rel))
    }

    /// The directory holding the mailbox's message files.
    pub(crate) fn data_dir(&self, mailbox: &Mailbox) -> Result<PathBuf, SpoolError> {
        let (roots, rel) = self.roots(mailbox)?;
        Ok(roots.data.join(rel))
    }

    /// The directory holding its archived message files, if the partition has an archive
    /// partition.
    pub(crate) fn archive_dir(&self, mailbox: &Mailbox) -> Result<Option<PathBuf>, SpoolError> {
        let (roots, rel) = self.roots(mailbox)?;
        Ok(roots.archive.as_ref().map(|a| a.join(rel)))
    }

    /// The path of one meta file of the mailbox.
    pub(crate) fn meta_path(
        &self,
        mailbox: &Mailbox,
        file: MetaFile,
    ) -> Result<PathBuf, SpoolError> {
        let (roots, rel) = self.roots(mailbox)?;
        let root = match file {
            MetaFile::Header => &roots.header,
            MetaFile::Index => &roots.index,
            MetaFile::Annotations => &roots.annotations,
        };
        let mut path = root.join(rel);
        path.push(file.file_name());
        Ok(path)
    }
}

pub(crate) use formats::cyrus::mailboxes::dir_hash;

/// `<root>/uuid/<c1>/<c2>/<id>` (imap/mboxname.c `mboxname_id_hash`), for a unique id that
/// [`super::names::check_uniqueid`] accepted.
pub(crate) fn by_id(root: &Path, id: &str) -> PathBuf {
    let mut path = root.join("uuid");
    path.push(&id[..1]);
    path.push(&id[1..2]);
    path.push(id);
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_and_archive_partitions() {
        let conf = ImapdConf::parse(
            b"configdirectory: /c\npartition-default: /p1\npartition-p2: /p2\n\
              metapartition-p2: /m2\nmetapartition_files: header index\n\
              archivepartition-default: /a1\n",
        )
        .unwrap();
        let layout = SpoolPaths::new(&conf).unwrap();
        let m = |partition: &str| Mailbox {
            folder: "Work".into(),
            uniqueid: "abcdef".into(),
            partition: partition.into(),
            mbtype: Default::default(),
            deleted_at: None,
            legacy_dir: None,
            uidvalidity: 1,
            foldermodseq: 1,
        };
        let p = |p: PathBuf| p.to_string_lossy().into_owned();
        assert_eq!(
            p(layout.data_dir(&m("default")).unwrap()),
            "/p1/uuid/a/b/abcdef"
        );
        assert_eq!(
            p(layout.archive_dir(&m("default")).unwrap().unwrap()),
            "/a1/uuid/a/b/abcdef"
        );
        assert_eq!(layout.archive_dir(&m("p2")).unwrap(), None);
        assert_eq!(
            p(layout.meta_path(&m("p2"), MetaFile::Index).unwrap()),
            "/m2/uuid/a/b/abcdef/cyrus.index"
        );
        assert_eq!(
            p(layout.meta_path(&m("p2"), MetaFile::Annotations).unwrap()),
            "/p2/uuid/a/b/abcdef/cyrus.annotations"
        );
        let err = layout.data_dir(&m("nope")).unwrap_err().to_string();
        assert!(err.contains("\"nope\"") && err.contains("abcdef"), "{err}");
        assert_eq!(p(layout.lock_root.clone()), "/c/lock");
    }

    #[test]
    fn dir_hash_as_cyrus() {
        assert_eq!(dir_hash("Alice", false), 'a');
        assert_eq!(dir_hash("*U*alice", false), 'q');
        assert_eq!(dir_hash("1abc", false), 'q');
        // Full hashing stops at the first dot.
        assert_eq!(dir_hash("bob.x", true), dir_hash("bob", true));
        assert!(('A'..='W').contains(&dir_hash("bob", true)));
    }
}
