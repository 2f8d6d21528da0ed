//! Sessions: a random id in a cookie, the session (who signed in, its CSRF token, its
//! times) kept in memory. Restarting the console signs everyone out.
//!
//! Every visitor gets a session on the first page, signed in or not, so that the sign-in
//! form carries a CSRF token too; signing in replaces the session (a new id: an id known
//! before sign-in is worth nothing after). A session ends after [`IDLE`] without a request
//! or [`LIFETIME`] in all. The cookie is `HttpOnly`, `SameSite=Strict`, `Path=/`, and
//! `Secure` unless the console is reached over plain HTTP on loopback
//! ([`Sessions::cookie`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cookie::{Cookie, SameSite};
use subtle::ConstantTimeEq;

use super::accounts::random_hex;

/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, however busy.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at most; past it the oldest go first (a flood of anonymous visits
/// cannot grow memory without bound).
pub const MAX_SESSIONS: usize = 10_000;
/// The cookie's name.
pub const COOKIE: &str = "mailbackup_console";

/// One session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The id (the cookie's value).
    pub id: String,
    /// Who signed in (`None`: not yet).
    pub who: Option<String>,
    /// The token every form of this session carries.
    pub csrf: String,
    created: Instant,
    last: Instant,
}

impl Session {
    /// Whether `token` is this session's CSRF token (compared in constant time).
    pub fn csrf_ok(&self, token: &str) -> bool {
        !token.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(token.as_bytes()))
    }
}

/// The sessions of one console process.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    secure: bool,
}

impl Sessions {
    /// No sessions yet; cookies `Secure` when `secure`.
    pub fn new(secure: bool) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            secure,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic elsewhere while holding it leaves a map still whole: keep using it.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live session of the cookie's id, its last use now.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.lock();
        let s = map.get_mut(id)?;
        if now.duration_since(s.last) > IDLE || now.duration_since(s.created) > LIFETIME {
            map.remove(id);
            return None;
        }
        s.last = now;
        Some(s.clone())
    }

    /// A new session for `who` (`None`: not signed in), with a new id and CSRF token.
    pub fn create(&self, who: Option<String>) -> Session {
        let now = Instant::now();
        let s = Session {
            id: random_hex(32),
            who,
            csrf: random_hex(32),
            created: now,
            last: now,
        };
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, v| now.duration_since(v.last) <= IDLE);
            if map.len() >= MAX_SESSIONS {
                if let Some(oldest) = map.values().min_by_key(|v| v.last).map(|v| v.id.clone()) {
                    map.remove(&oldest);
                }
            }
        }
        map.insert(s.id.clone(), s.clone());
        s
    }

    /// Ends the session `id`.
    pub fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The Set-Cookie value carrying `id`.
    pub fn cookie(&self, id: &str) -> String {
        Cookie::build((COOKIE, id.to_owned()))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(self.secure)
            .build()
            .to_string()
    }

    /// The Set-Cookie value that removes the cookie.
    pub fn expired_cookie(&self) -> String {
        Cookie::build((COOKIE, ""))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(self.secure)
            .max_age(cookie::time::Duration::ZERO)
            .build()
            .to_string()
    }
}

/// The session id in a request's Cookie headers, if any.
pub fn id_from_cookies<'a>(headers: impl Iterator<Item = &'a str>) -> Option<String> {
    headers
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_and_checks_its_token() {
        let s = Sessions::new(true);
        let a = s.create(None);
        let b = s.create(Some("ann".into()));
        assert_ne!(a.id, b.id);
        assert_ne!(a.csrf, b.csrf);
        assert_eq!(s.get(&b.id).unwrap().who.as_deref(), Some("ann"));
        assert!(b.csrf_ok(&b.csrf));
        assert!(!b.csrf_ok(&a.csrf));
        assert!(!b.csrf_ok(""));
        s.end(&b.id);
        assert!(s.get(&b.id).is_none());
        let c = s.cookie(&a.id);
        for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(!Sessions::new(false).cookie("x").contains("Secure"));
        let header = format!("other=1; {COOKIE}={}", a.id);
        assert_eq!(id_from_cookies([header.as_str()].into_iter()), Some(a.id));
    }
}
