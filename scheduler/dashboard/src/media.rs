//! The packaged outputs a task page plays, served from under the
//! dashboard's `--media-root` only: the path comes from the task's own
//! result, is resolved (symlinks included) and must stay inside both the
//! package's directory and the media root.

use std::path::{Component, Path as FsPath, PathBuf};

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use spool_broker::TaskId;
use spool_sdk::video::PackageOutput;

use crate::error::{Error, Result};
use crate::pages::parse;
use crate::state::AppState;

/// The directory a package's manifests share (their deepest common
/// ancestor), when it lies under the media root; otherwise why the
/// outputs cannot be played here.
///
/// # Errors
///
/// The reason in words.
pub fn package_base(state: &AppState, output: &PackageOutput) -> Result<PathBuf, String> {
    let Some(root) = &state.config.media_root else {
        return Err("Start the dashboard with --media-root to play the outputs here.".to_owned());
    };
    let root = root
        .canonicalize()
        .map_err(|_| "The media root does not exist on this host.".to_owned())?;
    let manifests: Vec<&PathBuf> = output
        .hls_master
        .iter()
        .chain(output.dash_mpd.iter())
        .collect();
    let Some(first) = manifests.first() else {
        return Err("The package wrote no manifest.".to_owned());
    };
    let mut base = first.parent().map(FsPath::to_path_buf).unwrap_or_default();
    for m in &manifests[1..] {
        while !m.starts_with(&base) {
            if !base.pop() {
                break;
            }
        }
    }
    let base = base
        .canonicalize()
        .map_err(|_| "The outputs are not on this host (or were removed).".to_owned())?;
    if !base.starts_with(&root) || base == root {
        return Err("The outputs lie outside the dashboard's --media-root.".to_owned());
    }
    Ok(base)
}

/// `GET /tasks/{id}/media/{*path}`: one file of a package task's outputs.
pub async fn serve(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response> {
    let id: TaskId = parse(&id, "task id")?;
    let relative = FsPath::new(&path);
    if path.len() > 512
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(Error::BadInput("not a path inside the outputs".to_owned()));
    }
    let record = state
        .store()?
        .get(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("the job store has no task {id}")))?;
    let output = match record.output::<PackageOutput>() {
        Ok(Some(output)) if record.name == "video.package" => output,
        _ => {
            return Err(Error::NotFound(
                "this task has no packaged outputs".to_owned(),
            ));
        }
    };
    let base = package_base(&state, &output).map_err(Error::NotFound)?;
    let file = base
        .join(relative)
        .canonicalize()
        .map_err(|_| Error::NotFound("no such output file".to_owned()))?;
    if !file.starts_with(&base) || !file.is_file() {
        return Err(Error::NotFound("no such output file".to_owned()));
    }
    let bytes = tokio::fs::read(&file)
        .await
        .map_err(|_| Error::NotFound("no such output file".to_owned()))?;
    let mut response = bytes.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&file)),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

fn content_type(file: &FsPath) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("mpd") => "application/dash+xml",
        Some("ts") => "video/mp2t",
        Some("m4s") => "video/iso.segment",
        Some("mp4" | "m4v") => "video/mp4",
        Some("m4a") => "audio/mp4",
        Some("aac") => "audio/aac",
        Some("vtt") => "text/vtt",
        _ => "application/octet-stream",
    }
}
