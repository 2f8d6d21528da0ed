//! `backup-server console`: a small web application for support staff. Sign in, pick a
//! user, see the backup timeline, browse folders as of any time, open a message (shown
//! safely), and restore messages or a folder into the user's account or download them.
//! docs/console.md is the administrator's reference.
//!
//! Server-rendered HTML (axum on tokio, minijinja templates auto-escaped, one plain style
//! sheet, no script). Stores are only ever opened read-only ([`StoreReader`]); every action
//! is written to an append-only audit log before its answer goes out.
//!
//! * [`accounts`]: the accounts file (Argon2id hashes), `add-account`.
//! * [`auth`]: who is asking (a session from sign-in, or a reverse proxy's header), and
//!   sign-in and sign-out; [`sessions`]: the session cookie; [`csrf`]: every POST's token;
//!   [`throttle`]: sign-in failures.
//! * [`pages`]: the pages that show (users, a user's timeline and folders, a folder, a
//!   message); [`search`]: `find` over a user's backup; [`actions`]: restore and download;
//!   [`display`]: a message made safe to show.
//! * [`audit`]: the audit log; [`security_headers`]: CSP and friends on every answer;
//!   [`templates`]: the pages' templates.
//!
//! [`StoreReader`]: crate::store::StoreReader

pub mod accounts;
pub mod actions;
pub mod audit;
pub mod auth;
pub mod csrf;
pub mod display;
pub mod pages;
pub mod search;
pub mod security_headers;
pub mod sessions;
pub mod templates;
pub mod throttle;

use std::future::IntoFuture;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;

use crate::restore::Target;

/// How the console is run (the command line's options, made into values).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where it listens (127.0.0.1:8025 by default).
    pub listen: SocketAddr,
    /// The URL browsers reach it by, when that is not `http://LISTEN/` (behind a reverse
    /// proxy): `https://` makes the cookie `Secure`.
    pub public_url: Option<String>,
    /// The accounts file (sign-in with a password), when not signed in by a proxy.
    pub accounts: Option<PathBuf>,
    /// Sign-in by a reverse proxy's header.
    pub proxy: Option<ProxyAuth>,
    /// The audit log.
    pub audit_log: PathBuf,
    /// The store root.
    pub store_root: PathBuf,
    /// The state db.
    pub state_db: PathBuf,
    /// Where restores go: each an `imap://` or `cyrus://` target, its password file and
    /// options already set (the page offers them by their URL).
    pub targets: Vec<Target>,
}

/// Sign-in by a reverse proxy: it authenticates staff and passes the name in a header.
#[derive(Debug, Clone)]
pub struct ProxyAuth {
    /// The header (e.g. `X-Remote-User`).
    pub header: String,
    /// The proxy's address: requests from any other peer are refused (anyone who can reach
    /// the console directly could otherwise set the header).
    pub from: IpAddr,
}

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The accounts file.
    #[error(transparent)]
    Accounts(#[from] accounts::AccountsError),
    /// The audit log.
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    /// Neither accounts nor a proxy header.
    #[error(
        "console: no way to sign in: give --accounts FILE or --proxy-user-header with --proxy-from"
    )]
    NoSignIn,
    /// Plain HTTP on an address others reach, with no HTTPS proxy said to be in front.
    #[error("console: --listen {0} is not loopback: passwords and mail would cross the network in clear; listen on 127.0.0.1 behind an HTTPS reverse proxy and give --public-url https://...")]
    NotLoopback(SocketAddr),
    /// Binding or serving failed.
    #[error("console: listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The async runtime did not start.
    #[error("console: starting its threads: {0}")]
    Runtime(std::io::Error),
    /// A template does not compile (a bug).
    #[error("console: template: {0}")]
    Template(#[from] minijinja::Error),
}

/// What every request handler shares.
#[derive(Debug)]
pub struct App {
    /// The settings.
    pub settings: Settings,
    /// The accounts (`None`: sign-in by proxy only).
    pub accounts: Option<accounts::Accounts>,
    /// The sessions.
    pub sessions: sessions::Sessions,
    /// Sign-in failures.
    pub throttle: throttle::Throttle,
    /// The audit log.
    pub audit: audit::AuditLog,
    /// The templates.
    pub templates: templates::Templates,
}

