//! backupd's meta copies while Cyrus changes the same folders (issue "backupd", "Done when":
//! consistency under load). tests/cyrus/backupd_load.py delivers over LMTP, sets and clears
//! flags and expunges over IMAP, and runs `cyr_expire -X 0` (which unlinks expunged messages
//! and rewrites cyrus.index) in one user's INBOX and Work, while this test takes meta copies
//! of those folders: a burst back to back, then paced ones, until at least 200 of each and
//! until the load has done all it must (deliveries, new keywords, expunges, cyr_expire runs,
//! messages gone between a copy and the read of its messages), however slow or fast the
//! machine is. Each copy must parse, and every record in it must be either a message whose
//! SHA-1 is its GUID or reported gone. Cyrus must keep delivering throughout (the UIDs the
//! copies see keep growing; a Cyrus held up for good by the copies' locks leaves the test
//! stuck, and it fails saying so), and the load generator must meet no error. Needs Cyrus and
//! root.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use backupd::spool::Spool;
use formats::cyrus::header;
use formats::cyrus::index::Index;
use formats::Guid;
use testkit::wait;
use tests::cyrus::{scripts_dir, HOST};
use tests::CyrusInstance;

const USER: &str = "load0";
/// Copies in the burst, and paced ones after it: at least this many of each.
const COPIES: usize = 200;
/// Between two of the paced copies, so that they spread over several seconds of load.
const PAUSE: Duration = Duration::from_millis(25);
/// The burst lasts at least this long as well: without Cyrus's locks, such a burst catches a
/// cyrus.header and a cyrus.index of different moments within a few hundred copies (seen
/// while writing this test, by taking the locks out); with them, never.
const BURST: Duration = Duration::from_secs(3);
/// What the load must have done while the copies ran: deliveries (and as many new UIDs in
/// INBOX's copies, at least), new keywords, expunges, cyr_expire runs.
const DELIVERIES: u64 = 100;
const INBOX_GROWTH: u32 = 50;
const KEYWORDS: u64 = 10;
const VERIFIED: usize = 100;

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

/// `key=value` from one of backupd_load.py's lines (0 when absent).
fn count(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The generator's output as it comes: its last line, and whether it has ended.
#[derive(Debug, Default)]
struct Progress {
    last: String,
    ended: bool,
}

impl Progress {
    /// The load has done all the test needs.
    fn enough(&self) -> bool {
        count(&self.last, "deliveries") > DELIVERIES
            && count(&self.last, "keywords") > KEYWORDS
            && count(&self.last, "expunges") > 0
            && count(&self.last, "expires") > 0
    }
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

/// Takes the copies and checks every record, until enough are taken and the load has done
/// what it must (`progress`); runs in its own thread under a deadline.
fn copy_loop(
    spool: &Spool,
    folders: &[(String, String)],
    progress: &Mutex<Progress>,
) -> Result<Tally, String> {
    let mut tally = Tally::default();
    // (folder, UID, flags that matter) already queued: each message is read once, and once
    // more when Cyrus has flagged it expunged or unlinked.
    let mut seen: HashSet<(usize, u32, bool, bool)> = HashSet::new();
    let mut pending: VecDeque<(usize, usize, u32, Option<Guid>)> = VecDeque::new();
    let burst_end = Instant::now() + BURST;
    let mut i = 0;
    loop {
        if tally.paced >= COPIES {
            let p = progress.lock().unwrap();
            let grown = tally.inbox_uids.last().map(|l| l.1)
                >= tally.inbox_uids.first().map(|f| f.1 + INBOX_GROWTH);
            if p.enough() && grown && tally.verified > VERIFIED && tally.gone > 0 {
                break;
            }
            if p.ended {
                return Err(format!(
                    "the load generator ended before the copies were done: {}",
                    p.last
                ));
            }
        }
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

    // The generator runs until the stop file (its time and delivery limits are far off).
    let stop_file = cyrus.dir().join("load.stop");
    let mut child = load_cmd(&cyrus)
        .args([
            "--seconds",
            "3600",
            "--max-deliveries",
            "1000000",
            "--stop-file",
        ])
        .arg(&stop_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let progress = Arc::new(Mutex::new(Progress::default()));
    let reader = {
        let out = BufReader::new(child.stdout.take().unwrap());
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || {
            let mut all = String::new();
            for line in out.lines() {
                let Ok(line) = line else { break };
                all.push_str(&line);
                all.push('\n');
                progress.lock().unwrap().last = line;
            }
            progress.lock().unwrap().ended = true;
            all
        })
    };
    let mut generator = Generator(Some(child));

    // Let the load get going: wait for deliveries to show in INBOX.
    let inbox_id = folders[0].1.clone();
    let uid_now = |spool: &Spool| {
        let copy = spool.copy_meta(USER, &inbox_id).unwrap();
        Index::parse(&copy.index.0).unwrap().header().last_uid
    };
    let start_uid = uid_now(&spool);
    wait::until("deliveries to show in INBOX", || {
        uid_now(&spool) >= start_uid + 20
    });

    let (tx, rx) = mpsc::channel();
    let worker = {
        let spool = spool.clone();
        let folders = folders.clone();
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || {
            let _ = tx.send(copy_loop(&spool, &folders, &progress));
        })
    };
    let started = Instant::now();
    let result = rx.recv_timeout(wait::STUCK);
    let copy_time = started.elapsed();
    std::fs::write(&stop_file, b"").unwrap();
    let tally = match result {
        Ok(Ok(tally)) => tally,
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!(
            "stuck: copies not done in {:?} (deadlock, or Cyrus held up for good); the load \
             so far: {}; log:\n{}",
            wait::STUCK,
            progress.lock().unwrap().last,
            cyrus.log_tail(20)
        ),
    };
    worker.join().unwrap();

    // The generator stops at the stop file; it must have met no error.
    let mut child = generator.0.take().unwrap();
    let status = wait::exit(&mut child, "backupd_load.py after its stop file");
    let stdout = reader.join().unwrap();
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("load:"))
        .unwrap_or_default();
    assert!(
        status.success() && summary.contains("errors=0"),
        "backupd_load.py: {status}\n{stdout}{stderr}"
    );
    let count = |key: &str| count(summary, key);

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
    assert!(tally.paced >= COPIES);
    assert!(
        tally.burst >= COPIES,
        "only {} copies in the burst",
        tally.burst
    );
    assert!(
        last >= first + INBOX_GROWTH,
        "INBOX grew from UID {first} to {last} only"
    );
    assert!(
        count("deliveries") > DELIVERIES
            && count("keywords") > KEYWORDS
            && count("expunges") > 0
            && count("expires") > 0,
        "{summary}"
    );
    assert!(tally.verified > VERIFIED);
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
