//! The pages that show: the users (from the state db), one user's backup timeline and
//! folders as of a time, one folder's messages then, one message. Each view of a user's
//! backup is logged. Stores are opened read-only, off the async threads.

use std::io::Read;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use axum::Extension;
use formats::imap::mutf7;
use formats::Timestamp;
use serde::{Deserialize, Serialize};

use super::audit::Entry;
use super::auth::Ctx;
use super::display;
use super::App;
use crate::point_in_time::{parse_time, rfc3339, when};
use crate::state::StateDb;
use crate::store::{Catalog, FolderAt, StoreReader};

/// Users listed at most on the users page (narrow it with the name filter).
pub const MAX_USERS_SHOWN: usize = 500;
/// Messages a folder page lists.
pub const PAGE_SIZE: usize = 50;
/// A backup older than this is shown as late (the report's default limit).
const LATE_SECS: i64 = 24 * 3600;

/// The page telling what went wrong, with `status`.
pub fn error_page(
    app: &App,
    ctx: &Ctx,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    app.templates.page(
        status,
        "error.html",
        minijinja::context! {
            title, message, who => &ctx.who, csrf => &ctx.session.csrf, proxy => ctx.proxy,
            back => "/users",
        },
    )
}

/// Runs `f` on a blocking thread (SQLite and inflating are synchronous).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("the work failed: {e}")))
}

/// Logs a view; a log that cannot be written refuses the page (nothing unlogged is shown).
pub(crate) fn audit(
    app: &App,
    ctx: &Ctx,
    action: &str,
    user: &str,
    detail: String,
    outcome: &str,
) -> Result<(), Box<Response>> {
    app.audit
        .log(&Entry {
            who: ctx.who(),
            from: ctx.from,
            action,
            user: Some(user),
            detail,
            outcome: outcome.to_owned(),
        })
        .map_err(|e| {
            Box::new(error_page(
                app,
                ctx,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Audit log",
                &e.to_string(),
            ))
        })
}

/// A `--at`-style time from a form; empty is now.
pub(crate) fn parse_at(s: Option<&str>) -> Result<Option<Timestamp>, String> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => parse_time(s).map(Some).map_err(|e| e.to_string()),
    }
}

/// "3 h", "2 d 4 h": how long ago `secs` (unix seconds) was.
fn age(secs: Option<i64>, now: i64) -> String {
    let Some(s) = secs else {
        return "never".into();
    };
    let d = (now - s).max(0);
    if d < 3600 {
        format!("{} min", d / 60)
    } else if d < 86_400 {
        format!("{} h", d / 3600)
    } else {
        format!("{} d {} h", d / 86_400, d % 86_400 / 3600)
    }
}

fn unix(secs: Option<i64>) -> Option<String> {
    secs.map(|s| rfc3339(Timestamp::from_secs(s)))
}

/// `GET /`.
pub async fn home() -> Redirect {
    Redirect::to("/users")
}

/// `GET /users` query.
#[derive(Debug, Deserialize)]
pub struct UsersQuery {
    q: Option<String>,
}

#[derive(Debug, Serialize)]
struct UserLine {
    name: String,
    server: String,
    last_success: Option<String>,
    age: String,
    age_class: &'static str,
    last_attempt: Option<String>,
    last_error: Option<String>,
    vanished: Option<String>,
}

