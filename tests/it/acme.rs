//! ACME against a real Pebble CA on loopback: TLS-ALPN-01 validation through
//! docket's own listener, the certificate served, and cached (sealed) in the
//! store so a restart serves the same certificate without a new order.
use crate::support::{TestCa, TestServer, free_port, in_ci};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const DOMAIN: &str = "docket.test";

struct Pebble {
    children: Vec<Child>,
    directory: String,
    management: String,
    ca: TestCa,
    _dir: tempfile::TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn installed(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts pebble-challtestsrv (DNS: every name → 127.0.0.1) and Pebble, which
/// validates TLS-ALPN-01 on `tls_port`.
fn start_pebble(tls_port: u16) -> Option<Pebble> {
    if !installed("pebble") || !installed("pebble-challtestsrv") {
        assert!(!in_ci(), "CI must install Debian's pebble (see .ci/run)");
        eprintln!("SKIPPED acme test: install Debian's `pebble` package to run it");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("pebble");
    let (cert, key, _) = ca.write(dir.path());
    let (dns, dir_port, mgmt_port, chall_mgmt) = (free_port(), free_port(), free_port(), free_port());
    let config = dir.path().join("pebble.json");
    std::fs::write(
        &config,
        serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{dir_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": cert, "privateKey": key,
            "httpPort": free_port(), "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false
        }})
        .to_string(),
    )
    .unwrap();
    let dns_addr = format!("127.0.0.1:{dns}");
    let chall = Command::new("pebble-challtestsrv")
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", &dns_addr, "-http01", "", "-https01", ""])
        .args(["-tlsalpn01", "", "-management", &format!("127.0.0.1:{chall_mgmt}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pebble = Command::new("pebble")
        .args(["-config", config.to_str().unwrap(), "-dnsserver", &dns_addr])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Some(Pebble {
        children: vec![chall, pebble],
        directory: format!("https://127.0.0.1:{dir_port}/dir"),
        management: format!("https://127.0.0.1:{mgmt_port}"),
        ca,
        _dir: dir,
    })
}

/// The DER of the certificate docket serves for DOMAIN, if the handshake
/// verifies against `root_pem`.
async fn served_cert(port: u16, root_pem: &str) -> Option<Vec<u8>> {
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(root_pem.as_bytes()).ok()?])
        .resolve(DOMAIN, ([127, 0, 0, 1], port).into())
        .tls_info(true)
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = client.get(format!("https://{DOMAIN}:{port}/healthz")).send().await.ok()?;
    resp.extensions().get::<reqwest::tls::TlsInfo>()?.peer_certificate().map(<[u8]>::to_vec)
}

#[tokio::test]
async fn certificate_from_pebble_is_served_and_cached() {
    let port = free_port();
    let Some(pebble) = start_pebble(port) else {
        return;
    };
    let pebble_ca = pebble.ca.write(pebble._dir.path()).2;
    let directory = pebble.directory.clone();
    let configure = |data_dir: Option<std::path::PathBuf>| {
        let (directory, ca) = (directory.clone(), pebble_ca.clone());
        move |c: &mut docket::config::Config| {
            c.tls.mode = docket::config::TlsMode::Acme;
            c.tls.acme.domains = vec![DOMAIN.into()];
            c.tls.acme.contact = vec!["mailto:it@docket.test".into()];
            c.tls.acme.directory = directory;
            c.tls.acme.ca_file = Some(ca);
            c.server.listen = vec![([127, 0, 0, 1], port).into()];
            if let Some(d) = data_dir {
                c.data_dir = d;
            }
        }
    };
    let s = TestServer::start_with(configure(None)).await;
    let mgmt = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pebble.ca.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let mut first = None;
    for _ in 0..120 {
        // Pebble makes a new root at every start; fetch it from the management port.
        if let Ok(r) = mgmt.get(format!("{}/roots/0", pebble.management)).send().await {
            let root = r.text().await.unwrap_or_default();
            if let Some(der) = served_cert(port, &root).await {
                first = Some((der, root));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (der, root) = first.expect("docket never served a certificate issued by Pebble");
    let state = s.running.as_ref().unwrap().state.clone();
    let cached = state.store.read(|r| r.scan_system(&docket::store::SYSTEM_SECRETS, b"acme.cert.")).unwrap();
    assert_eq!(cached.len(), 1, "the certificate is cached in the store");
    assert!(cached[0].1.starts_with(b"age-encryption.org/v1"), "and sealed");
    drop(state);
    let dir = s.stop().await;

    let again = TestServer::start_with(configure(Some(dir.path().join("data")))).await;
    let mut served_again = None;
    for _ in 0..40 {
        if let Some(d) = served_cert(port, &root).await {
            served_again = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served_again.as_deref(), Some(der.as_slice()), "a restart serves the cached certificate");
    again.stop().await;
    drop(dir);
}
