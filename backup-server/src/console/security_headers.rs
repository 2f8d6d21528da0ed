//! The headers every answer carries: a strict Content-Security-Policy (nothing but the
//! console's own style sheet loads; no script, image, frame or remote request of any
//! kind), no framing, no MIME sniffing, no referrer, and nothing cached (pages show mail).

use axum::http::header::{HeaderName, HeaderValue};
use axum::http::HeaderMap;

/// The Content-Security-Policy of every page.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'none'; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the headers to an answer's.
pub fn add(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    };
    set(h, "content-security-policy", CSP);
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cache-control", "no-store");
    set(h, "cross-origin-opener-policy", "same-origin");
}
