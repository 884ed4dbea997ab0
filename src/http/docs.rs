//! `/api/docs`: Swagger UI, split into separate files so the page needs no inline
//! script (the CSP forbids it). The UI's code comes from poem-openapi's bundle.
use poem::http::header;
use poem::{Response, Route, endpoint::make_sync};

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>docket API</title>
<link rel="stylesheet" href="/api/docs/swagger-ui.css">
</head>
<body>
<div id="ui"></div>
<script src="/api/docs/swagger-ui-bundle.js"></script>
<script src="/api/docs/init.js"></script>
</body>
</html>
"#;

const INIT: &str = "SwaggerUIBundle({ dom_id: '#ui', url: '/api/v1/openapi.json', deepLinking: true });\n";

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    text.split_once(open).and_then(|(_, rest)| rest.split_once(close)).map_or("", |(inner, _)| inner)
}

fn file(content_type: &'static str, body: String) -> impl Fn(poem::Request) -> Response + Send + Sync + 'static {
    move |_| {
        Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CACHE_CONTROL, "public, max-age=3600")
            .body(body.clone())
    }
}

/// The docs routes, built from poem-openapi's single-page Swagger UI.
pub fn routes(swagger_html: &str) -> Route {
    let css = between(swagger_html, "<style charset=\"UTF-8\">", "</style>").to_string();
    let js = between(swagger_html, "<script charset=\"UTF-8\">", "</script>").to_string();
    Route::new()
        .at("/", poem::get(make_sync(file("text/html; charset=utf-8", PAGE.to_string()))))
        .at("/swagger-ui.css", poem::get(make_sync(file("text/css; charset=utf-8", css))))
        .at("/swagger-ui-bundle.js", poem::get(make_sync(file("text/javascript; charset=utf-8", js))))
        .at("/init.js", poem::get(make_sync(file("text/javascript; charset=utf-8", INIT.to_string()))))
}
