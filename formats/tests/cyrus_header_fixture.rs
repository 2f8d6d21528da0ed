//! The cyrus.header reader against the real Cyrus 3.6 spool of the repository's fixture
//! (tests/fixtures/cyrus-3.6), checked against the mailbox list Cyrus printed (mboxlist.json),
//! and against the tab-separated form Cyrus 3.0-3.4 write.

use formats::cyrus::header::{self, AclEntry, HeaderFormat, MailboxHeader, MAGIC};
use serde_json::Value;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/cyrus-3.6");
/// The fixture's only user.
const USER: &str = "fx0";

fn mboxlist() -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURE}/mboxlist.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn header_bytes(uniqueid: &str) -> Vec<u8> {
    ["p1", "p2"]
        .iter()
        .find_map(|p| {
            std::fs::read(format!(
                "{FIXTURE}/spool/{p}/uuid/{}/{}/{uniqueid}/cyrus.header",
                &uniqueid[..1],
                &uniqueid[1..2]
            ))
            .ok()
        })
        .expect("cyrus.header of the mailbox")
}

#[test]
fn fixture_headers_match_the_mailbox_list() {
    let list = mboxlist();
    let list = list.as_object().unwrap();
    assert_eq!(list.len(), 5);
    for (name, entry) in list {
        let uniqueid = entry["uniqueid"].as_str().unwrap();
        let bytes = header_bytes(uniqueid);
        let h = header::parse(&bytes).unwrap();
        assert_eq!(h.format, HeaderFormat::Dlist, "{name}");
        assert_eq!(h.name.as_deref(), Some(name.as_str()));
        assert_eq!(h.unique_id.as_deref(), Some(uniqueid), "{name}");
        assert_eq!(h.mbtype.as_deref(), entry["mbtype"].as_str(), "{name}");
        assert_eq!(h.quota_root, None, "{name}");
        let mut acl: Vec<(String, String)> = h
            .acl
            .iter()
            .map(|e| (e.identifier.clone(), e.rights.clone()))
            .collect();
        acl.sort();
        let mut want: Vec<(String, String)> = entry["acl"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        want.sort();
        assert_eq!(acl, want, "{name}");
        // Folders that received the keyword know it; the Archive ones never did.
        let want_flags = if name.contains("Archive") {
            vec![]
        } else {
            vec![Some("$Work".to_string())]
        };
        assert_eq!(h.user_flags, want_flags, "{name}");
        assert!(h.other.is_empty(), "{name}");
        // Writing it back gives the file Cyrus wrote, byte for byte.
        assert_eq!(h.to_bytes(), bytes, "{name}");
    }
}

#[test]
fn inbox_header_in_detail() {
    let inbox = format!("user.{USER}");
    let uniqueid = mboxlist()[&inbox]["uniqueid"].as_str().unwrap().to_string();
    let h = header::parse(&header_bytes(&uniqueid)).unwrap();
    assert_eq!(
        h,
        MailboxHeader {
            format: HeaderFormat::Dlist,
            mbtype: Some("e".into()),
            name: Some(inbox),
            unique_id: Some(uniqueid),
            acl: vec![AclEntry {
                identifier: USER.into(),
                rights: "lrswipkxtecdan".into()
            }],
            user_flags: vec![Some("$Work".into())],
            ..Default::default()
        }
    );
}

/// As Cyrus 3.0-3.4 write it: quota root TAB unique id; each flag name followed by a space;
/// each ACL identifier and rights followed by a tab.
#[test]
fn tab_form_as_cyrus_3_0_writes_it() {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(
        b"user.alice\tf1a2b3c4d5e6f708\n$Work Junk $Label1 \nalice\tlrswipkxtecda\tanyone\tp\t\n",
    );
    let h = header::parse(&bytes).unwrap();
    assert_eq!(h.format, HeaderFormat::Tabs);
    assert_eq!(h.quota_root.as_deref(), Some("user.alice"));
    assert_eq!(h.unique_id.as_deref(), Some("f1a2b3c4d5e6f708"));
    assert_eq!(
        h.user_flags,
        vec![
            Some("$Work".to_string()),
            Some("Junk".to_string()),
            Some("$Label1".to_string())
        ]
    );
    assert_eq!(h.acl.len(), 2);
    assert_eq!(h.acl[1].identifier, "anyone");
    assert_eq!(h.acl[1].rights, "p");
    assert_eq!(h.name, None);
    assert_eq!(h.to_bytes(), bytes);
}

#[test]
fn tab_form_without_quota_root_or_flags() {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(b"\tabc\n\nbob\tlr\t\n");
    let h = header::parse(&bytes).unwrap();
    assert_eq!(h.quota_root, None);
    assert_eq!(h.unique_id.as_deref(), Some("abc"));
    assert!(h.user_flags.is_empty());
    assert_eq!(h.acl.len(), 1);
    assert_eq!(h.to_bytes(), bytes);
}
