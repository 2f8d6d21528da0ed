//! Who is asking: every request passes [`layer`], which finds (or starts) its session and,
//! when a reverse proxy signs staff in, takes the name from the proxy's header (from the
//! proxy's address only). Pages other than sign-in need someone signed in. Sign-in checks
//! the password against the accounts file ([`super::accounts`]), throttled
//! ([`super::throttle`]), and starts a new session; sign-out ends it. Both are logged.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};

use super::accounts::{valid_name, MAX_PASSWORD};
use super::audit::Entry;
use super::csrf::{check, field};
use super::sessions::{id_from_cookies, Session};
use super::App;

/// The request's context: its session, who is signed in, and the peer's address.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The session.
    pub session: Session,
    /// Who is signed in (`None` on the sign-in page).
    pub who: Option<String>,
    /// The peer's address.
    pub from: IpAddr,
    /// Whether sign-in is by the reverse proxy (no sign-in or sign-out page).
    pub proxy: bool,
}

impl Ctx {
    /// The name for the audit log.
    pub fn who(&self) -> &str {
        self.who.as_deref().unwrap_or("-")
    }
}

fn refuse(status: StatusCode, text: &'static str) -> Response {
    let mut r = (status, text).into_response();
    super::security_headers::add(r.headers_mut());
    r
}

/// Finds the request's session and who is asking; sends those not signed in to sign-in;
/// adds the security headers (and the cookie of a session started here) to the answer.
pub async fn layer(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let from = peer.ip();
    let path = req.uri().path().to_owned();
    let cookies = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let mut session = id_from_cookies(cookies).and_then(|id| app.sessions.get(&id));
    let mut fresh = false;
    if let Some(p) = &app.settings.proxy {
        if from != p.from {
            return refuse(
                StatusCode::FORBIDDEN,
                "refused: this console is reached through its reverse proxy only",
            );
        }
        let Some(who) = req
            .headers()
            .get(p.header.as_str())
            .and_then(|v| v.to_str().ok())
            .filter(|n| valid_name(n))
            .map(str::to_owned)
        else {
            return refuse(
                StatusCode::FORBIDDEN,
                "refused: the reverse proxy named no user (or a name with characters not allowed)",
            );
        };
        if session.as_ref().and_then(|s| s.who.as_deref()) != Some(who.as_str()) {
            session = Some(app.sessions.create(Some(who)));
            fresh = true;
        }
    }
    let session = match session {
        Some(s) => s,
        None => {
            fresh = true;
            app.sessions.create(None)
        }
    };
    let public = path == "/signin" || path == "/style.css";
    let mut resp = if session.who.is_none() && !public {
        Redirect::to("/signin").into_response()
    } else {
        req.extensions_mut().insert(Ctx {
            who: session.who.clone(),
            session: session.clone(),
            from,
            proxy: app.settings.proxy.is_some(),
        });
        next.run(req).await
    };
    // A handler that set its own cookie (sign-in, sign-out) has the last word.
    if fresh && !resp.headers().contains_key(header::SET_COOKIE) {
        if let Ok(v) = HeaderValue::from_str(&app.sessions.cookie(&session.id)) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    super::security_headers::add(resp.headers_mut());
    resp
}

/// `GET /signin`.
pub async fn signin_page(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>) -> Response {
    if ctx.who.is_some() {
        return Redirect::to("/users").into_response();
    }
    signin_form(&app, &ctx, StatusCode::OK, None)
}

fn signin_form(app: &App, ctx: &Ctx, status: StatusCode, error: Option<&str>) -> Response {
    app.templates.page(
        status,
        "signin.html",
        minijinja::context! { title => "Sign in", csrf => &ctx.session.csrf, error => error },
    )
}

/// `POST /signin`: name and password checked; a new session on success.
pub async fn signin(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Ctx>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(r) = check(&app, &ctx, &form, "sign-in") {
        return *r;
    }
    let name = field(&form, "name").unwrap_or_default().trim().to_owned();
    let password = field(&form, "password").unwrap_or_default().to_owned();
    if app.accounts.is_none() {
        return Redirect::to("/users").into_response();
    }
    // Names not allowed are logged as "-": the log holds only names an account could have.
    let logged_name = if valid_name(&name) {
        name.as_str()
    } else {
        "-"
    };
    let log = |outcome: &str| {
        if let Err(e) = app.audit.log(&Entry {
            who: logged_name,
            from: ctx.from,
            action: if outcome == "ok" {
                "sign-in"
            } else {
                "sign-in-refused"
            },
            user: None,
            detail: String::new(),
            outcome: outcome.to_owned(),
        }) {
            tracing::error!("{e}");
        }
    };
    if app.throttle.refused(&name, ctx.from) {
        log("too many wrong passwords lately");
        return signin_form(
            &app,
            &ctx,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many wrong passwords lately: wait a quarter of an hour, or ask an administrator."),
        );
    }
    let ok = if password.len() > MAX_PASSWORD {
        false
    } else {
        let app2 = Arc::clone(&app);
        let (n, p) = (name.clone(), password);
        // Argon2 takes tens of milliseconds on purpose: not on the async threads.
        tokio::task::spawn_blocking(move || app2.accounts.as_ref().is_some_and(|a| a.check(&n, &p)))
            .await
            .unwrap_or(false)
    };
    if !ok {
        app.throttle.failed(&name, ctx.from);
        log("wrong name or password");
        return signin_form(
            &app,
            &ctx,
            StatusCode::UNAUTHORIZED,
            Some("Wrong account name or password."),
        );
    }
    app.throttle.succeeded(&name);
    log("ok");
    app.sessions.end(&ctx.session.id);
    let s = app.sessions.create(Some(name));
    let mut r = Redirect::to("/users").into_response();
    if let Ok(v) = HeaderValue::from_str(&app.sessions.cookie(&s.id)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /signout`.
pub async fn signout(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Ctx>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(r) = check(&app, &ctx, &form, "sign-out") {
        return *r;
    }
    app.sessions.end(&ctx.session.id);
    if let Err(e) = app.audit.log(&Entry {
        who: ctx.who(),
        from: ctx.from,
        action: "sign-out",
        user: None,
        detail: String::new(),
        outcome: "ok".into(),
    }) {
        tracing::error!("{e}");
    }
    let mut r = Redirect::to("/signin").into_response();
    if let Ok(v) = HeaderValue::from_str(&app.sessions.expired_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
