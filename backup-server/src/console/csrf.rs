//! CSRF: every POST carries its session's token in a `csrf` field; a POST without it, or
//! with another session's, is refused (403) and the refusal logged. The session cookie is
//! `SameSite=Strict` as well, so a browser sends it on no other site's request; the token
//! is the defence that does not depend on the browser.

use axum::http::StatusCode;
use axum::response::Response;

use super::auth::Ctx;
use super::App;

/// The first value of field `name` in a submitted form.
pub fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Every value of field `name` (ticked checkboxes).
pub fn fields<'a>(form: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
    form.iter()
        .filter(move |(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Whether the form carries the session's token; if not, the refusal (logged) to send.
pub fn check(
    app: &App,
    ctx: &Ctx,
    form: &[(String, String)],
    action: &str,
) -> Result<(), Box<Response>> {
    if field(form, "csrf").is_some_and(|t| ctx.session.csrf_ok(t)) {
        return Ok(());
    }
    let logged = app.audit.log(&super::audit::Entry {
        who: ctx.who.as_deref().unwrap_or("-"),
        from: ctx.from,
        action: "csrf-refused",
        user: field(form, "u"),
        detail: format!("{action} without this session's CSRF token"),
        outcome: "refused".into(),
    });
    if let Err(e) = logged {
        tracing::error!("{e}");
    }
    Err(Box::new(super::pages::error_page(
        app,
        ctx,
        StatusCode::FORBIDDEN,
        "Refused",
        "This form did not carry this session's security token (CSRF). Reload the page and try again.",
    )))
}
