//! Who may use the dashboard, and which actions are allowed.
//!
//! - On a loopback address the dashboard needs nothing; on any other it
//!   refuses to start without credentials ([`Access::check_listen`]).
//! - Credentials are a bearer token (`Authorization: Bearer`, or once as
//!   `?token=` in a browser, which sets an `HttpOnly`, `SameSite=Strict`
//!   cookie and redirects to the same URL without it) or HTTP basic
//!   credentials. They are compared in constant time and never logged.
//! - Actions are POSTs: refused in read-only mode, refused when the
//!   browser says they come from another site (`Sec-Fetch-Site`, `Origin`),
//!   and refused without the form's CSRF token, which only a page of this
//!   dashboard holds.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use subtle::ConstantTimeEq as _;

use crate::error::{Error, Result};
use crate::state::AppState;

/// The cookie that carries the token in a browser.
pub const TOKEN_COOKIE: &str = "spool_dashboard_token";

/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// A credential: its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    #[must_use]
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// Whether `other` is this secret, in constant time.
    #[must_use]
    pub fn matches(&self, other: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(other.as_bytes()))
    }

    /// The secret itself.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Who may use the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Anyone who reaches the address: loopback only.
    #[default]
    Open,
    /// Whoever presents this token.
    Token(Secret),
    /// Whoever presents these basic credentials.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
}

/// The shortest token accepted: guessing must be hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

impl Access {
    /// The token in `path`'s first line.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the file cannot be read or the token is
    /// shorter than [`MIN_TOKEN_LEN`].
    pub fn token_file(path: &Path) -> Result<Self> {
        let token = first_line(path, "token")?;
        if token.len() < MIN_TOKEN_LEN {
            return Err(Error::Config(format!(
                "the token in {} is shorter than {MIN_TOKEN_LEN} characters",
                path.display()
            )));
        }
        Ok(Self::Token(Secret::new(token)))
    }

    /// Basic credentials from `path`'s first line, `user:password`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the file cannot be read or its line is not
    /// `user:password` with both parts set.
    pub fn basic_file(path: &Path) -> Result<Self> {
        let line = first_line(path, "basic credentials")?;
        match line.split_once(':') {
            Some((user, password)) if !user.is_empty() && password.len() >= 8 => Ok(Self::Basic {
                user: user.to_owned(),
                password: Secret::new(password),
            }),
            _ => Err(Error::Config(format!(
                "{} must hold one line user:password (a password of 8 characters or more)",
                path.display()
            ))),
        }
    }

    /// Refuses a non-loopback `addr` without credentials.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the flags that give credentials.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<()> {
        if matches!(self, Self::Open) && !addr.ip().is_loopback() {
            return Err(Error::Config(format!(
                "{addr} is not a loopback address: give --token-file or --basic-auth-file, \
                 or listen on 127.0.0.1"
            )));
        }
        Ok(())
    }

    /// Whether `headers` carry these credentials.
    fn admits(&self, headers: &HeaderMap) -> bool {
        match self {
            Self::Open => true,
            Self::Token(token) => {
                bearer(headers).is_some_and(|t| token.matches(t))
                    || cookie(headers, TOKEN_COOKIE).is_some_and(|t| token.matches(t))
            }
            Self::Basic { user, password } => basic(headers).is_some_and(|(u, p)| {
                // Both compared, always: the time does not say which failed.
                let user_ok = Secret::new(user.clone()).matches(&u);
                let password_ok = password.matches(&p);
                user_ok & password_ok
            }),
        }
    }
}

fn first_line(path: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the {what} file {}: {e}",
            path.display()
        ))
    })?;
    let line = text.lines().next().unwrap_or("").trim().to_owned();
    if line.is_empty() {
        return Err(Error::Config(format!("{} is empty", path.display())));
    }
    Ok(line)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The value of cookie `name`, if the request has it.
#[must_use]
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// The paths anyone may read: probes and the static assets hold nothing
/// about the queues.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// The middleware in front of every route: credentials, then the rules
/// for actions.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if !is_public(&path) {
        if let Some(response) = token_in_query(&state.config.access, &request) {
            return response;
        }
        if !state.config.access.admits(request.headers()) {
            return refuse(&state.config.access);
        }
    }
    if request.method() == Method::POST {
        if let Err(e) = check_action(state.config.read_only, request.headers()) {
            return e.into_response();
        }
    } else if request.method() != Method::GET && request.method() != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "GET or POST only\n").into_response();
    }
    next.run(request).await
}

