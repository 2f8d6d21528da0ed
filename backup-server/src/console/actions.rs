//! The two actions: restore messages or a folder into the user's account (one of the
//! `imap://` or `cyrus://` targets the console was started with), and download them
//! (one message as `.eml`, any number as mbox). Both go through `restore` itself, so every
//! message is checked against its SHA-1 GUID on the way out, and both are logged with who
//! asked, what, and how it ended.
//!
//! Ticked messages are restored one by one (each a selection of folder and UID: the
//! restore reconnects for each, which is fine for the handful a support case needs); a
//! whole folder is one restore.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};

use super::auth::Ctx;
use super::csrf::{check, field, fields};
use super::pages::{audit, blocking, error_page, parse_at};
use super::App;
use crate::point_in_time::when;
use crate::restore::{restore, RestoreReport, Selection, Target};

/// Messages one action takes at most (a whole folder is one selection, however large).
pub const MAX_PICKED: usize = 1000;
/// The largest download (a larger folder is restored with `backup-server restore`).
pub const MAX_DOWNLOAD: u64 = 512 << 20;

/// What a form asked for.
struct Picked {
    user: String,
    folder: String,
    at: Option<formats::Timestamp>,
    uids: Vec<u32>,
    whole: bool,
}

impl Picked {
    fn from_form(form: &[(String, String)]) -> Result<Picked, String> {
        let user = field(form, "u").unwrap_or_default().to_owned();
        let folder = field(form, "f").unwrap_or_default().to_owned();
        if user.is_empty() || folder.is_empty() {
            return Err("no user or folder given".into());
        }
        let at = parse_at(field(form, "at"))?;
        let whole = field(form, "whole") == Some("1");
        let mut uids = Vec::new();
        for v in fields(form, "m") {
            if uids.len() == MAX_PICKED {
                return Err(format!(
                    "more than {MAX_PICKED} messages ticked: take the whole folder"
                ));
            }
            uids.push(
                v.parse()
                    .map_err(|_| format!("UID {v:?} is not a number"))?,
            );
        }
        if !whole && uids.is_empty() {
            return Err("no message ticked (and not the whole folder)".into());
        }
        Ok(Picked {
            user,
            folder,
            at,
            uids,
            whole,
        })
    }

    /// The restore selections: the folder, or one per UID.
    fn selections(&self) -> Vec<Selection> {
        let base = Selection {
            folder: Some(self.folder.clone()),
            at: self.at,
            ..Selection::default()
        };
        if self.whole {
            return vec![base];
        }
        self.uids
            .iter()
            .map(|&u| Selection {
                uid: Some(u),
                ..base.clone()
            })
            .collect()
    }

    fn describe(&self) -> String {
        let what = if self.whole {
            "the whole folder".to_owned()
        } else {
            let u: Vec<String> = self.uids.iter().map(u32::to_string).collect();
            format!("UID {}", u.join(","))
        };
        format!("folder {:?} {what} as of {}", self.folder, when(self.at))
    }
}

/// Adds `b` to `a`.
fn add(a: &mut RestoreReport, b: RestoreReport) {
    a.folders += b.folders;
    a.messages += b.messages;
    a.bytes += b.bytes;
    a.not_stored += b.not_stored;
    a.damaged += b.damaged;
    a.not_kept += b.not_kept;
    a.notes.extend(b.notes);
}

/// `POST /restore`: the ticked messages (or the whole folder) into the target chosen.
pub async fn restore_post(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Ctx>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(r) = check(&app, &ctx, &form, "restore") {
        return *r;
    }
    let picked = match Picked::from_form(&form) {
        Ok(p) => p,
        Err(e) => return error_page(&app, &ctx, StatusCode::BAD_REQUEST, "Restore", &e),
    };
    let names = app.target_names();
    let Some((target, name)) = field(&form, "target")
        .and_then(|t| t.parse::<usize>().ok())
        .and_then(|i| Some((app.settings.targets.get(i)?.clone(), names.get(i)?.clone())))
    else {
        return error_page(
            &app,
            &ctx,
            StatusCode::BAD_REQUEST,
            "Restore",
            "no such restore target",
        );
    };
    let sels = picked.selections();
    let (root, user) = (app.settings.store_root.clone(), picked.user.clone());
    let t = target.clone();
    let done = blocking(move || {
        let mut total = RestoreReport::default();
        for sel in &sels {
            let rep = restore(&root, &user, sel, &t).map_err(|e| e.to_string())?;
            add(&mut total, rep);
        }
        Ok(total)
    })
    .await;
    let outcome = match &done {
        Ok(r) => format!(
            "ok: {} messages ({} bytes); {} damaged, {} not stored, {} not kept",
            r.messages, r.bytes, r.damaged, r.not_stored, r.not_kept
        ),
        Err(e) => e.clone(),
    };
    let detail = format!("{} into {name}", picked.describe());
    if let Err(r) = audit(&app, &ctx, "restore", &picked.user, detail, &outcome) {
        return *r;
    }
    let (ok, summary, notes) = match done {
        Ok(r) => (
            r.damaged == 0 && r.not_kept == 0,
            format!(
                "Restored {} messages ({} bytes) into {name}{}.",
                r.messages,
                r.bytes,
                if r.damaged + r.not_kept + r.not_stored > 0 {
                    "; some could not be: see below"
                } else {
                    ""
                }
            ),
            r.notes.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        ),
        Err(e) => (false, format!("The restore failed: {e}"), Vec::new()),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    app.templates.page(
        status,
        "done.html",
        minijinja::context! {
            title => "Restore", who => &ctx.who, csrf => &ctx.session.csrf, proxy => ctx.proxy,
            user => &picked.user, folder => &picked.folder, ok, summary, notes,
        },
    )
}

/// The only file under `dir` (an eml restore of one message makes one).
fn only_file(dir: &Path) -> Result<std::path::PathBuf, String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| e.to_string())? {
            let p = e.map_err(|e| e.to_string())?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                found.push(p);
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(format!("the restore wrote {n} files, not one")),
    }
}