impl App {
    /// Everything the console needs, checked: the accounts file read, the audit log opened.
    pub fn new(settings: Settings) -> Result<App, ConsoleError> {
        if settings.accounts.is_none() && settings.proxy.is_none() {
            return Err(ConsoleError::NoSignIn);
        }
        let https = settings
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        if !settings.listen.ip().is_loopback() && !https {
            return Err(ConsoleError::NotLoopback(settings.listen));
        }
        let accounts = settings
            .accounts
            .as_deref()
            .map(accounts::Accounts::load)
            .transpose()?;
        // Secure unless reached over plain HTTP on loopback.
        let secure = https || !settings.listen.ip().is_loopback();
        Ok(App {
            accounts,
            sessions: sessions::Sessions::new(secure),
            throttle: throttle::Throttle::default(),
            audit: audit::AuditLog::open(&settings.audit_log)?,
            templates: templates::Templates::new()?,
            settings,
        })
    }
}

/// The console's routes, every answer with the security headers and every request past
/// [`auth::layer`].
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/style.css", get(templates::style))
        .route("/signin", get(auth::signin_page).post(auth::signin))
        .route("/signout", post(auth::signout))
        .route("/users", get(pages::users))
        .route("/user", get(pages::user))
        .route("/folder", get(pages::folder))
        .route("/message", get(pages::message))
        .route("/search", get(search::search))
        .route("/restore", post(actions::restore_post))
        .route("/download", post(actions::download))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            auth::layer,
        ))
        .with_state(app)
}

