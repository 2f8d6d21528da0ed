//! LIST_USERS against a real Cyrus, with the daemon's user list cache (issue 16): a user
//! created between two requests is in the second answer; a request with mailboxes.db
//! unchanged reads nothing; requests that arrive while the list is being read share that
//! one read. Reads are counted by the spool's cache (`UserListCache::builds`), not timed.

use std::collections::BTreeSet;
use std::sync::Barrier;

use backupd::spool::locks::cyrus_style_lock;
use testkit::wait;
use tests::rig::Backupd;
use tests::CyrusInstance;

fn names(b: &Backupd) -> BTreeSet<String> {
    let mut c = b.connect();
    c.list_users()
        .expect("LIST_USERS")
        .into_iter()
        .map(|u| u.user)
        .collect()
}

fn set(users: &[&str]) -> BTreeSet<String> {
    users.iter().map(|u| u.to_string()).collect()
}

#[test]
fn list_users_cached_until_mailboxes_db_changes_and_read_once_for_a_burst() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.create_user("ann").expect("creating ann");
    let backupd = Backupd::start(&cyrus, "user-list-secret-0123456789");
    let builds = || backupd.user_list.builds();

    assert_eq!(names(&backupd), set(&["ann"]));
    assert_eq!(builds(), 1);
    // Unchanged file: served from the cache.
    assert_eq!(names(&backupd), set(&["ann"]));
    assert_eq!(
        builds(),
        1,
        "a repeat request with mailboxes.db unchanged reads nothing"
    );

    // A user created between two requests is in the second answer.
    cyrus.create_user("bob").expect("creating bob");
    assert_eq!(names(&backupd), set(&["ann", "bob"]));
    assert_eq!(builds(), 2);

    // A burst while the list is being read: hold mailboxes.db as a Cyrus writer does (a
    // classic fcntl write lock) so that the first read waits for it, let the other requests
    // arrive and wait for that read, then let go. One read serves them all, and it sees the
    // user created before the requests were sent.
    cyrus.create_user("cat").expect("creating cat");
    let db = cyrus.config_dir().join("mailboxes.db");
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .expect("opening mailboxes.db");
    cyrus_style_lock(&writer, nix::libc::F_WRLCK).expect("write lock on mailboxes.db");
    const CLIENTS: usize = 6;
    let connected = Barrier::new(CLIENTS + 1);
    std::thread::scope(|s| {
        let answers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                s.spawn(|| {
                    let mut c = backupd.connect();
                    connected.wait();
                    c.list_users().expect("LIST_USERS")
                })
            })
            .collect();
        connected.wait();
        wait::until(
            "the other requests waiting for the first one's read",
            || backupd.user_list.waiting() == CLIENTS - 1,
        );
        assert_eq!(builds(), 3, "one read under way, waiting for the lock");
        cyrus_style_lock(&writer, nix::libc::F_UNLCK).expect("unlock");
        for a in answers {
            let got: BTreeSet<String> = a.join().unwrap().into_iter().map(|u| u.user).collect();
            assert_eq!(got, set(&["ann", "bob", "cat"]));
        }
    });
    assert_eq!(builds(), 3, "{CLIENTS} concurrent requests, one read");
    backupd.shutdown();
}
