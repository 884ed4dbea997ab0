//! Operations: the systemd unit's hardening score, the Debian package in a
//! throwaway root, socket activation and sd_notify of the real binary, SIGHUP
//! reloads with a connection open, `docket doctor` and `docket upgrade-check`.
use crate::support::{TestCa, client, docket_bin, eventually, in_ci, run_docket};
use docket::secrets::{Keyring, default_key_path};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Whether `tool` is on PATH; outside CI a missing tool skips the test with a message.
fn have(tool: &str, test: &str) -> bool {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(!in_ci(), "{tool} is missing (CI=true): install it (.ci/run)");
        eprintln!("skipping {test}: {tool} is not installed");
    }
    found
}

#[test]
fn unit_hardening_exposure_is_at_most_1_3() {
    if !have("systemd-analyze", "unit_hardening_exposure_is_at_most_1_3") {
        return;
    }
    let unit = format!("{REPO}/systemd/docket.service");
    let out = Command::new("systemd-analyze").args(["security", "--offline=true", &unit]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("{text}"));
    let score: f64 = line.split(':').nth(1).and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap();
    println!("systemd-analyze security --offline=true systemd/docket.service: {score}");
    assert!(score <= 1.3, "exposure {score} > 1.3:\n{text}");
    for needed in ["CapabilityBoundingSet=\n", "Type=notify", "WatchdogSec=", "LoadCredential=docket-master-key:"] {
        assert!(std::fs::read_to_string(&unit).unwrap().contains(needed), "{needed} missing from the unit");
    }
}

// ---------------------------------------------------------------- package

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

fn owner(path: &Path) -> (u32, u32) {
    let m = std::fs::metadata(path).unwrap();
    (m.uid(), m.gid())
}

/// dpkg acting on a throwaway root; maintainer scripts run outside a chroot with DPKG_ROOT set.
fn dpkg(root: &Path, args: &[&str]) {
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-script-chrootless", "--force-depends", "--log=/dev/null"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dpkg {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the .deb from the debug binary, installs it into a throwaway root,
/// checks files, owners and modes and that the installed binary runs; then an
/// upgrade keeps config, key and data; removal keeps them; purge deletes them.
#[test]
fn debian_package_installs_upgrades_removes_and_purges() {
    if !have("dpkg-deb", "debian_package_installs_upgrades_removes_and_purges") {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        assert!(!in_ci(), "the package test needs root (CI runs as root)");
        eprintln!("skipping the package test: dpkg --root needs root to set owners");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(format!("{REPO}/packaging/build-deb"))
        .args(["--binary", docket_bin(), "--fast", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "build-deb: {}", String::from_utf8_lossy(&out.stderr));
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let listing = Command::new("dpkg-deb").args(["-c", &deb]).output().unwrap();
    println!("{}", String::from_utf8_lossy(&listing.stdout));

    let root = tmp.path().join("root");
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available", "etc/passwd", "etc/group"] {
        std::fs::write(root.join(file), "").unwrap();
    }
    dpkg(&root, &["-i", &deb]);

    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let entry: Vec<&str> =
        passwd.lines().find(|l| l.starts_with("docket:")).expect("the docket user").split(':').collect();
    let (uid, gid): (u32, u32) = (entry[2].parse().unwrap(), entry[3].parse().unwrap());
    let p = |rel: &str| root.join(rel);
    let expected: &[(&str, u32, (u32, u32))] = &[
        ("usr/bin/docket", 0o755, (0, 0)),
        ("usr/lib/systemd/system/docket.service", 0o644, (0, 0)),
        ("usr/lib/systemd/system/docket.socket", 0o644, (0, 0)),
        ("usr/lib/sysusers.d/docket.conf", 0o644, (0, 0)),
        ("usr/share/docket/prometheus-alerts.yml", 0o644, (0, 0)),
        ("etc/docket", 0o750, (0, gid)),
        ("etc/docket/docket.toml", 0o640, (0, gid)),
        ("etc/docket/master.key", 0o600, (0, 0)),
        ("var/lib/docket", 0o700, (uid, gid)),
    ];
    for (rel, m, o) in expected {
        assert_eq!(mode(&p(rel)), *m, "mode of /{rel}");
        assert_eq!(owner(&p(rel)), *o, "owner of /{rel}");
    }
    let installed = p("usr/bin/docket");
    let version = Command::new(&installed).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("docket {}", docket::VERSION));
    let config = p("etc/docket/docket.toml");
    let check = Command::new(&installed).args(["config", "check", "--config"]).arg(&config).output().unwrap();
    assert!(check.status.success(), "config check: {}", String::from_utf8_lossy(&check.stderr));
    assert!(String::from_utf8_lossy(&check.stdout).contains("keys.master_key_file = \"/etc/docket/master.key\""));

    // An upgrade (the same package again: postinst configure with the old version).
    let key = std::fs::read(p("etc/docket/master.key")).unwrap();
    let edited = format!("{}\n# edited by the admin\n", std::fs::read_to_string(&config).unwrap());
    std::fs::write(&config, &edited).unwrap();
    std::fs::write(p("var/lib/docket/docket.redb"), b"the firm's data").unwrap();
    dpkg(&root, &["-i", &deb]);
    assert_eq!(std::fs::read(p("etc/docket/master.key")).unwrap(), key, "an upgrade keeps the key");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited, "an upgrade keeps local config edits");
    assert_eq!(std::fs::read(p("var/lib/docket/docket.redb")).unwrap(), b"the firm's data");

    dpkg(&root, &["-r", "docket"]);
    assert!(!installed.exists(), "removal deletes the binary");
    assert!(
        p("var/lib/docket/docket.redb").exists() && p("etc/docket/master.key").exists(),
        "removal keeps data and key"
    );
    assert!(config.exists(), "removal keeps the config");

    dpkg(&root, &["-P", "docket"]);
    assert!(!p("var/lib/docket").exists() && !p("etc/docket").exists(), "purge deletes data, key and config");
}

