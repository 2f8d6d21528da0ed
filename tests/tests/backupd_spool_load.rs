//! backupd's meta copies while Cyrus changes the same folders (issue "backupd", "Done when":
//! consistency under load). tests/cyrus/backupd_load.py delivers over LMTP, sets and clears
//! flags and expunges over IMAP, and runs `cyr_expire -X 0` (which unlinks expunged messages
//! and rewrites cyrus.index) in one user's INBOX and Work, while this test takes 200 meta
//! copies of those folders. Each copy must parse, and every record in it must be either a
//! message whose SHA-1 is its GUID or reported gone. Cyrus must keep delivering throughout
//! (the UIDs the copies see keep growing, with no long stall), the load generator must meet no
//! error, and the whole must end in bounded time (no deadlock). Needs Cyrus and root.

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use backupd::spool::Spool;
use formats::cyrus::header;
use formats::cyrus::index::Index;
use formats::Guid;
use tests::cyrus::{scripts_dir, HOST};
use tests::CyrusInstance;

const USER: &str = "load0";
const COPIES: usize = 200;
/// Between two of those copies, so that they spread over several seconds of load.
const PAUSE: Duration = Duration::from_millis(25);
/// Before them, copies back to back for this long (and at least COPIES of them, however slow
/// a shared machine is that day): without Cyrus's locks, such a burst
/// catches a cyrus.header and a cyrus.index of different moments within a few hundred copies
/// (seen while writing this test, by taking the locks out); with them, never.
const BURST: Duration = Duration::from_secs(3);
/// The copies must be done by then, or something is stuck.
const COPY_DEADLINE: Duration = Duration::from_secs(120);

/// Kills the load generator if the test fails before it stopped.
struct Generator(Option<Child>);

impl Drop for Generator {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn load_cmd(cyrus: &CyrusInstance) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(scripts_dir().join("backupd_load.py"))
        .arg(HOST)
        .arg(cyrus.imap_port().to_string())
        .arg(cyrus.lmtp_port().to_string())
        .args(["--user", USER, "--conf"])
        .arg(cyrus.imapd_conf());
    cmd
}

#[derive(Debug, Default)]
struct Tally {
    /// Copies taken back to back.
    burst: usize,
    /// Copies taken with a pause after each.
    paced: usize,
    records: usize,
    verified: usize,
    gone: usize,
    /// (when, last UID of INBOX) for every INBOX copy.
    inbox_uids: Vec<(Instant, u32)>,
}

/// Copies after which a record is checked: the messages of a copy are read a little later,
/// as a backup streams them after the copy, so that some are gone by then.
const LAG: usize = 10;

/// Reads one message and checks it against its record's GUID.
fn check_message(
    spool: &Spool,
    tally: &mut Tally,
    (name, id): &(String, String),
    uid: u32,
    guid: Option<Guid>,
) -> Result<(), String> {
    match spool
        .open_message(USER, id, uid)
        .map_err(|e| format!("{name} uid {uid}: {e}"))?
    {
        Some((mut file, _)) => {
            let mut data = Vec::new();
            file.read_to_end(&mut data).map_err(|e| e.to_string())?;
            if Some(Guid::of(&data)) != guid {
                return Err(format!(
                    "{name} uid {uid} has SHA-1 {}, its record says {guid:?}",
                    Guid::of(&data)
                ));
            }
            tally.verified += 1;
        }
        None => tally.gone += 1,
    }
    Ok(())
}

/// Takes the copies and checks every record; runs in its own thread under a deadline.
fn copy_loop(spool: &Spool, folders: &[(String, String)]) -> Result<Tally, String> {
    let mut tally = Tally::default();
    // (folder, UID, flags that matter) already queued: each message is read once, and once
    // more when Cyrus has flagged it expunged or unlinked.
    let mut seen: HashSet<(usize, u32, bool, bool)> = HashSet::new();
    let mut pending: VecDeque<(usize, usize, u32, Option<Guid>)> = VecDeque::new();
    let burst_end = Instant::now() + BURST;
    let mut i = 0;
    while tally.paced < COPIES {
        // A count as well as a time: the burst's size must not depend on the machine's speed.
        let paced = Instant::now() >= burst_end && tally.burst >= COPIES;
        let f = i % folders.len();
        let name = &folders[f].0;
        let copy = spool
            .copy_meta(USER, &folders[f].1)
            .map_err(|e| format!("copy {i} of {name}: {e}"))?;
        let idx = Index::parse(&copy.index.0).map_err(|e| format!("copy {i} of {name}: {e}"))?;
        if name == "INBOX" {
            tally
                .inbox_uids
                .push((Instant::now(), idx.header().last_uid));
        }
        // Header and index are of one moment: the index names the header it was written
        // with, and every keyword bit of a record has its name in that header.
        let hdr = header::parse(&copy.header.0).map_err(|e| format!("copy {i}: {e}"))?;
        let crc = header::file_crc(&copy.header.0);
        if idx
            .header()
            .header_file_crc
            .is_some_and(|c| c != 0 && c != crc)
        {
            return Err(format!(
                "copy {i} of {name}: cyrus.header has CRC {crc:08x}, cyrus.index was written \
                 with {:08x?}",
                idx.header().header_file_crc
            ));
        }
        for rec in idx.records() {
            let rec = rec.map_err(|e| format!("copy {i} of {name}: {e}"))?;
            tally.records += 1;
            if let Some(bit) = rec
                .user_flags
                .bits()
                .find(|&b| !matches!(hdr.user_flags.get(b), Some(Some(_))))
            {
                return Err(format!(
                    "copy {i} of {name}: uid {} has keyword bit {bit}, which cyrus.header \
                     does not name",
                    rec.uid
                ));
            }
            if seen.insert((f, rec.uid, rec.is_expunged(), rec.is_unlinked())) {
                pending.push_back((i, f, rec.uid, rec.guid));
            }
        }
        while pending.front().is_some_and(|p| p.0 + LAG <= i) {
            let (_, f, uid, guid) = pending.pop_front().unwrap();
            check_message(spool, &mut tally, &folders[f], uid, guid)?;
        }
        if paced {
            tally.paced += 1;
            std::thread::sleep(PAUSE);
        } else {
            tally.burst += 1;
        }
        i += 1;
    }
    for (_, f, uid, guid) in pending {
        check_message(spool, &mut tally, &folders[f], uid, guid)?;
    }
    Ok(tally)
}

