//! The search page: `find` over one user's backup (From, To/Cc, Subject as substrings in
//! any case, a date range, a folder, deleted mail only, as of a time), each result linked
//! to its message page, where it is restored or downloaded.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde::{Deserialize, Serialize};

use super::auth::Ctx;
use super::pages::{audit, blocking, error_page, parse_at};
use super::App;
use crate::find::{find, FindQuery, FoundState};
use crate::point_in_time::{rfc3339, when};
use formats::Timestamp;

/// Results shown at most (a note says when more matched).
pub const MAX_RESULTS: usize = 200;

/// The search form.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct SearchForm {
    u: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    before: String,
    #[serde(default)]
    folder: String,
    #[serde(default)]
    deleted: Option<String>,
    #[serde(default)]
    at: String,
}

#[derive(Debug, Serialize)]
struct Found {
    folder: String,
    folder_stored: String,
    uid: u32,
    date: String,
    from: String,
    subject: String,
    size: u64,
    state: String,
    /// The time to open it as of: just before it was expunged or its folder deleted.
    open_at: String,
}

fn text(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// `GET /search?u=&from=&to=&subject=&since=&before=&folder=&deleted=&at=`.
pub async fn search(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Ctx>,
    Query(f): Query<SearchForm>,
) -> Response {
    let asked = [&f.from, &f.to, &f.subject, &f.since, &f.before, &f.folder]
        .iter()
        .any(|s| !s.trim().is_empty())
        || f.deleted.is_some();
    let times = (|| {
        Ok::<_, String>((
            parse_at(Some(&f.at))?,
            parse_at(Some(&f.since))?,
            parse_at(Some(&f.before))?,
        ))
    })();
    let (at, since, before) = match times {
        Ok(t) => t,
        Err(e) => return error_page(&app, &ctx, StatusCode::BAD_REQUEST, "Time", &e),
    };
    let mut results = Vec::new();
    let mut notes = Vec::new();
    if asked {
        let q = FindQuery {
            from: text(&f.from),
            to: text(&f.to),
            subject: text(&f.subject),
            since: since.map(|t| t.secs),
            before: before.map(|t| t.secs),
            folder: text(&f.folder),
            deleted_only: f.deleted.is_some(),
            at: at.map(|t| t.secs),
            limit: Some(MAX_RESULTS),
        };
        let detail = format!("{q:?}");
        let (root, user) = (app.settings.store_root.clone(), f.u.clone());
        let got = blocking(move || find(&root, &user, &q).map_err(|e| e.to_string())).await;
        let outcome = match &got {
            Ok(r) => format!("ok: {} found", r.messages.len()),
            Err(e) => e.clone(),
        };
        if let Err(r) = audit(&app, &ctx, "search", &f.u, detail, &outcome) {
            return *r;
        }
        let report = match got {
            Ok(r) => r,
            Err(e) => return error_page(&app, &ctx, StatusCode::NOT_FOUND, "Search", &e),
        };
        notes = report.notes;
        results = report
            .messages
            .into_iter()
            .map(|m| {
                let open_at = match m.state {
                    FoundState::Live => at.map(rfc3339).unwrap_or_default(),
                    FoundState::Expunged { at: t } | FoundState::FolderDeleted { at: t } => {
                        rfc3339(Timestamp::from_secs(t - 1))
                    }
                };
                Found {
                    date: rfc3339(Timestamp::from_secs(m.date.unwrap_or(m.internaldate))),
                    state: m.state.to_string(),
                    folder: m.folder,
                    folder_stored: m.folder_stored,
                    uid: m.uid,
                    from: m.from,
                    subject: m.subject,
                    size: m.size,
                    open_at,
                }
            })
            .collect();
    }
    app.templates.page(
        StatusCode::OK,
        "search.html",
        minijinja::context! {
            title => format!("Search {}", f.u), who => &ctx.who, csrf => &ctx.session.csrf,
            proxy => ctx.proxy, user => &f.u, f => &f, asked, results, notes, when => when(at),
        },
    )
}