// ---------------------------------------------------------------- the real binary

/// A `docket serve` child process; killed on drop.
struct Served {
    child: Child,
    log: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }
}

/// A data dir with a master key, and a config file for it.
fn instance(dir: &Path, listen: u16, redirect: u16, tls: &str) -> PathBuf {
    let data = dir.join("data");
    Keyring::generate(&default_key_path(&data)).unwrap();
    let config = dir.join("docket.toml");
    let text = format!(
        "data_dir = {data:?}\n[server]\nlisten = [\"127.0.0.1:{listen}\"]\nredirect_listen = [\"127.0.0.1:{redirect}\"]\nshutdown_grace_seconds = 5\n[tls]\n{tls}\n[log]\nlevel = \"info\"\n"
    );
    std::fs::write(&config, text).unwrap();
    config
}

fn serve(command: &mut Command, dir: &Path) -> Served {
    let log = dir.join("docket.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = command.stdout(file.try_clone().unwrap()).stderr(file).stdin(Stdio::null()).spawn().unwrap();
    Served { child, log }
}

async fn healthy(base: &str) -> bool {
    eventually(Duration::from_secs(30), async || {
        client().get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await
}

/// systemd's notify socket, played by the test.
fn notify_socket(dir: &Path) -> (std::os::unix::net::UnixDatagram, PathBuf) {
    let path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    (socket, path)
}

fn next_notification(socket: &std::os::unix::net::UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Socket-activated: the listeners come from LISTEN_FDS (the configured ports
/// are taken by someone else, so binding them would fail), READY=1 and STATUS=
/// reach NOTIFY_SOCKET, and WATCHDOG=1 pings with the sync status follow.
#[tokio::test]
async fn socket_activation_takes_the_passed_listeners_and_notifies_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let taken =
        (std::net::TcpListener::bind("127.0.0.1:0").unwrap(), std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let config = instance(
        dir.path(),
        taken.0.local_addr().unwrap().port(),
        taken.1.local_addr().unwrap().port(),
        "mode = \"self-signed\"",
    );
    let https = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    for l in [&https, &http] {
        rustix::io::fcntl_setfd(l, rustix::io::FdFlags::empty()).unwrap(); // inherited by the child
    }
    let (notify, notify_path) = notify_socket(dir.path());
    use std::os::fd::AsRawFd as _;
    // The shell's pid becomes docket's with `exec`, so LISTEN_PID names docket.
    let script =
        r#"LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=https:http exec "$0" serve --config "$1" 3<&"$2" 4<&"$3""#;
    let mut command = Command::new("bash"); // dash cannot redirect from fds above 9
    command
        .args(["-c", script, docket_bin()])
        .arg(&config)
        .args([https.as_raw_fd().to_string(), http.as_raw_fd().to_string()])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000");
    let served = serve(&mut command, dir.path());
    let ready = tokio::task::spawn_blocking(move || {
        let opening = next_notification(&notify);
        assert!(opening.starts_with("STATUS=opening the store"), "{opening:?}");
        let first = next_notification(&notify);
        let mut later = vec![];
        for _ in 0..3 {
            later.push(next_notification(&notify));
        }
        (first, later)
    });
    let base = format!("https://127.0.0.1:{}", https.local_addr().unwrap().port());
    assert!(healthy(&base).await, "serves on the passed HTTPS socket; log:\n{}", served.log());
    let redirect =
        client().get(format!("http://127.0.0.1:{}/x", http.local_addr().unwrap().port())).send().await.unwrap();
    assert_eq!(redirect.status(), 308, "the socket named http is the redirect");
    let (first, later) = ready.await.unwrap();
    assert!(first.starts_with("READY=1\nSTATUS=serving on 127.0.0.1:"), "{first:?}");
    assert!(later.iter().all(|m| m.starts_with("WATCHDOG=1\nSTATUS=serving; ")), "{later:?}");
    assert!(served.log().contains("listening on sockets passed by systemd"), "{}", served.log());
}

/// Reads one HTTP/1.1 response (headers and a Content-Length body) off `stream`.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut buf = vec![];
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
    }
}

/// A TLS connection that trusts only `ca_pem`.
async fn tls_connect(
    port: u16,
    ca_pem: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    crate::support::tls_connector(ca_pem).connect(name, tcp).await
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// `docket serve` binds by itself; SIGHUP with a changed config file switches
/// to the newly configured certificate files while an open connection keeps
/// working, and names the setting that needs a restart. An invalid config is
/// refused and changes nothing.
#[tokio::test]
async fn sighup_reloads_config_and_certificates_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (TestCa::new("old"), TestCa::new("new"));
    let old_dir = dir.path().join("old");
    let new_dir = dir.path().join("new");
    std::fs::create_dir_all(&old_dir).unwrap();
    std::fs::create_dir_all(&new_dir).unwrap();
    let (old_cert, old_key, _) = old_ca.write(&old_dir);
    let (new_cert, new_key, _) = new_ca.write(&new_dir);
    let port = crate::support::free_port();
    let files = |c: &Path, k: &Path| format!("mode = \"files\"\ncert_file = {c:?}\nkey_file = {k:?}");
    let config = instance(dir.path(), port, crate::support::free_port(), &files(&old_cert, &old_key));
    let served = serve(Command::new(docket_bin()).args(["serve", "--config"]).arg(&config), dir.path());
    assert!(healthy(&format!("https://127.0.0.1:{port}")).await, "log:\n{}", served.log());

    let mut open = tls_connect(port, &old_ca.ca_pem).await.unwrap();
    open.write_all(HEALTHZ).await.unwrap();
    assert!(read_response(&mut open).await.starts_with("HTTP/1.1 200"));

    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "this is = not toml [").unwrap();
    served.signal(rustix::process::Signal::HUP);
    assert!(
        eventually(Duration::from_secs(20), async || served.log().contains("config reload refused")).await,
        "{}",
        served.log()
    );
    assert!(tls_connect(port, &old_ca.ca_pem).await.is_ok(), "a refused reload keeps the old certificate");

    let changed = text
        .replace(&files(&old_cert, &old_key), &files(&new_cert, &new_key))
        .replace("shutdown_grace_seconds = 5", "shutdown_grace_seconds = 6");
    std::fs::write(&config, changed).unwrap();
    served.signal(rustix::process::Signal::HUP);
    assert!(
        eventually(Duration::from_secs(20), async || tls_connect(port, &new_ca.ca_pem).await.is_ok()).await,
        "new connections get the newly configured certificate; log:\n{}",
        served.log()
    );
    assert!(tls_connect(port, &old_ca.ca_pem).await.is_err(), "the old certificate is no longer served");
    open.write_all(HEALTHZ).await.unwrap();
    assert!(read_response(&mut open).await.starts_with("HTTP/1.1 200"), "the open connection survived the reload");
    let log = served.log();
    assert!(log.contains("applied the changed settings") && log.contains("tls.cert_file"), "{log}");
    assert!(log.contains("server.shutdown_grace_seconds") && log.contains("systemctl restart docket"), "{log}");
}

/// `docket doctor` passes on a healthy running instance, and names each
/// failure with its fix on a broken data dir (exit 1).
#[tokio::test]
async fn doctor_passes_a_healthy_instance_and_names_fixes_for_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let config = instance(dir.path(), port, crate::support::free_port(), "mode = \"self-signed\"");
    let cfg = config.to_str().unwrap();
    {
        let served = serve(Command::new(docket_bin()).args(["serve", "--config", cfg]), dir.path());
        assert!(healthy(&format!("https://127.0.0.1:{port}")).await, "log:\n{}", served.log());
        let (code, out, err) = tokio::task::spawn_blocking({
            let cfg = cfg.to_string();
            move || run_docket(&["doctor", "--no-network", "--config", &cfg], &[])
        })
        .await
        .unwrap();
        println!("{out}");
        assert_eq!(code, 0, "{out}{err}");
        for line in [
            "[ ok ] config",
            "[ ok ] master key",
            "[ ok ] service /healthz",
            "[ ok ] store schema: in use",
            "[warn] backup disk:",
            "[info] search index: none yet",
            "[info] network: skipped",
        ] {
            assert!(out.contains(line), "{line} missing:\n{out}");
        }
    }
    let data = dir.path().join("data");
    std::fs::set_permissions(default_key_path(&data), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out, _) = run_docket(&["doctor", "--no-network", "--config", cfg], &[]);
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] master key") && out.contains("fix: chmod 600"), "{out}");
    assert!(out.contains("[FAIL] data dir") && out.contains("fix: chmod 700"), "{out}");
    assert!(out.contains("[FAIL] service /healthz") && out.contains("journalctl -u docket"), "{out}");
    let (code, out, _) = run_docket(&["doctor", "--no-network", "--config", "/nonexistent/docket.toml"], &[]);
    assert_eq!(code, 1);
    assert!(out.contains("[FAIL] config") && out.contains("fix:"), "{out}");
}

