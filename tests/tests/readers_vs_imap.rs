//! The readers against a live Cyrus: a private Cyrus 3.6 is started and populated, then
//! everything `formats` and `backupd::spool` read from its files is compared with what the
//! IMAP server itself says (imap_truth.py) and with Cyrus's own dump of its mailbox list
//! (`ctl_mboxlist -d`). The same comparisons run over the captured fixture
//! (tests/fixtures/cyrus-3.6, made by tests/cyrus/make_fixture.sh).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use backupd::spool;
use tests::readers::check_folder;
use tests::truth::split_key;
use tests::{CyrusInstance, Truth};

/// Checks every folder of `truth` against the spool that `conf_path` describes; the mailbox
/// list comes from mailboxes.db through `backupd::spool`, as the daemon will read it.
/// Returns (folders, live records, expunged records) checked.
fn check_spool(
    conf_path: &Path,
    partitions: &BTreeMap<String, PathBuf>,
    truth: &Truth,
) -> (usize, usize, usize) {
    let conf = spool::load_imapd_conf(conf_path).expect("imapd.conf");
    let list = spool::read_mailbox_list(&conf).expect("mailbox list");
    let mut problems = Vec::new();
    let (mut folders, mut live, mut expunged) = (0, 0, 0);
    for (key, folder_truth) in &truth.folders {
        let (user, folder) = split_key(key);
        let Some(mailboxes) = list.users.get(user) else {
            problems.push(format!("{key}: user {user} is not in the mailbox list"));
            continue;
        };
        let Some(mailbox) = mailboxes
            .iter()
            .find(|m| &*m.folder == folder && m.deleted_at.is_none())
        else {
            problems.push(format!(
                "{key}: not in the mailbox list (it has: {:?})",
                mailboxes.iter().map(|m| &m.folder).collect::<Vec<_>>()
            ));
            continue;
        };
        if let Some(id) = &folder_truth.uniqueid {
            if &*mailbox.uniqueid != id {
                problems.push(format!(
                    "{key}: mailboxes.db says unique id {}, IMAP {id}",
                    mailbox.uniqueid
                ));
            }
        }
        if let Some(p) = &folder_truth.partition {
            if &*mailbox.partition != p {
                problems.push(format!(
                    "{key}: mailboxes.db says partition {}, IMAP {p}",
                    mailbox.partition
                ));
            }
        }
        let root = &partitions[&*mailbox.partition];
        let dir = root.join(mailbox.spool_dir().expect("a live mailbox has a directory"));
        match check_folder(key, &dir, folder_truth) {
            Ok(counts) => {
                folders += 1;
                live += counts.live;
                expunged += counts.expunged;
            }
            Err(found) => problems.extend(found),
        }
    }
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
    (folders, live, expunged)
}

/// Checks that the mailbox list `backupd::spool` reads from mailboxes.db holds every mailbox
/// with files that Cyrus's own `ctl_mboxlist -d` printed, with the same unique id and
/// partition, and nothing else. Returns how many there are.
fn check_list_against_dump(conf_path: &Path, dump: &serde_json::Value) -> usize {
    let conf = spool::load_imapd_conf(conf_path).unwrap();
    let list = spool::read_mailbox_list(&conf).unwrap();
    let theirs: BTreeMap<String, String> = dump
        .as_object()
        .unwrap()
        .values()
        .filter_map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            let (id, part, mbtype) = (field("uniqueid"), field("partition"), field("mbtype"));
            // Tombstones ('d', left by a rename or delete) have no files.
            let has_files = !id.is_empty() && !part.is_empty() && !mbtype.contains('d');
            has_files.then_some((id, part))
        })
        .collect();
    let ours: BTreeMap<String, String> = list
        .users
        .values()
        .flatten()
        .chain(&list.shared)
        .filter(|m| !m.uniqueid.is_empty() && m.mbtype.has_spool_dir())
        .map(|m| (m.uniqueid.to_string(), m.partition.to_string()))
        .collect();
    assert_eq!(ours, theirs, "mailbox list differs from ctl_mboxlist -d");
    ours.len()
}

/// The repository's capture of a real Cyrus 3.6 spool (tests/cyrus/make_fixture.sh).
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/cyrus-3.6");

#[test]
fn fixture_spool_reads_as_its_imap_server_said() {
    let fixture = Path::new(FIXTURE);
    // The fixture's imapd.conf names its root as @ROOT@: write a copy that points here.
    let tmp = tempfile::tempdir().unwrap();
    let conf = std::fs::read_to_string(fixture.join("imapd.conf"))
        .unwrap()
        .replace("@ROOT@", fixture.canonicalize().unwrap().to_str().unwrap());
    let conf_path = tmp.path().join("imapd.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let partitions = BTreeMap::from([
        ("default".to_string(), fixture.join("spool/p1")),
        ("p2".to_string(), fixture.join("spool/p2")),
    ]);
    let truth = Truth::load(&fixture.join("truth.json")).unwrap();
    // Captured with imap_truth.py: unique ids and partitions are checked too.
    assert!(truth
        .folders
        .values()
        .all(|f| f.uniqueid.is_some() && f.partition.is_some()));
    let (folders, live, expunged) = check_spool(&conf_path, &partitions, &truth);
    assert_eq!((folders, live, expunged), (5, 20, 3));
    let dump: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("mboxlist.json")).unwrap()).unwrap();
    assert_eq!(check_list_against_dump(&conf_path, &dump), 5);
}

#[test]
fn live_cyrus_reads_as_imap_says() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let truth = cyrus.truth().expect("imap_truth.py");
    let partitions: BTreeMap<String, PathBuf> = cyrus.partitions().into_iter().collect();
    let (folders, live, expunged) = check_spool(&cyrus.imapd_conf(), &partitions, &truth);
    assert_eq!(folders, truth.folders.len());
    assert!(live > 50, "only {live} live records checked");
    assert!(
        expunged > 0,
        "populate.py expunges, yet no expunged record was seen"
    );

    // Every mailbox Cyrus's own tool lists is in ours, with the same unique id and partition,
    // and ours holds nothing it does not.
    let dump = cyrus.mboxlist().expect("ctl_mboxlist -d");
    let mailboxes = check_list_against_dump(&cyrus.imapd_conf(), &dump);
    assert!(
        mailboxes > truth.folders.len(),
        "hidden #sieve and delayed-deleted mailboxes too"
    );
}
