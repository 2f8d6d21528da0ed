//! The pages' templates (`templates/*.html`, built into the binary) and the style sheet.
//! minijinja escapes every value for HTML (the templates end in `.html`); the only value
//! marked safe is a message's HTML part after `display::clean_html`.

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

/// The style sheet (the only thing the pages load).
const STYLE: &str = include_str!("templates/style.css");

const PAGES: [(&str, &str); 10] = [
    ("base.html", include_str!("templates/base.html")),
    ("signin.html", include_str!("templates/signin.html")),
    ("users.html", include_str!("templates/users.html")),
    ("user.html", include_str!("templates/user.html")),
    ("folder.html", include_str!("templates/folder.html")),
    ("search.html", include_str!("templates/search.html")),
    ("message.html", include_str!("templates/message.html")),
    ("actions.html", include_str!("templates/actions.html")),
    ("done.html", include_str!("templates/done.html")),
    ("error.html", include_str!("templates/error.html")),
];

/// The compiled templates.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Compiles every template (an error is a bug in one).
    pub fn new() -> Result<Templates, minijinja::Error> {
        let mut env = Environment::new();
        for (name, source) in PAGES {
            env.add_template(name, source)?;
        }
        Ok(Templates { env })
    }

    /// The page `name` filled from `ctx`, with `status`.
    pub fn page(&self, status: StatusCode, name: &str, ctx: impl Serialize) -> Response {
        match self
            .env
            .get_template(name)
            .and_then(|t| t.render(minijinja::Value::from_serialize(&ctx)))
        {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!("console: rendering {name}: {e:#}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be made",
                )
                    .into_response()
            }
        }
    }
}

/// `GET /style.css`.
pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles_and_values_are_escaped() {
        let t = Templates::new().unwrap();
        let r = t.env.get_template("error.html").unwrap();
        let html = r
            .render(minijinja::context! { title => "x", message => "<script>alert(1)</script>" })
            .unwrap();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
    }
}
