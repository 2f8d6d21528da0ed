//! imapd.conf of the Cyrus 3.6 fixture, read the way the mailbox list reader needs it.

use formats::cyrus::imapd_conf::{ImapdConf, VirtDomains};
use formats::cyrus::mailboxes::SpoolHashing;

#[test]
fn fixture_config() {
    let text = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/cyrus-3.6/imapd.conf"
    ))
    .unwrap();
    let c = ImapdConf::parse(&text).unwrap();
    assert_eq!(c.configdirectory(), Some("@ROOT@/conf"));
    assert_eq!(
        c.mailboxes_db().as_deref(),
        Some("@ROOT@/conf/mailboxes.db")
    );
    assert_eq!(c.defaultpartition().as_deref(), Some("default"));
    let parts: Vec<_> = c.partitions().collect();
    assert_eq!(
        parts,
        [("default", "@ROOT@/spool/p1"), ("p2", "@ROOT@/spool/p2")]
    );
    assert_eq!(c.partition("p2"), Some("@ROOT@/spool/p2"));
    assert_eq!(c.sievedir(), "@ROOT@/sieve");
    assert_eq!(c.virtdomains(), Ok(VirtDomains::Off));
    assert_eq!(c.unixhierarchysep(), Ok(true));
    assert_eq!(c.get("SASL_MECH_LIST"), Some("PLAIN LOGIN"));
    assert_eq!(c.spool_hashing(), Ok(SpoolHashing::default()));
    assert_eq!(c.deletedprefix(), "DELETED");
}