/// `docket upgrade-check` on a current store, and a real upgrade by the binary
/// of the previous schema's store kept in tests/fixtures.
#[test]
fn upgrade_check_and_upgrade_from_the_previous_schema() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (code, out, err) = run_docket(&["upgrade-check", "--data-dir", d], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no store yet"), "{out}");
    Keyring::generate(&default_key_path(&data)).unwrap();
    let (code, _, err) =
        run_docket(&["org", "create", "--slug", "smith-jones", "--name", "Smith", "--data-dir", d], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run_docket(&["upgrade-check", "--data-dir", d], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to migrate"), "{out}");
    assert!(!data.join("pre-upgrade").exists(), "no backup without a migration");

    let fixture = Path::new(REPO).join(format!("tests/fixtures/store-v{}.redb", docket::store::SCHEMA_VERSION - 1));
    assert!(
        fixture.exists(),
        "the previous schema's store is kept as {} (tests/fixtures/README.md)",
        fixture.display()
    );
    let old = dir.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(&fixture, old.join("docket.redb")).unwrap();
    Keyring::generate(&default_key_path(&old)).ok();
    let o = old.to_str().unwrap();
    let (_, out, _) = run_docket(&["upgrade-check", "--data-dir", o], &[]);
    assert!(out.contains("migrations:") && out.contains("pre-upgrade/docket-schema"), "{out}");
    let (_, listed, err) = run_docket(&["org", "list", "--data-dir", o], &[]);
    let backups: Vec<_> = std::fs::read_dir(old.join("pre-upgrade")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(backups.len(), 1, "{err}");
    // The copy is the store before its migration (not byte for byte: opening
    // a redb file to read its schema rewrites header bytes): the old schema,
    // and, put back in place, the same firms.
    let schema = docket::store::Store::peek_schema(&backups[0]).unwrap();
    assert_eq!(schema, Some(docket::store::SCHEMA_VERSION - 1), "the backup keeps the old schema");
    let rolled_back = dir.path().join("rolled-back");
    std::fs::create_dir_all(&rolled_back).unwrap();
    std::fs::set_permissions(&rolled_back, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(&backups[0], rolled_back.join("docket.redb")).unwrap();
    if default_key_path(&old).exists() {
        docket::secrets::create_private_dir(&rolled_back.join("keys")).unwrap();
        std::fs::copy(default_key_path(&old), default_key_path(&rolled_back)).unwrap();
    }
    let (_, again, _) = run_docket(&["org", "list", "--data-dir", rolled_back.to_str().unwrap()], &[]);
    assert!(listed.contains("smith-jones") && again == listed, "{listed} / {again}");
    assert_eq!(
        docket::store::Store::peek_schema(&old.join("docket.redb")).unwrap(),
        Some(docket::store::SCHEMA_VERSION)
    );
}
