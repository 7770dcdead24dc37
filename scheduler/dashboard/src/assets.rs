//! The static files, built into the binary: no Node build step and nothing
//! to install beside it. The Shaka Player is vendored as its compiled
//! build from the npm registry, with its license
//! (`assets/vendor/shaka-player/`).

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
#[derive(Debug)]
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../assets/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/app.js"),
    },
    Asset {
        name: "vendor/shaka-player/shaka-player.compiled.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/vendor/shaka-player/shaka-player.compiled.js"),
    },
    Asset {
        name: "vendor/shaka-player/LICENSE",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("../assets/vendor/shaka-player/LICENSE"),
    },
];

/// The URL of asset `name`, versioned by the build so a new binary's
/// files are never served from an old cache.
#[must_use]
pub fn url(name: &str) -> String {
    format!("/assets/{name}?v={}", env!("CARGO_PKG_VERSION"))
}

/// `GET /assets/{*name}`: an embedded file, or 404.
pub async fn serve(Path(name): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    let mut response = asset.bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
