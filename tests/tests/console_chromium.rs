//! `backup-server console` driven by a real headless Chromium (Debian's `chromium` through
//! `chromium-driver`, WebDriver via fantoccini), against a real Cyrus and backupd: a wrong
//! password is refused and a right one signs in; a user's backup is searched (by subject)
//! and browsed (users, the timeline, a folder, a message); an HTML message with a script and a remote image shows
//! without running the one or fetching the other (a local listener that counts requests for
//! the image gets none; the script's change to the title and the page is not there); a POST
//! without the session's CSRF token is refused; a message downloaded as .eml is the stored
//! message byte for byte; a message restored from its page into Cyrus (cyrus://, the
//! folder deleted meanwhile) is there again over IMAP, byte-identical; and the audit log
//! names who did each.
//!
//! With `MAILBACKUP_CONSOLE_SCREENSHOTS=DIR` the main pages are saved there as PNG
//! (docs/console/ holds the ones docs/console.md shows).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fantoccini::{Client, ClientBuilder, Locator};
use sha1::{Digest, Sha1};
use tests::rig::{backup_server_bin, text, write_config, Backupd};
use tests::CyrusInstance;

const USER: &str = "sam";
const FOLDER: &str = "Invoices";
const PASSWORD: &str = "correct horse battery staple";

/// A plain message: the one restored and downloaded.
const PLAIN: &str = "From: Bob Builder <bob@example.com>\r\nTo: sam@example.com\r\n\
Subject: Invoice 2026-11 from Bob\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\n\
Message-ID: <invoice-2026-11@example.com>\r\n\r\nHello Sam,\r\n\r\nthe invoice is attached.\r\n";

/// An HTML message with a script and a remote image (`PIXEL` is replaced by the
/// listener's address).
const HTML: &str = "From: Shop <shop@example.com>\r\nTo: sam@example.com\r\n\
Subject: Your order\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\n\
Message-ID: <order@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
<html><body><p>Hello from the <b>HTML message</b>.</p>\r\n\
<script>document.title='pwned';document.body.insertAdjacentHTML('beforeend','<p id=\"pwned\">ran</p>')</script>\r\n\
<img src=\"http://PIXEL/pixel.png\" width=1 height=1>\r\n\
<img src=\"x\" onerror=\"document.title='pwned'\">\r\n\
<p style=\"background:url(http://PIXEL/bg.png)\">styled</p></body></html>\r\n";

/// A listener that counts the connections made to it (the remote image's server).
fn pixel_server() -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&hits);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            let mut s = s;
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (addr, hits)
}

/// A free TCP port on loopback (for chromedriver, which takes a port number).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills a child process when dropped (the test's own children only).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request without a browser: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, cookie: &str, body: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&resp[..head_end]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    (status, resp[head_end + 4..].to_vec())
}

fn screenshot_dir() -> Option<PathBuf> {
    std::env::var_os("MAILBACKUP_CONSOLE_SCREENSHOTS").map(PathBuf::from)
}