/// `GET /users?q=`: every user the state db knows (name filter: substring, any case).
pub async fn users(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Ctx>,
    Query(q): Query<UsersQuery>,
) -> Response {
    let filter = q.q.unwrap_or_default().trim().to_lowercase();
    let path = app.settings.state_db.clone();
    let rows = blocking(move || {
        let db = StateDb::open(&path).map_err(|e| e.to_string())?;
        db.users().map_err(|e| e.to_string())
    })
    .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            return error_page(
                &app,
                &ctx,
                StatusCode::INTERNAL_SERVER_ERROR,
                "State db",
                &e,
            )
        }
    };
    let now = jiff::Timestamp::now().as_second();
    let total = rows.len();
    let matching: Vec<_> = rows
        .into_iter()
        .filter(|u| filter.is_empty() || u.name.to_lowercase().contains(&filter))
        .collect();
    let lines: Vec<UserLine> = matching
        .iter()
        .take(MAX_USERS_SHOWN)
        .map(|u| UserLine {
            name: u.name.clone(),
            server: u.server.clone(),
            last_success: unix(u.last_success),
            age: age(u.last_success, now),
            age_class: if u.last_success.is_none_or(|s| now - s >= LATE_SECS) {
                "late"
            } else {
                ""
            },
            last_attempt: unix(u.last_attempt),
            last_error: u.last_error.clone(),
            vanished: unix(u.vanished_at),
        })
        .collect();
    app.templates.page(
        StatusCode::OK,
        "users.html",
        minijinja::context! {
            title => "Users", who => &ctx.who, csrf => &ctx.session.csrf, proxy => ctx.proxy,
            q => filter, users => &lines, shown => lines.len(), matching => matching.len(), total,
        },
    )
}

/// A user and a time, as the pages take them.
#[derive(Debug, Deserialize)]
pub struct UserQuery {
    u: String,
    at: Option<String>,
}

#[derive(Debug, Serialize)]
struct RunLine {
    run: u64,
    started: Option<String>,
    ended: Option<String>,
    age: String,
}

#[derive(Debug, Serialize)]
struct FolderLine {
    /// As the store holds it (modified UTF-7): what links carry.
    name: String,
    /// In UTF-8, as staff read it.
    label: String,
    messages: String,
    copied: String,
}

#[derive(Debug, Serialize)]
struct UserRowView {
    server: String,
    partition: String,
    last_success: Option<String>,
    age: String,
    backups_ok: i64,
    backups_incomplete: i64,
    backups_failed: i64,
    last_error: Option<String>,
}

/// The page's `at`, or the error page saying why it is not a time.
fn at_asked(app: &App, ctx: &Ctx, at: Option<&str>) -> Result<Option<Timestamp>, Box<Response>> {
    parse_at(at).map_err(|e| Box::new(error_page(app, ctx, StatusCode::BAD_REQUEST, "Time", &e)))
}

/// The folder named `name` as of `at`.
fn folder_then(cat: &Catalog, name: &str, at: Option<Timestamp>) -> Result<FolderAt, String> {
    cat.folder_at(name, at)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no folder {name:?} as of {}", when(at)))
}

fn open(app: &App, user: &str) -> Result<StoreReader, String> {
    StoreReader::open(&app.settings.store_root, user).map_err(|e| e.to_string())
}