#[test]
fn meta_copies_stay_consistent_under_load() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    let setup = load_cmd(&cyrus).arg("--setup").output().unwrap();
    assert!(
        setup.status.success(),
        "backupd_load.py --setup: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let spool = Arc::new(Spool::open(&cyrus.imapd_conf()).unwrap());
    let folders: Vec<(String, String)> = spool
        .folders(USER)
        .unwrap()
        .folders
        .into_iter()
        .map(|f| (f.name, f.uniqueid))
        .collect();
    assert_eq!(folders.len(), 2, "{folders:?}");

    let stop_file = cyrus.dir().join("load.stop");
    let child = load_cmd(&cyrus)
        .args([
            "--seconds",
            "90",
            "--max-deliveries",
            "40000",
            "--stop-file",
        ])
        .arg(&stop_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut generator = Generator(Some(child));

    // Let the load get going: wait for deliveries to show in INBOX.
    let inbox_id = folders[0].1.clone();
    let uid_now = |spool: &Spool| {
        let copy = spool.copy_meta(USER, &inbox_id).unwrap();
        Index::parse(&copy.index.0).unwrap().header().last_uid
    };
    let start_uid = uid_now(&spool);
    let t0 = Instant::now();
    while uid_now(&spool) < start_uid + 20 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no deliveries in 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let (tx, rx) = mpsc::channel();
    let worker = {
        let spool = spool.clone();
        let folders = folders.clone();
        std::thread::spawn(move || {
            let _ = tx.send(copy_loop(&spool, &folders));
        })
    };
    let started = Instant::now();
    let result = rx.recv_timeout(COPY_DEADLINE);
    let copy_time = started.elapsed();
    std::fs::write(&stop_file, b"").unwrap();
    let tally = match result {
        Ok(Ok(tally)) => tally,
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!(
            "copies not done in {COPY_DEADLINE:?}: deadlock or stall; log:\n{}",
            cyrus.log_tail(20)
        ),
    };
    worker.join().unwrap();

    // The generator stops at the stop file; it must have met no error.
    let out = generator.0.take().unwrap().wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("load:"))
        .unwrap_or_default();
    assert!(
        out.status.success() && summary.contains("errors=0"),
        "backupd_load.py: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |key: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };

    // Cyrus kept delivering while the copies ran: INBOX's last UID grew across them, with no
    // long stall between two increases.
    let uids = &tally.inbox_uids;
    let (first, last) = (uids[0].1, uids[uids.len() - 1].1);
    let mut longest = Duration::ZERO;
    let mut since = uids[0].0;
    for w in uids.windows(2) {
        if w[1].1 > w[0].1 {
            longest = longest.max(w[1].0 - since);
            since = w[1].0;
        }
    }
    longest = longest.max(uids[uids.len() - 1].0 - since);
    eprintln!(
        "{} copies in {copy_time:?}: {} records, {} messages verified, {} gone; INBOX UIDs \
         {first}..{last}, longest wait for a delivery {longest:?}; generator: {summary}",
        tally.burst + tally.paced,
        tally.records,
        tally.verified,
        tally.gone
    );
    assert_eq!(tally.paced, COPIES);
    assert!(
        tally.burst >= COPIES,
        "only {} copies in the burst",
        tally.burst
    );
    assert!(
        last >= first + 50,
        "INBOX grew from UID {first} to {last} only"
    );
    assert!(
        longest < Duration::from_secs(5),
        "no delivery for {longest:?}"
    );
    assert!(
        count("deliveries") > 100
            && count("keywords") > 10
            && count("expunges") > 0
            && count("expires") > 0,
        "{summary}"
    );
    assert!(tally.verified > 100);
    // Messages are read LAG copies after the copy that listed them, so some have been
    // expunged and removed by cyr_expire meanwhile: the "gone" answer is exercised too.
    assert!(tally.gone > 0, "no message was gone");

    // Nothing went wrong on Cyrus's side that it printed (its syslog lines are not kept).
    let log = std::fs::read_to_string(cyrus.log_path()).unwrap_or_default();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| {
            ["IOERROR", "DBERROR", "fatal", "locking"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    assert!(bad.is_empty(), "Cyrus printed:\n{}", bad.join("\n"));

    // Quiet again: a last copy of each folder agrees with IMAP.
    let truth = cyrus.truth_for(&[USER]).unwrap();
    for (name, id) in &folders {
        let copy = spool.copy_meta(USER, id).unwrap();
        let idx = Index::parse(&copy.index.0).unwrap();
        let live: Vec<u32> = idx
            .records()
            .map(|r| r.unwrap())
            .filter(|r| !r.is_expunged())
            .map(|r| r.uid)
            .collect();
        let imap: Vec<u32> = truth
            .folder(USER, name)
            .unwrap()
            .messages
            .iter()
            .map(|m| m.uid)
            .collect();
        assert_eq!(live, imap, "{name}");
    }
}