/// Serves until `stop` is set (SIGINT/SIGTERM), then finishes the requests under way.
/// `ready` is called with the address bound (port 0 picks a free one).
pub fn serve(
    settings: Settings,
    stop: &AtomicBool,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ConsoleError> {
    let app = Arc::new(App::new(settings)?);
    let addr = app.settings.listen;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ConsoleError::Runtime)?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ConsoleError::Listen { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ConsoleError::Listen { addr, source })?;
        ready(bound);
        let service = router(app).into_make_service_with_connect_info::<SocketAddr>();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, service).with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        // The signal handlers only set the flag (the nightly commands poll it too).
        let watch = async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let _ = tx.send(());
        };
        let (served, ()) = tokio::join!(server.into_future(), watch);
        served.map_err(|source| ConsoleError::Listen {
            addr: bound,
            source,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::{header, Request, StatusCode};
    use axum::response::Response;
    use tower::ServiceExt;

    fn settings(dir: &std::path::Path) -> Settings {
        Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            public_url: None,
            accounts: None,
            proxy: None,
            audit_log: dir.join("audit.log"),
            store_root: dir.join("store"),
            state_db: dir.join("state.sqlite3"),
            targets: Vec::new(),
        }
    }

    fn serve_from(s: Settings, peer: [u8; 4]) -> Router {
        router(Arc::new(App::new(s).unwrap()))
            .layer(MockConnectInfo(SocketAddr::from((peer, 40000))))
    }

    async fn send(r: &Router, method: &str, path: &str, cookie: &str, body: &str) -> Response {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::COOKIE, cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body.to_owned()))
            .unwrap();
        r.clone().oneshot(req).await.unwrap()
    }

    async fn text(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    /// `mailbackup_console=ID` from an answer's Set-Cookie.
    fn cookie_of(r: &Response) -> String {
        let c = r.headers()[header::SET_COOKIE].to_str().unwrap();
        c.split(';').next().unwrap().to_owned()
    }

    fn csrf_in(page: &str) -> String {
        let i = page.find("name=\"csrf\" value=\"").unwrap() + 19;
        page[i..i + 64].to_owned()
    }

    #[tokio::test]
    async fn sign_in_needs_the_token_and_the_password_and_posts_need_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        let acc = dir.path().join("accounts");
        accounts::set_password(&acc, "ann", "pw-ann").unwrap();
        s.accounts = Some(acc);
        let r = serve_from(s, [127, 0, 0, 1]);

        // Not signed in: to sign-in, with a session cookie and the headers.
        let a = send(&r, "GET", "/users", "", "").await;
        assert_eq!(a.status(), StatusCode::SEE_OTHER);
        assert_eq!(a.headers()[header::LOCATION], "/signin");
        assert!(a.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
        let set = a.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        // Plain HTTP on loopback: not Secure (the browser would drop it).
        assert!(!set.contains("Secure"), "{set}");
        let anon = cookie_of(&a);
        let page = text(send(&r, "GET", "/signin", &anon, "").await).await;
        let token = csrf_in(&page);

        let no_token = send(&r, "POST", "/signin", &anon, "name=ann&password=pw-ann").await;
        assert_eq!(no_token.status(), StatusCode::FORBIDDEN);
        let wrong = send(
            &r,
            "POST",
            "/signin",
            &anon,
            &format!("csrf={token}&name=ann&password=nope"),
        )
        .await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let ok = send(
            &r,
            "POST",
            "/signin",
            &anon,
            &format!("csrf={token}&name=ann&password=pw-ann"),
        )
        .await;
        assert_eq!(ok.status(), StatusCode::SEE_OTHER);
        let signed = cookie_of(&ok);
        assert_ne!(signed, anon, "a new session on sign-in");
        // The session from before sign-in is gone.
        let old = send(&r, "GET", "/users", &anon, "").await;
        assert_eq!(old.status(), StatusCode::SEE_OTHER);

        let users = send(&r, "GET", "/users", &signed, "").await;
        assert_eq!(users.status(), StatusCode::OK);
        let page = text(users).await;
        assert!(
            page.contains("signed in as <b id=\"who\">ann</b>"),
            "{page}"
        );
        let token = csrf_in(&page);
        let form = "u=alice&f=INBOX&m=1&format=eml";
        for path in ["/restore", "/download", "/signout"] {
            let r1 = send(&r, "POST", path, &signed, form).await;
            assert_eq!(r1.status(), StatusCode::FORBIDDEN, "{path}");
            let r2 = send(
                &r,
                "POST",
                path,
                &signed,
                &format!("{form}&csrf={}", "0".repeat(64)),
            )
            .await;
            assert_eq!(r2.status(), StatusCode::FORBIDDEN, "{path}");
        }
        let out = send(&r, "POST", "/signout", &signed, &format!("csrf={token}")).await;
        assert_eq!(out.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            send(&r, "GET", "/users", &signed, "").await.status(),
            StatusCode::SEE_OTHER
        );

        let log = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        let actions: Vec<String> = log
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            actions,
            [
                "csrf-refused",
                "sign-in-refused",
                "sign-in",
                "csrf-refused",
                "csrf-refused",
                "csrf-refused",
                "csrf-refused",
                "csrf-refused",
                "csrf-refused",
                "sign-out"
            ]
        );
    }

    #[tokio::test]
    async fn behind_a_proxy_only_the_proxy_may_name_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.proxy = Some(ProxyAuth {
            header: "x-remote-user".into(),
            from: "127.0.0.1".parse().unwrap(),
        });
        let proxied = serve_from(s.clone(), [127, 0, 0, 1]);
        let req = |user: Option<&str>| {
            let mut b = Request::builder().uri("/users");
            if let Some(u) = user {
                b = b.header("X-Remote-User", u);
            }
            b.body(Body::empty()).unwrap()
        };
        let ok = proxied.clone().oneshot(req(Some("ann"))).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert!(text(ok).await.contains("<b id=\"who\">ann</b>"));
        let none = proxied.clone().oneshot(req(None)).await.unwrap();
        assert_eq!(none.status(), StatusCode::FORBIDDEN);
        let bad = proxied
            .clone()
            .oneshot(req(Some("ann<script>")))
            .await
            .unwrap();
        assert_eq!(bad.status(), StatusCode::FORBIDDEN);
        // Straight to the console, not through the proxy: refused whatever the header says.
        let direct = serve_from(s, [127, 0, 0, 2]);
        let r = direct.oneshot(req(Some("ann"))).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn plain_http_off_loopback_and_no_sign_in_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        assert!(matches!(App::new(s.clone()), Err(ConsoleError::NoSignIn)));
        let mut s = s;
        s.proxy = Some(ProxyAuth {
            header: "x-remote-user".into(),
            from: "127.0.0.1".parse().unwrap(),
        });
        s.listen = "0.0.0.0:8025".parse().unwrap();
        assert!(matches!(
            App::new(s.clone()),
            Err(ConsoleError::NotLoopback(_))
        ));
        s.public_url = Some("https://console.example.com/".into());
        let app = App::new(s).unwrap();
        assert!(app.sessions.cookie("x").contains("Secure"));
    }
}
