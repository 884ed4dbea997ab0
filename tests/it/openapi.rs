//! The committed spec in `openapi/` must equal the served one.
use crate::support::{TestServer, client};

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/docket.json");

#[tokio::test]
async fn committed_spec_matches_served_spec() {
    let s = TestServer::start().await;
    let served = client().get(s.url("/api/v1/openapi.json")).send().await.unwrap().text().await.unwrap();
    s.stop().await;
    if std::env::var("UPDATE_OPENAPI").is_ok() {
        std::fs::write(COMMITTED, &served).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == served,
        "openapi/docket.json differs from the spec the server serves.\n\
         If the API change is intended, regenerate it with:\n\n    UPDATE_OPENAPI=1 cargo test --test it openapi\n\n\
         and commit the result."
    );
    let spec: serde_json::Value = serde_json::from_str(&served).unwrap();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let desc = op["description"].as_str().unwrap_or_default();
            assert!(desc.contains("Requires permission `"), "{method} {path} must declare its permission");
            assert!(op["operationId"].is_string(), "{method} {path} needs an operation id");
        }
    }
}
