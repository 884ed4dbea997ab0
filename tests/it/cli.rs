//! The command line: config errors and exit codes, admin commands with the
//! server down (direct) and up (control socket), key rotation, secrets at rest.
use crate::support::{TestServer, client, run_docket};
use docket::store::{OrgId, OrgTask, OrgTaskContext};
use std::os::unix::fs::PermissionsExt as _;

fn write_config(dir: &std::path::Path, body: &str) -> String {
    let path = dir.join("docket.toml");
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn config_errors_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "[tls]\nmode = \"files\"\ncert_fiel = \"/x\"\n");
    let (code, _, err) = run_docket(&["config", "check", "--config", &cfg], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`tls.cert_fiel`") && err.contains("unknown field") && err.contains("fix:"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");

    let cfg = write_config(dir.path(), "[tls]\nmode = \"off\"\n");
    let (code, _, err) =
        run_docket(&["config", "check", "--config", &cfg], &[("DOCKET_SERVER__MAX_BODY_BYTES", "big")]);
    assert_eq!(code, 2);
    assert!(err.contains("DOCKET_SERVER__MAX_BODY_BYTES") && err.contains("whole number"), "{err}");

    let (code, _, err) = run_docket(&["serve", "--config", "/nonexistent/docket.toml"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/docket.toml"), "{err}");

    let cfg = write_config(dir.path(), "[tls]\nmode = \"acme\"\n");
    let (code, _, err) = run_docket(&["config", "check", "--config", &cfg], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("tls.acme.domains"), "{err}");

    let (code, _, err) = run_docket(&["org", "list"], &[]);
    assert_eq!(code, 2, "admin commands must be told which instance: {err}");
    assert!(err.contains("--data-dir"));
}

#[test]
fn config_check_prints_provenance_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "[tls]\nmode = \"off\"\n[metrics]\ntoken = \"very-secret-scrape\"\n");
    let (code, out, err) = run_docket(&["config", "check", "--config", &cfg], &[("DOCKET_LOG__LEVEL", "debug")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tls.mode = \"off\"    # file"), "{out}");
    assert!(out.contains("log.level = \"debug\"    # environment variable DOCKET_LOG__LEVEL"), "{out}");
    assert!(!out.contains("very-secret-scrape") && out.contains("[redacted]"), "{out}");
}

#[test]
fn admin_commands_work_directly_on_a_stopped_instance() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (code, out, err) = run_docket(&["org", "list", "--data-dir", d], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("docket key generate"), "a missing key names the fix: {err}");
    assert_eq!(run_docket(&["key", "generate", "--data-dir", d], &[]).0, 0);
    let (code, _, err) = run_docket(&["key", "generate", "--data-dir", d], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    let (code, out, err) = run_docket(&["org", "create", "--slug", "acme", "--name", "Acme LLP", "--data-dir", d], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created org acme"));
    let (code, _, err) = run_docket(&["org", "create", "--slug", "acme", "--name", "Again", "--data-dir", d], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    let (code, out, _) =
        run_docket(&["token", "create", "--org", "acme", "--role", "auditor", "--name", "ci", "--data-dir", d], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("dkt_") && out.contains("role=auditor"), "{out}");
    let (code, _, err) =
        run_docket(&["token", "create", "--org", "nope", "--role", "staff", "--name", "x", "--data-dir", d], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("docket org list"), "{err}");
    let (code, _, err) =
        run_docket(&["token", "create", "--org", "acme", "--role", "king", "--name", "x", "--data-dir", d], &[]);
    assert_eq!(code, 2, "clap usage errors exit 2: {err}");

    let key = data.join("keys/master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, _, err) = run_docket(&["org", "list", "--data-dir", d], &[]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("chmod 600 {}", key.display())), "{err}");
}

#[tokio::test]
async fn admin_commands_reach_a_running_server_and_rotate_the_key() {
    let s = TestServer::start().await;
    let data = s.dir.path().join("data");
    let d = data.to_str().unwrap().to_string();
    let state = s.running.as_ref().unwrap().state.clone();
    let scope = OrgTaskContext::new(OrgTask::Test).org_scope(OrgId(1));
    let keyring = state.keys.current();
    state
        .store
        .write(|w| w.put_secret(&scope, &*keyring, "clio.refresh_token", b"PLAINTEXT-CLIO-REFRESH-TOKEN-42"))
        .unwrap();

    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_docket(&args, &[])
        })
    };
    let (code, out, err) = run(vec![
        "org".into(),
        "create".into(),
        "--slug".into(),
        "live".into(),
        "--name".into(),
        "Live".into(),
        "--data-dir".into(),
        d.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "the store is locked by the server, so this went through the socket: {err}");
    assert!(out.contains("created org live"));
    assert!(state.store.org_by_slug("live").unwrap().is_some());

    let old_recipient = keyring.recipient();
    let (code, out, err) = run(vec!["key".into(), "rotate".into(), "--data-dir".into(), d.clone()]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("re-sealed") && out.contains("--confirm"), "{out}");
    let new = state.keys.current();
    assert_ne!(new.recipient(), old_recipient);
    let opened = state.store.read(|r| r.get_secret(&scope, &new, "clio.refresh_token")).unwrap().unwrap();
    assert_eq!(opened.expose(), b"PLAINTEXT-CLIO-REFRESH-TOKEN-42");
    assert!(data.join("keys/master.key.previous").exists());
    let r = client().get(s.url("/api/v1/org")).bearer_auth(&s.admin_token).send().await.unwrap();
    assert_eq!(r.status(), 200, "the server keeps serving after rotation");
    let events = s.audit_events("key.rotate").await;
    assert_eq!(events[0]["details"]["recipient"], new.recipient(), "key rotation is audited: {events:?}");
    let (code, out, _) =
        run(vec!["key".into(), "rotate".into(), "--confirm".into(), "--data-dir".into(), d.clone()]).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(!data.join("keys/master.key.previous").exists());

    let tls_bundle = state.store.read(|r| r.get_system_secret(&new, "tls.self_signed")).unwrap().unwrap();
    let tls_text = String::from_utf8(tls_bundle.expose().to_vec()).unwrap();
    let key_line = tls_text.split("\\n").find(|l| l.len() > 40 && !l.contains("BEGIN")).unwrap().to_string();
    drop((state, new, keyring));
    let _dir = s.stop().await;

    let raw = std::fs::read(data.join("docket.redb")).unwrap();
    let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(b"PLAINTEXT-CLIO-REFRESH-TOKEN-42"), "secrets are sealed at rest");
    assert!(!contains(key_line.as_bytes()), "the TLS private key is sealed at rest");
    assert!(contains(b"age-encryption.org/v1"), "sealed values are age ciphertexts");

    let (code, _, err) = run_docket(&["org", "list", "--data-dir", &d], &[]);
    assert_eq!(code, 0, "the rotated key opens the store after restart: {err}");
}

#[test]
fn packaged_example_config_is_valid_and_complete() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/docket.toml");
    let (code, out, err) = run_docket(&["config", "check", "--config", example], &[]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(example).unwrap();
    for line in out.lines() {
        let key = line.split(" = ").next().unwrap();
        let leaf = key.rsplit('.').next().unwrap();
        assert!(
            text.contains(&format!("{leaf} =")) || text.contains(&format!("{leaf}_file =")),
            "{key} is not documented"
        );
    }
}
