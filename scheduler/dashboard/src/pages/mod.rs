//! The pages, one module per area. Each renders with maud, which escapes
//! every interpolated value: a task argument holding `<script>` shows as
//! text.

pub mod beat;
pub mod dead;
pub mod layout;
pub mod overview;
pub mod queue;
pub mod search;
pub mod task;
pub mod video;
pub mod workers;
pub mod workflows;

use maud::Markup;
use serde::Deserialize;

/// A fragment of a page that live updates replace: the element's id and
/// its new content.
#[derive(Debug, Clone)]
pub struct Fragment {
    /// The id of the element whose content it replaces.
    pub id: &'static str,
    /// The new content.
    pub html: Markup,
}

/// The query every page takes after an action redirected to it.
#[derive(Debug, Default, Deserialize)]
pub struct Done {
    /// The action's code ([`layout::flash`]).
    pub done: Option<String>,
}

/// The form every action posts: the CSRF token, and the fields some
/// actions need.
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    /// The CSRF token ([`crate::auth::CSRF_FIELD`]).
    #[serde(default)]
    pub csrf: String,
    /// The confirmation a destructive action asks to be typed.
    #[serde(default)]
    pub confirm: Option<String>,
    /// A dead letter's entry id.
    #[serde(default)]
    pub entry: Option<String>,
}

/// Parses a path segment or field with `parse`, as [`crate::Error::BadInput`]
/// naming `what` on failure.
///
/// # Errors
///
/// [`crate::Error::BadInput`].
pub fn parse<T: std::str::FromStr>(text: &str, what: &str) -> crate::Result<T> {
    text.trim()
        .parse()
        .map_err(|_| crate::Error::BadInput(format!("not a valid {what}")))
}

/// Redirects to `to` with the action's code, after a POST (303: the
/// browser GETs it).
pub fn done(to: &str, code: &str) -> axum::response::Redirect {
    let separator = if to.contains('?') { '&' } else { '?' };
    axum::response::Redirect::to(&format!("{to}{separator}done={code}"))
}
