//! The embedded web app (`web/`, embedded with rust-embed): correct content
//! types, ETags with 304s, and the SPA fallback to `index.html` for client routes.
use poem::http::{StatusCode, header};
use poem::{Request, Response};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "web/"]
struct Assets;

/// Serves `path` from the embedded web app.
pub fn serve(req: &Request) -> poem::Result<Response> {
    let path = req.uri().path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let (name, file) = match Assets::get(path) {
        Some(f) => (path, f),
        // A path without an extension is a client-side route: hand it to the app.
        None if !path.rsplit('/').next().unwrap_or("").contains('.') => match Assets::get("index.html") {
            Some(f) => ("index.html", f),
            None => return Err(poem::Error::from_status(StatusCode::NOT_FOUND)),
        },
        None => return Err(poem::Error::from_status(StatusCode::NOT_FOUND)),
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let cache = if name.ends_with(".html") { "no-cache" } else { "public, max-age=3600, must-revalidate" };
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let builder = Response::builder().header(header::ETAG, etag).header(header::CACHE_CONTROL, cache);
    if fresh {
        return Ok(builder.status(StatusCode::NOT_MODIFIED).finish());
    }
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let content_type = if mime.type_() == "text" || mime.subtype() == "javascript" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    Ok(builder.header(header::CONTENT_TYPE, content_type).body(file.data.into_owned()))
}