fn read_bounded(p: &Path, out: &mut Vec<u8>) -> Result<(), String> {
    let f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if out.len() as u64 + len > MAX_DOWNLOAD {
        return Err(format!(
            "more than {} MiB: restore it with backup-server restore instead",
            MAX_DOWNLOAD >> 20
        ));
    }
    f.take(len).read_to_end(out).map_err(|e| e.to_string())?;
    Ok(())
}

/// Makes `s` a harmless file name part (ASCII letters, digits, `-`, `_`, `.`).
fn file_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect()
}

/// `POST /download`: one message as `.eml`, or the messages (or folder) as one mbox file.
pub async fn download(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Ctx>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(r) = check(&app, &ctx, &form, "download") {
        return *r;
    }
    let picked = match Picked::from_form(&form) {
        Ok(p) => p,
        Err(e) => return error_page(&app, &ctx, StatusCode::BAD_REQUEST, "Download", &e),
    };
    let eml = field(&form, "format") == Some("eml");
    if eml && (picked.whole || picked.uids.len() != 1) {
        return error_page(
            &app,
            &ctx,
            StatusCode::BAD_REQUEST,
            "Download",
            ".eml holds one message: tick exactly one, or download as mbox",
        );
    }
    let sels = picked.selections();
    let (root, user) = (app.settings.store_root.clone(), picked.user.clone());
    let done = blocking(move || {
        let tmp = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
        let mut body = Vec::new();
        let mut total = RestoreReport::default();
        for (i, sel) in sels.iter().enumerate() {
            let out = tmp.path().join(format!("{i}"));
            let target = if eml {
                Target::Eml(out.clone())
            } else {
                Target::Mbox(out.clone())
            };
            let rep = restore(&root, &user, sel, &target).map_err(|e| e.to_string())?;
            add(&mut total, rep);
            if eml {
                read_bounded(&only_file(&out)?, &mut body)?;
            } else if out.exists() {
                read_bounded(&out, &mut body)?;
            }
        }
        if total.messages == 0 {
            let notes: Vec<String> = total.notes.iter().map(|n| n.to_string()).collect();
            return Err(format!("nothing to download: {}", notes.join("; ")));
        }
        Ok((body, total))
    })
    .await;
    let outcome = match &done {
        Ok((b, r)) => format!("ok: {} messages, {} bytes", r.messages, b.len()),
        Err(e) => e.clone(),
    };
    let detail = format!(
        "{} as {}",
        picked.describe(),
        if eml { "eml" } else { "mbox" }
    );
    if let Err(r) = audit(&app, &ctx, "download", &picked.user, detail, &outcome) {
        return *r;
    }
    let (body, _) = match done {
        Ok(d) => d,
        Err(e) => return error_page(&app, &ctx, StatusCode::NOT_FOUND, "Download", &e),
    };
    let name = if eml {
        format!(
            "{}-{}-{}.eml",
            file_part(&picked.user),
            file_part(&picked.folder),
            picked.uids[0]
        )
    } else {
        format!(
            "{}-{}.mbox",
            file_part(&picked.user),
            file_part(&picked.folder)
        )
    };
    (
        [
            (
                header::CONTENT_TYPE,
                if eml {
                    "message/rfc822".to_owned()
                } else {
                    "application/mbox".to_owned()
                },
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_form_picks_uids_or_the_whole_folder() {
        let p = Picked::from_form(&form(&[
            ("u", "alice"),
            ("f", "INBOX"),
            ("m", "3"),
            ("m", "7"),
        ]))
        .unwrap();
        let s = p.selections();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].uid, Some(7));
        assert_eq!(s[1].folder.as_deref(), Some("INBOX"));
        let w = Picked::from_form(&form(&[
            ("u", "a"),
            ("f", "Work"),
            ("whole", "1"),
            ("at", "1795406400"),
        ]))
        .unwrap();
        assert_eq!(w.selections().len(), 1);
        assert_eq!(w.selections()[0].uid, None);
        assert!(w
            .describe()
            .contains("the whole folder as of 2026-11-23T04:00:00Z"));
        assert!(Picked::from_form(&form(&[("u", "a"), ("f", "Work")])).is_err());
        assert!(Picked::from_form(&form(&[("u", "a"), ("f", "W"), ("m", "x")])).is_err());
        assert_eq!(file_part("Donn\u{e9}es/2026 x"), "Donn_es_2026_x");
    }
}
