//! Distinct target names for folders whose safe names collide.
//!
//! A file target names a folder by its levels made safe ([`folder_levels`]), and two
//! folders can come out the same: `INBOX/Work` and `Work` (the alternate namespace shows
//! INBOX's subfolders at the top), `inbox` and `INBOX`. Restored as they are, they would
//! merge into one Maildir folder (or fail half-way on an mbox or .eml name taken). Instead,
//! of the folders sharing a name, the first by store name keeps it and each other one gets
//! `~` and 8 hex digits of the SHA-1 of its unique id and store name added to its last
//! level: stable (the
//! same folder gets the same name in every restore of the same selection), never a name
//! [`safe_component`](super::safe_component) makes (it escapes `~`), and said in a
//! [`Note::Renamed`].

use std::collections::{BTreeMap, HashMap};

use formats::Guid;

use super::{folder_levels, Note, SafeFolder};

/// The safe names of `folders` (unique id, store name), distinct; a note for each folder
/// renamed.
pub fn distinct_names(
    user: &str,
    folders: &[(&str, &str)],
) -> (HashMap<String, SafeFolder>, Vec<Note>) {
    let mut by_flat: BTreeMap<String, Vec<(&str, &str)>> = BTreeMap::new();
    for &(id, name) in folders {
        by_flat
            .entry(folder_levels(user, name).flat())
            .or_default()
            .push((id, name));
    }
    let mut out = HashMap::new();
    let mut notes = Vec::new();
    for (flat, mut group) in by_flat {
        group.sort_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)));
        let (first_id, first_name) = group[0];
        out.insert(first_id.to_owned(), folder_levels(user, first_name));
        for &(id, name) in &group[1..] {
            let mut safe = folder_levels(user, name);
            let tag = format!(
                "~{}",
                &Guid::of(format!("{id}\0{name}").as_bytes()).to_hex()[..8]
            );
            match safe.levels.last_mut() {
                Some(last) => last.push_str(&tag),
                None => safe.levels.push(format!("INBOX{tag}")),
            }
            notes.push(Note::Renamed {
                folder: name.to_owned(),
                other: first_name.to_owned(),
                shared: flat.clone(),
                now: safe.flat(),
            });
            out.insert(id.to_owned(), safe);
        }
    }
    (out, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colliding_names_get_distinct_stable_names() {
        let folders = [
            ("u1", "Work"),
            ("u2", "INBOX/Work"),
            ("u3", "Other"),
            ("u4", "inbox"),
            ("u5", "INBOX"),
        ];
        let (names, notes) = distinct_names("amy", &folders);
        assert_eq!(names["u2"].flat(), "Work");
        assert_eq!(names["u3"].flat(), "Other");
        assert_eq!(names["u5"].flat(), "INBOX");
        let work = names["u1"].flat();
        assert!(work.starts_with("Work~") && work.len() == 13, "{work}");
        let inbox = names["u4"].flat();
        assert!(inbox.starts_with("INBOX~"), "{inbox}");
        assert_eq!(notes.len(), 2);
        assert_eq!(
            notes[1].to_string(),
            format!("folder \"Work\" has the same target name as folder \"INBOX/Work\" (Work): restored as {work}")
        );
        // Stable: the same in another order.
        let mut rev = folders;
        rev.reverse();
        let (again, _) = distinct_names("amy", &rev);
        assert_eq!(again, names);
    }
}
