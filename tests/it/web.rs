//! The embedded web shell and the API docs page.
use crate::support::{TestServer, client};

#[tokio::test]
async fn shell_assets_etags_and_spa_fallback() {
    let s = TestServer::start().await;
    let c = client();
    let index = c.get(s.url("/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(index.headers()["cache-control"], "no-cache");
    let html = index.text().await.unwrap();
    assert!(html.contains("<script type=\"module\" src=\"/app.js\">"), "scripts are files, never inline");
    assert!(!html.contains("<script>"));

    let js = c.get(s.url("/app.js")).send().await.unwrap();
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    let etag = js.headers()["etag"].to_str().unwrap().to_string();
    let again = c.get(s.url("/app.js")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(c.get(s.url("/app.css")).send().await.unwrap().headers()["content-type"], "text/css; charset=utf-8");

    let client_route = c.get(s.url("/matters/42")).send().await.unwrap();
    assert_eq!(client_route.status(), 200, "client-side routes get the app");
    assert!(client_route.text().await.unwrap().contains("id=\"app\""));
    assert_eq!(c.get(s.url("/missing.png")).send().await.unwrap().status(), 404);
    s.stop().await;
}

#[tokio::test]
async fn api_docs_page_needs_no_inline_script() {
    let s = TestServer::start().await;
    let c = client();
    let page = c.get(s.url("/api/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("/api/docs/swagger-ui-bundle.js") && !html.contains("<script>"));
    for asset in ["/api/docs/swagger-ui-bundle.js", "/api/docs/swagger-ui.css", "/api/docs/init.js"] {
        let r = c.get(s.url(asset)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(r.text().await.unwrap().len() > 20, "{asset} has content");
    }
    s.stop().await;
}
