//! TLS: protocol versions, PEM files reloaded on SIGHUP without dropping
//! connections, and graceful shutdown of the real binary on SIGTERM.
use crate::support::{TestCa, TestServer, client_trusting, docket_bin, eventually, free_port, run_docket};
use std::io::{Read as _, Write as _};
use std::time::Duration;

async fn files_server(ca: &TestCa) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = ca.write(dir.path());
    let s = TestServer::start_with(|c| {
        c.tls.mode = docket::config::TlsMode::Files;
        c.tls.cert_file = Some(cert);
        c.tls.key_file = Some(key);
    })
    .await;
    std::mem::forget(dir);
    s
}

/// A TLS 1.1 ClientHello (no extensions), as an old client would send it.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]);
    let mut hs = vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x02, (hs.len() >> 8) as u8, hs.len() as u8];
    record.extend_from_slice(&hs);
    record
}

#[tokio::test]
async fn tls_12_and_13_accepted_11_refused() {
    let ca = TestCa::new("versions");
    let s = files_server(&ca).await;
    for (min, max) in [
        (reqwest::tls::Version::TLS_1_2, reqwest::tls::Version::TLS_1_2),
        (reqwest::tls::Version::TLS_1_3, reqwest::tls::Version::TLS_1_3),
    ] {
        let c = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap()])
            .min_tls_version(min)
            .tls_version_max(max)
            .build()
            .unwrap();
        let r = c.get(s.url("/healthz")).send().await.unwrap_or_else(|e| panic!("{min:?} refused: {e:?}"));
        assert_eq!(r.status(), 200);
    }
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.write_all(&tls11_client_hello()).unwrap();
        let mut buf = [0u8; 7];
        let n = tcp.read(&mut buf).unwrap_or(0);
        buf[..n].to_vec()
    })
    .await
    .unwrap();
    assert!(!answer.is_empty(), "the server must answer a TLS 1.1 hello with an alert");
    assert_eq!(answer[0], 0x15, "a TLS alert, not a ServerHello: {answer:?}");
    assert_eq!(answer[5], 2, "a fatal alert: {answer:?}");
    s.stop().await;
}

#[tokio::test]
async fn serve_reloads_files_on_sighup_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (TestCa::new("first"), TestCa::new("second"));
    let (cert, key, _) = first.write(dir.path());
    let (https, http) = (free_port(), free_port());
    let data = dir.path().join("data");
    let config = dir.path().join("docket.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[server]\nlisten = [\"127.0.0.1:{https}\"]\nredirect_listen = [\"127.0.0.1:{http}\"]\n\
             [tls]\nmode = \"files\"\ncert_file = {cert:?}\nkey_file = {key:?}\n"
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let (code, out, err) = run_docket(&["key", "generate", "--config", cfg], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut child = std::process::Command::new(docket_bin())
        .args(["serve", "--config", cfg])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The next notification that starts with `prefix` (STATUS= lines come in between).
    let next = |prefix: &str| loop {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).expect("a systemd notification");
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message.starts_with(prefix) {
            break message;
        }
    };
    next("READY=1");
    let url = format!("https://localhost:{https}/healthz");
    let old = client_trusting(&first.ca_pem);
    assert!(
        eventually(Duration::from_secs(20), async || old.get(&url).send().await.is_ok()).await,
        "server did not start"
    );

    second.write(dir.path());
    let kill = |sig: &str| std::process::Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
    assert!(kill("-HUP").success());
    let new = client_trusting(&second.ca_pem);
    assert!(
        eventually(Duration::from_secs(10), async || new.get(&url).send().await.is_ok()).await,
        "new certificate not served"
    );
    let kept = old.get(&url).send().await;
    assert!(kept.is_ok_and(|r| r.status() == 200), "the connection opened before the reload keeps working");
    assert!(client_trusting(&TestCa::new("third").ca_pem).get(&url).send().await.is_err(), "TLS is really verified");

    assert!(kill("-TERM").success());
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
    next("STOPPING=1");
    let mut logs = String::new();
    child.stdout.take().unwrap().read_to_string(&mut logs).unwrap();
    let request_line = logs.lines().find(|l| l.contains("\"message\":\"request\"")).expect("request logs");
    let v: serde_json::Value = serde_json::from_str(request_line).expect("JSON logs");
    assert!(v["span"]["request_id"].is_string(), "every request line carries the request id: {request_line}");
    assert!(logs.contains("reloaded the TLS certificate"));
    assert!(!dir.path().join("data/control.sock").exists(), "the control socket is removed on exit");
}