/// `GET /user?u=&at=`: the state db's line, the backup timeline (every run the store
/// holds), and the folders as of `at`.
pub async fn user(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Ctx>,
    Query(q): Query<UserQuery>,
) -> Response {
    let at = match at_asked(&app, &ctx, q.at.as_deref()) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let app2 = Arc::clone(&app);
    let user = q.u.clone();
    let got = blocking(move || {
        let now = jiff::Timestamp::now().as_second();
        let row = StateDb::open(&app2.settings.state_db)
            .and_then(|db| db.user(&user))
            .map_err(|e| e.to_string())?
            .map(|u| UserRowView {
                server: u.server,
                partition: u.partition,
                last_success: unix(u.last_success),
                age: age(u.last_success, now),
                backups_ok: u.backups_ok,
                backups_incomplete: u.backups_incomplete,
                backups_failed: u.backups_failed,
                last_error: u.last_error,
            });
        let reader = open(&app2, &user)?;
        let cat = reader.catalog();
        let runs: Vec<RunLine> = cat
            .runs()
            .map_err(|e| e.to_string())?
            .into_iter()
            .rev()
            .map(|r| RunLine {
                run: r.run,
                started: r.started.map(rfc3339),
                ended: r.ended.map(rfc3339),
                age: age(r.started.map(|t| t.secs), now),
            })
            .collect();
        let mut folders = cat.folders_at(at).map_err(|e| e.to_string())?;
        folders.sort_by(|a, b| a.name.cmp(&b.name));
        let folders: Vec<FolderLine> = folders
            .into_iter()
            .map(|f| FolderLine {
                messages: f
                    .snapshot
                    .as_ref()
                    .map_or("-".into(), |s| s.exists.to_string()),
                copied: f.snapshot.as_ref().map_or("-".into(), |s| rfc3339(s.time)),
                label: mutf7::decode_or_keep(&f.name),
                name: f.name,
            })
            .collect();
        Ok((row, runs, folders))
    })
    .await;
    let outcome = got.as_ref().map_or_else(|e| e.clone(), |_| "ok".into());
    if let Err(r) = audit(
        &app,
        &ctx,
        "view-user",
        &q.u,
        format!("as of {}", when(at)),
        &outcome,
    ) {
        return *r;
    }
    let (row, runs, folders) = match got {
        Ok(g) => g,
        Err(e) => return error_page(&app, &ctx, StatusCode::NOT_FOUND, &q.u, &e),
    };
    app.templates.page(
        StatusCode::OK,
        "user.html",
        minijinja::context! {
            title => &q.u, who => &ctx.who, csrf => &ctx.session.csrf, proxy => ctx.proxy,
            user => &q.u, row, runs, folders, at => at.map(rfc3339).unwrap_or_default(),
            when => when(at),
        },
    )
}

/// A folder of a user, a time and a page.
#[derive(Debug, Deserialize)]
pub struct FolderQuery {
    u: String,
    f: String,
    at: Option<String>,
    page: Option<usize>,
}

#[derive(Debug, Serialize)]
struct MessageLine {
    uid: u32,
    date: String,
    from: String,
    subject: String,
    size: u64,
    flags: String,
}

/// The header block of a stored message (up to [`display::MAX_HEADER`] bytes).
fn header_block(cat: &Catalog, guid: &formats::Guid) -> Vec<u8> {
    let Ok(Some(r)) = cat.open_message(guid) else {
        return Vec::new();
    };
    let mut buf = Vec::new();
    // A damaged message shows no headers; the listing still shows its record.
    let _ = r.take(display::MAX_HEADER as u64).read_to_end(&mut buf);
    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        buf.truncate(end + 4);
    }
    buf
}