/// `?token=` on a GET: the right one sets the cookie and redirects to the
/// same URL without it, so it stays out of the history and the logs.
fn token_in_query(access: &Access, request: &Request<Body>) -> Option<Response> {
    let Access::Token(token) = access else {
        return None;
    };
    let query = request.uri().query()?;
    let mut given = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("token", value)) => given = Some(value),
            _ => kept.push(pair),
        }
    }
    let given = given?;
    if !token.matches(given) {
        return Some(refuse(access));
    }
    // A path such as `//elsewhere` would redirect off the dashboard.
    let mut location = format!("/{}", request.uri().path().trim_start_matches('/'));
    if !kept.is_empty() {
        location.push('?');
        location.push_str(&kept.join("&"));
    }
    let mut response = Redirect::to(&location).into_response();
    let cookie = format!(
        "{TOKEN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        token.expose()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Some(response)
}

fn refuse(access: &Access) -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "this dashboard needs credentials: a bearer token (open it once with ?token=...) or \
         basic credentials\n",
    )
        .into_response();
    if matches!(access, Access::Basic { .. }) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"spool-dashboard\", charset=\"UTF-8\""),
        );
    }
    response
}

/// The rules every POST passes before its form is read.
fn check_action(read_only: bool, headers: &HeaderMap) -> Result<()> {
    if read_only {
        return Err(Error::Forbidden(
            "this dashboard is read-only (--read-only)".to_owned(),
        ));
    }
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.to_str(), Ok("same-origin" | "none"))
    {
        return Err(Error::Forbidden(
            "a cross-site request cannot act on the queues".to_owned(),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest.trim_end_matches('/'));
        if host.is_none() || origin_host != host {
            return Err(Error::Forbidden(
                "the request's Origin is not this dashboard".to_owned(),
            ));
        }
    }
    Ok(())
}

/// Checks the CSRF token a form carried; every action handler calls it.
///
/// # Errors
///
/// [`Error::Forbidden`] when it is missing or wrong.
pub fn check_csrf(state: &AppState, given: &str) -> Result<()> {
    if state.csrf.matches(given) {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "the form's CSRF token is missing or stale: reload the page".to_owned(),
        ))
    }
}

/// A fresh random CSRF token: 244 bits from the operating system's CSPRNG
/// by way of two v4 UUIDs.
#[must_use]
pub fn new_csrf_token() -> Secret {
    Secret::new(format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let access = Access::Token(Secret::new("sixteen-chars-token"));
        assert!(!format!("{access:?}").contains("sixteen"));
    }

    #[test]
    fn public_addresses_need_credentials() {
        let public: SocketAddr = "0.0.0.0:9470".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:9470".parse().unwrap();
        assert!(Access::Open.check_listen(public).is_err());
        assert!(Access::Open.check_listen(loopback).is_ok());
        let token = Access::Token(Secret::new("0123456789abcdef"));
        assert!(token.check_listen(public).is_ok());
    }

    #[test]
    fn basic_credentials_are_read_and_checked() {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode("ops:correct horse");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        let access = Access::Basic {
            user: "ops".into(),
            password: Secret::new("correct horse"),
        };
        assert!(access.admits(&headers));
        let wrong = Access::Basic {
            user: "ops".into(),
            password: Secret::new("battery staple"),
        };
        assert!(!wrong.admits(&headers));
    }

    #[test]
    fn actions_from_other_sites_are_refused() {
        let mut same = HeaderMap::new();
        same.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9470"));
        same.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9470"),
        );
        same.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(check_action(false, &same).is_ok());
        assert!(check_action(true, &same).is_err(), "read-only refuses all");

        let mut cross = same.clone();
        cross.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check_action(false, &cross).is_err());

        let mut other_origin = same.clone();
        other_origin.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(check_action(false, &other_origin).is_err());

        let mut null_origin = same.clone();
        null_origin.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_action(false, &null_origin).is_err());

        // A client that sends neither (curl, a script with the token) is
        // left to the CSRF token.
        let mut bare = HeaderMap::new();
        bare.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9470"));
        assert!(check_action(false, &bare).is_ok());
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; spool_dashboard_token=xyz; b=2"),
        );
        assert_eq!(cookie(&headers, TOKEN_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