async fn shot(c: &Client, name: &str) {
    if let Some(dir) = screenshot_dir() {
        let png = c.screenshot().await.unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

/// The text of the first element matching `css`.
async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Fills and submits the sign-in form.
async fn sign_in(c: &Client, base: &str, name: &str, password: &str) {
    c.goto(&format!("{base}signin")).await.unwrap();
    c.find(Locator::Id("name"))
        .await
        .unwrap()
        .send_keys(name)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    c.find(Locator::Id("signin"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

fn sha1_hex(b: &[u8]) -> String {
    hex::encode(Sha1::digest(b))
}

#[test]
fn console_signs_in_browses_shows_html_safely_refuses_csrf_and_restores_into_cyrus() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    let work = tempfile::tempdir().unwrap();
    let (pixel, hits) = pixel_server();
    cyrus.create_user(USER).unwrap();
    let plain_uid = cyrus.append(USER, FOLDER, PLAIN.as_bytes()).unwrap();
    let html = HTML.replace("PIXEL", &pixel.to_string());
    cyrus.append(USER, FOLDER, html.as_bytes()).unwrap();

    // The backup host: its state db learns the user, the nightly job backs it up.
    let secret = "console-test-secret-0123";
    let backupd = Backupd::start(&cyrus, secret);
    let config = write_config(work.path(), backupd.addr(), secret, 1, 10);
    let bin = backup_server_bin();
    for args in [
        &["users", "refresh"][..],
        &["run", "--user", USER, "--progress", "log"],
    ] {
        let o = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    backupd.shutdown();

    // An account, its password from standard input.
    let accounts = work.path().join("accounts");
    let mut add = Command::new(&bin)
        .args(["console", "add-account", "ann", "--accounts"])
        .arg(&accounts)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(add.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let o = add.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));

    let pw = work.path().join("admin.pw");
    testkit::config::write_secret(&pw, "secret").unwrap();
    let audit = work.path().join("audit.log");
    let mut console = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .args(["console", "--listen", "127.0.0.1:0", "--accounts"])
        .arg(&accounts)
        .arg("--audit-log")
        .arg(&audit)
        .arg("--restore-to")
        .arg(format!("cyrus://admin@127.0.0.1:{}", cyrus.sync_port()))
        .arg("--password-file")
        .arg(&pw)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = console.stdout.take().unwrap();
    let console = Killed(console);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("console: listening on ")
        .unwrap_or_else(|| panic!("console said {line:?}"))
        .to_owned();
    let addr: SocketAddr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();

    let port = free_port();
    let driver = Killed(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; tests/cyrus/install.sh installs it)"),
    );
    testkit::wait::until("chromedriver listening", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let profile = work.path().join("chromium-profile");
        let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                // Root in CI: no sandbox. A profile of its own: nothing cached from before.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1100,760", format!("--user-data-dir={}", profile.display())]
            }
        }))
        .unwrap();
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session through chromedriver");

        // Not signed in: sent to sign-in. A wrong password is refused.
        c.goto(&format!("{base}users")).await.unwrap();
        assert!(c.current_url().await.unwrap().path().ends_with("/signin"));
        shot(&c, "signin").await;
        sign_in(&c, &base, "ann", "wrong password").await;
        assert_eq!(text_of(&c, "#error").await, "Wrong account name or password.");
        assert!(c.find_all(Locator::Id("who")).await.unwrap().is_empty());

        // The right one signs in, on the users page.
        sign_in(&c, &base, "ann", PASSWORD).await;
        assert_eq!(text_of(&c, "#who").await, "ann");
        assert!(c.current_url().await.unwrap().path().ends_with("/users"));
        shot(&c, "users").await;
        c.find(Locator::LinkText(USER)).await.unwrap().click().await.unwrap();
        // The timeline shows the run; the folders the folder.
        let timeline = text_of(&c, "#timeline").await;
        assert!(timeline.contains("folders as of then"), "{timeline}");
        shot(&c, "user").await;
        // Search by subject (any case), as find does.
        c.find(Locator::Id("search-link")).await.unwrap().click().await.unwrap();
        c.find(Locator::Id("s-subject")).await.unwrap().send_keys("INVOICE").await.unwrap();
        c.find(Locator::Id("s-go")).await.unwrap().click().await.unwrap();
        let found = text_of(&c, "#results").await;
        assert!(found.contains("Invoice 2026-11 from Bob"), "{found}");
        assert!(!found.contains("Your order"), "{found}");
        shot(&c, "search").await;
        c.back().await.unwrap();
        c.back().await.unwrap();
        c.find(Locator::LinkText(FOLDER)).await.unwrap().click().await.unwrap();
        let listing = text_of(&c, "#messages").await;
        assert!(listing.contains("Invoice 2026-11 from Bob"), "{listing}");
        assert!(listing.contains("Bob Builder <bob@example.com>"), "{listing}");
        assert!(listing.contains("Your order"), "{listing}");
        shot(&c, "folder").await;

        // The HTML message: shown, its script not run, its images not fetched.
        let before = hits.load(Ordering::SeqCst);
        assert_eq!(before, 0);
        // The listener does count (a request made here is seen).
        drop(TcpStream::connect(pixel).unwrap());
        testkit::wait::until("the pixel listener counting", || hits.load(Ordering::SeqCst) == 1);
        c.find(Locator::LinkText("Your order")).await.unwrap().click().await.unwrap();
        assert_eq!(text_of(&c, "#subject").await, "Your order");
        let body = text_of(&c, "#body").await;
        assert!(body.contains("Hello from the HTML message."), "{body}");
        assert_eq!(c.title().await.unwrap(), "Your order · mailbackup console");
        assert!(c.find_all(Locator::Id("pwned")).await.unwrap().is_empty());
        assert!(c.find_all(Locator::Css("#body img, #body script")).await.unwrap().is_empty());
        shot(&c, "message-html").await;
        // The page has loaded (WebDriver waits for the load event, images included).
        assert_eq!(hits.load(Ordering::SeqCst), 1, "the remote image was fetched");

        // The plain message, by its link from the folder.
        c.back().await.unwrap();
        c.find(Locator::LinkText("Invoice 2026-11 from Bob")).await.unwrap().click().await.unwrap();
        assert_eq!(text_of(&c, "#from").await, "Bob Builder <bob@example.com>");
        assert!(text_of(&c, "#body").await.contains("the invoice is attached."));
        shot(&c, "message").await;

        // Without a browser: the session's cookie, with and without its CSRF token.
        let cookie = c.get_named_cookie("mailbackup_console").await.unwrap();
        let cookie = format!("mailbackup_console={}", cookie.value());
        let csrf = c
            .find(Locator::Css("#pick input[name=csrf]"))
            .await
            .unwrap()
            .attr("value")
            .await
            .unwrap()
            .unwrap();
        let form = format!("u={USER}&f={FOLDER}&at=&m={plain_uid}&format=eml");
        let (status, page) = http(addr, "POST", "/download", &cookie, &form);
        assert_eq!(status, 403, "{}", String::from_utf8_lossy(&page));
        let (status, _) = http(addr, "POST", "/download", &cookie, &format!("{form}&csrf={}", "0".repeat(64)));
        assert_eq!(status, 403);
        let (status, eml) = http(addr, "POST", "/download", &cookie, &format!("{form}&csrf={csrf}"));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&eml));
        assert_eq!(eml, PLAIN.as_bytes(), "the .eml downloaded");

        // Restore it into Cyrus, its folder deleted meanwhile: back, byte-identical.
        cyrus.delete_folder(USER, FOLDER, false).unwrap();
        let gone = cyrus.folder_state(USER, &[], false).unwrap();
        assert!(gone.folder(FOLDER).is_none());
        c.find(Locator::Id("restore")).await.unwrap().click().await.unwrap();
        // The restore takes a moment: wait for its page rather than read the old one.
        c.wait()
            .at_most(std::time::Duration::from_secs(60))
            .for_element(Locator::Css("#outcome"))
            .await
            .unwrap();
        let outcome = text_of(&c, "#outcome").await;
        assert!(outcome.starts_with("Restored 1 messages"), "{outcome}");
        shot(&c, "restored").await;
        let after = cyrus.folder_state(USER, &[], false).unwrap();
        let f = after.folder(FOLDER).expect("the folder restored");
        assert_eq!(f.messages.len(), 1, "{f:?}");
        assert_eq!(f.messages[0].sha1, sha1_hex(PLAIN.as_bytes()));
        assert_eq!(f.messages[0].uid, plain_uid);
        c.close().await.unwrap();
    });
    drop(driver);
    drop(console);

    // Who did what.
    let log = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |action: &str, who: &str, outcome: &str| {
        lines.iter().any(|l| {
            l["action"] == action
                && l["who"] == who
                && l["outcome"].as_str().unwrap().starts_with(outcome)
        })
    };
    assert!(
        has("sign-in-refused", "ann", "wrong name or password"),
        "{log}"
    );
    assert!(has("sign-in", "ann", "ok"), "{log}");
    assert!(has("open-message", "ann", "ok"), "{log}");
    assert!(has("csrf-refused", "ann", "refused"), "{log}");
    assert!(has("download", "ann", "ok: 1 messages"), "{log}");
    assert!(has("restore", "ann", "ok: 1 messages"), "{log}");
    let restore = lines.iter().find(|l| l["action"] == "restore").unwrap();
    assert_eq!(restore["user"], USER);
    assert!(
        restore["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("UID {plain_uid}")),
        "{restore}"
    );
}