/// `GET /folder?u=&f=&at=&page=`: the folder's messages then, a page at a time, each with
/// its From and Subject read from the stored message's header block.
pub async fn folder(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Ctx>,
    Query(q): Query<FolderQuery>,
) -> Response {
    let at = match at_asked(&app, &ctx, q.at.as_deref()) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let page = q.page.unwrap_or(1).max(1);
    let app2 = Arc::clone(&app);
    let (user, name) = (q.u.clone(), q.f.clone());
    let got = blocking(move || {
        let reader = open(&app2, &user)?;
        let cat = reader.catalog();
        let f = folder_then(cat, &name, at)?;
        let mut all = Vec::new();
        cat.messages_at(&f.unique_id, at, false, |m| {
            all.push(m);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        let total = all.len();
        let lines: Vec<MessageLine> = all
            .iter()
            .skip((page - 1) * PAGE_SIZE)
            .take(PAGE_SIZE)
            .map(|m| {
                let h = display::headers(&header_block(cat, &m.guid));
                MessageLine {
                    uid: m.uid,
                    date: crate::restore::imap::imap_date(m.internal_date),
                    from: h.from,
                    subject: h.subject,
                    size: m.size,
                    flags: m.flags.join(" "),
                }
            })
            .collect();
        Ok((total, lines))
    })
    .await;
    let outcome = got.as_ref().map_or_else(|e| e.clone(), |_| "ok".into());
    let detail = format!("folder {:?} as of {}, page {page}", q.f, when(at));
    if let Err(r) = audit(&app, &ctx, "list-folder", &q.u, detail, &outcome) {
        return *r;
    }
    let (total, messages) = match got {
        Ok(g) => g,
        Err(e) => return error_page(&app, &ctx, StatusCode::NOT_FOUND, &q.f, &e),
    };
    app.templates.page(
        StatusCode::OK,
        "folder.html",
        minijinja::context! {
            title => mutf7::decode_or_keep(&q.f), who => &ctx.who, csrf => &ctx.session.csrf,
            proxy => ctx.proxy, user => &q.u, folder => &q.f,
            folder_label => mutf7::decode_or_keep(&q.f), at => at.map(rfc3339).unwrap_or_default(),
            when => when(at), total, messages, page, pages => total.div_ceil(PAGE_SIZE),
            targets => app.target_names(), whole_ok => true,
        },
    )
}

/// One message of a folder.
#[derive(Debug, Deserialize)]
pub struct MessageQuery {
    u: String,
    f: String,
    uid: u32,
    at: Option<String>,
}

/// `GET /message?u=&f=&uid=&at=`: the message's headers and its text (or cleaned HTML).
pub async fn message(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Ctx>,
    Query(q): Query<MessageQuery>,
) -> Response {
    let at = match at_asked(&app, &ctx, q.at.as_deref()) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let app2 = Arc::clone(&app);
    let (user, name, uid) = (q.u.clone(), q.f.clone(), q.uid);
    let got = blocking(move || {
        let reader = open(&app2, &user)?;
        let cat = reader.catalog();
        let f = folder_then(cat, &name, at)?;
        let m = cat
            .message_at(&f.unique_id, uid, at)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("folder {name:?}: no UID {uid} as of {}", when(at)))?;
        let r = cat
            .open_message(&m.guid)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("folder {name:?} UID {uid}: the message is not stored"))?;
        let mut raw = Vec::new();
        r.take(display::MAX_PARSED as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(|e| format!("folder {name:?} UID {uid}: reading the message: {e}"))?;
        Ok((m, display::message(&raw)))
    })
    .await;
    let outcome = got.as_ref().map_or_else(|e| e.clone(), |_| "ok".into());
    let detail = format!("folder {:?} UID {} as of {}", q.f, q.uid, when(at));
    if let Err(r) = audit(&app, &ctx, "open-message", &q.u, detail, &outcome) {
        return *r;
    }
    let (m, shown) = match got {
        Ok(g) => g,
        Err(e) => return error_page(&app, &ctx, StatusCode::NOT_FOUND, "Message", &e),
    };
    app.templates.page(
        StatusCode::OK,
        "message.html",
        minijinja::context! {
            title => if shown.subject.is_empty() { "(no subject)" } else { shown.subject.as_str() },
            who => &ctx.who, csrf => &ctx.session.csrf, proxy => ctx.proxy,
            user => &q.u, folder => &q.f, uid => q.uid,
            folder_label => mutf7::decode_or_keep(&q.f), at => at.map(rfc3339).unwrap_or_default(),
            when => when(at), m => &shown, size => m.size, guid => m.guid.to_hex(),
            internal_date => crate::restore::imap::imap_date(m.internal_date),
            flags => if m.flags.is_empty() { "none".to_owned() } else { m.flags.join(" ") },
            targets => app.target_names(), whole_ok => false,
        },
    )
}

impl App {
    /// The restore targets as the pages name them (their URLs, no passwords).
    pub fn target_names(&self) -> Vec<String> {
        self.settings
            .targets
            .iter()
            .map(|t| match t {
                crate::restore::Target::Imap(i) => {
                    format!("imap://{}@{}:{}/", i.admin, i.host, i.port)
                }
                crate::restore::Target::Cyrus(c) => {
                    format!("cyrus://{}@{}:{}", c.admin, c.host, c.port)
                }
                other => format!("{other:?}"),
            })
            .collect()
    }
}
