//! A message made safe to show in a browser: its headers as text, and its text part, or
//! its HTML part cleaned by `ammonia`.
//!
//! The cleaning keeps structure and formatting (paragraphs, tables, lists, emphasis,
//! links) and drops everything that runs or fetches: scripts, event handlers, styles,
//! forms, frames, and every image, media and embedded object, so no remote content is
//! loaded (a tracking pixel reports nothing). Links keep `http`, `https` and `mailto` URLs
//! only, open nothing by themselves, and send no referrer. The page's Content-Security-
//! Policy (`security_headers.rs`) forbids scripts and remote loads as well, should
//! anything slip past.

use std::collections::HashSet;

use mail_parser::{Address, Message, MessageParser, PartType};

/// The longest message parsed for display: larger ones show their first bytes only
/// (a download gets the whole message).
pub const MAX_PARSED: usize = 8 << 20;
/// The longest header block read for a listing.
pub const MAX_HEADER: usize = 64 << 10;

/// A message as the console shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Shown {
    /// From, as `Name <address>`.
    pub from: String,
    /// To.
    pub to: String,
    /// Cc.
    pub cc: String,
    /// Subject (encoded words decoded).
    pub subject: String,
    /// The Date header.
    pub date: String,
    /// Message-ID.
    pub message_id: String,
    /// The HTML part, cleaned; empty when the message has none.
    pub html: String,
    /// The text part (shown when there is no HTML part).
    pub text: String,
    /// Whether only the first [`MAX_PARSED`] bytes were read.
    pub cut: bool,
}

fn addresses(a: Option<&Address<'_>>) -> String {
    let Some(a) = a else {
        return String::new();
    };
    a.iter()
        .map(|x| match (x.name(), x.address()) {
            (Some(n), Some(ad)) => format!("{n} <{ad}>"),
            (None, Some(ad)) => ad.to_owned(),
            (Some(n), None) => n.to_owned(),
            (None, None) => String::new(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The headers alone (From, To, Cc, Subject, Date, Message-ID) of a message's header block.
pub fn headers(raw: &[u8]) -> Shown {
    MessageParser::default()
        .parse_headers(raw)
        .map(|m| header_fields(&m))
        .unwrap_or_default()
}

/// The header fields shown, of a parsed message.
fn header_fields(m: &Message<'_>) -> Shown {
    Shown {
        from: addresses(m.from()),
        to: addresses(m.to()),
        cc: addresses(m.cc()),
        subject: m.subject().unwrap_or_default().to_owned(),
        date: m.date().map(|d| d.to_rfc3339()).unwrap_or_default(),
        message_id: m.message_id().unwrap_or_default().to_owned(),
        ..Shown::default()
    }
}

/// The whole message, its body made safe.
pub fn message(raw: &[u8]) -> Shown {
    let cut = raw.len() > MAX_PARSED;
    let raw = &raw[..raw.len().min(MAX_PARSED)];
    let Some(m) = MessageParser::default().parse(raw) else {
        return Shown {
            text: String::from_utf8_lossy(raw).into_owned(),
            cut,
            ..Shown::default()
        };
    };
    let html = m
        .html_body
        .first()
        .and_then(|&id| m.parts.get(id as usize))
        .and_then(|p| match &p.body {
            PartType::Html(h) => Some(clean_html(h)),
            _ => None,
        })
        .unwrap_or_default();
    let text = if html.is_empty() {
        m.body_text(0).map(|t| t.into_owned()).unwrap_or_default()
    } else {
        String::new()
    };
    Shown {
        html,
        text,
        cut,
        ..header_fields(&m)
    }
}

/// An email's HTML cleaned for display: no scripts, styles, images or other remote
/// content; links to http, https and mailto only, `rel="noopener noreferrer nofollow"`.
pub fn clean_html(html: &str) -> String {
    let mut b = ammonia::Builder::default();
    // Nothing that loads anything.
    for t in [
        "img", "picture", "source", "video", "audio", "track", "map", "area",
    ] {
        b.rm_tags(std::iter::once(t));
    }
    b.url_schemes(HashSet::from(["http", "https", "mailto"]))
        .link_rel(Some("noopener noreferrer nofollow"))
        .strip_comments(true)
        .clean(html)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_images_and_handlers_are_removed_and_text_kept() {
        let h = clean_html(
            "<p onclick=\"x()\">Hello <b>Bob</b></p><script>document.title='x'</script>\
             <img src=\"http://127.0.0.1:9/pixel.png\"><a href=\"javascript:alert(1)\">a</a>\
             <a href=\"https://example.com/\">b</a><style>body{background:url(http://x/)}</style>\
             <iframe src=\"http://x/\"></iframe>",
        );
        assert!(h.contains("Hello <b>Bob</b>"), "{h}");
        for gone in [
            "script",
            "img",
            "onclick",
            "javascript",
            "style",
            "iframe",
            "pixel",
        ] {
            assert!(!h.contains(gone), "{gone} in {h}");
        }
        assert!(h.contains("href=\"https://example.com/\""), "{h}");
        assert!(h.contains("noreferrer"), "{h}");
    }

    #[test]
    fn headers_and_the_right_part_are_shown() {
        let raw = b"From: =?UTF-8?Q?Bj=C3=B6rn?= <bjorn@example.com>\r\n\
            To: a@example.com, B <b@example.com>\r\n\
            Subject: =?UTF-8?B?SW52b2ljZSDigqw=?=\r\n\
            Date: Tue, 1 Dec 2026 10:00:00 +0000\r\n\
            Message-ID: <m1@example.com>\r\n\
            Content-Type: multipart/alternative; boundary=b\r\n\r\n\
            --b\r\nContent-Type: text/plain\r\n\r\nplain body\r\n\
            --b\r\nContent-Type: text/html\r\n\r\n<p>html <script>x</script>body</p>\r\n--b--\r\n";
        let s = message(raw);
        assert_eq!(s.from, "Björn <bjorn@example.com>");
        assert_eq!(s.to, "a@example.com, B <b@example.com>");
        assert_eq!(s.subject, "Invoice €");
        assert_eq!(s.message_id, "m1@example.com");
        assert!(s.date.starts_with("2026-12-01T10:00:00"), "{}", s.date);
        assert_eq!(s.html.trim(), "<p>html body</p>");
        assert_eq!(s.text, "");
        assert_eq!(headers(raw).subject, "Invoice €");
        let plain = message(b"Subject: hi\r\n\r\n<b>not html</b>\r\n");
        assert_eq!(plain.html, "");
        assert_eq!(plain.text.trim(), "<b>not html</b>");
    }
}
