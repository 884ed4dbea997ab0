//! Off-site copies against a real S3-compatible server on loopback (moto,
//! installed into `.ci/venv` by `.ci/run`; skipped when missing outside CI):
//! uploads, a restart that uploads nothing twice, remote retention, an outage
//! of a minute with the service writing and restarted during it, the
//! catch-up, and the disaster drill (data dir and backup dir deleted, restored
//! from the bucket alone with only the offline key, to the last commit).
use crate::support::{eventually, free_port, in_ci, run_docket};
use docket::clock::Clock;
use docket::config::Layers;
use docket::lifecycle::backup::retention::Keep;
use docket::lifecycle::offsite::target::Put;
use docket::lifecycle::offsite::uploader::{Uploader, scan};
use docket::lifecycle::offsite::{Settings, Target};
use docket::lifecycle::shipping::SegmentName;
use docket::secrets::Secret;
use docket::store::Store;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

const KEY_ID: &str = "docket-test";
const SECRET: &str = "docket-test-secret";

/// `moto_server` from `.ci/venv` (or `DOCKET_TEST_MOTO_SERVER`).
fn moto_binary() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/moto_server");
    let found = std::env::var_os("DOCKET_TEST_MOTO_SERVER").map(PathBuf::from).filter(|p| p.exists());
    let found = found.or_else(|| venv.exists().then_some(venv));
    if found.is_none() {
        assert!(!in_ci(), "moto_server is missing from .ci/venv: run .ci/run (it installs moto[server])");
        eprintln!("skipping: no moto_server in .ci/venv (run .ci/run to install it)");
    }
    found
}

/// A moto S3 server on a loopback port, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    async fn start(binary: &Path) -> Moto {
        let port = free_port();
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let moto = Moto { child, port };
        let up =
            eventually(Duration::from_secs(30), async || TcpStream::connect(("127.0.0.1", port)).await.is_ok()).await;
        assert!(up, "moto_server listens");
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Creates `bucket` with one signed request (through object_store's signer is
/// not possible for CreateBucket, so with boto3 from the same venv).
fn create_bucket(binary: &Path, endpoint: &str, bucket: &str) {
    let python = binary.with_file_name("python");
    let script = format!(
        "import boto3; boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='{KEY_ID}', aws_secret_access_key='{SECRET}', region_name='us-east-1').create_bucket(Bucket='{bucket}')"
    );
    let status = Command::new(python).args(["-c", &script]).status().unwrap();
    assert!(status.success(), "bucket {bucket} created");
}

/// A TCP proxy in front of moto that can be cut (connections refused, open
/// ones dropped) and restored: a network outage that keeps the bucket's state.
#[derive(Clone)]
struct Link {
    port: u16,
    upstream: u16,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Link {
    async fn start(upstream: u16) -> Link {
        let link = Link { port: free_port(), upstream, tasks: Arc::default() };
        link.up().await;
        link
    }

    async fn up(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let (upstream, tasks) = (self.upstream, self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    fn down(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn settings(endpoint: &str, url: &str) -> Settings {
    let (bucket, prefix) = docket::config::parse_offsite_url(url).unwrap();
    Settings {
        url: url.into(),
        bucket,
        prefix,
        endpoint: Some(endpoint.into()),
        region: "us-east-1".into(),
        access_key_id: KEY_ID.into(),
        secret_access_key: Secret::new(SECRET),
        allow_http: true,
    }
}

fn seg(first: u64, last: u64) -> String {
    let name = SegmentName { first, last, first_time: first as i64 * 1_000_000, last_time: last as i64 * 1_000_000 };
    format!("segments/{}", name.file_name())
}

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn manifest(file: &str, created: &str, head_seq: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "format": docket::lifecycle::backup::archive::FORMAT,
        "docket_version": "test",
        "schema_version": 3,
        "created": created,
        "head_seq": head_seq,
        "head_time": created,
        "first_seq": null,
        "rows": 1,
        "parts": {},
        "recipients": [],
        "file": file,
        "bytes": 3,
        "sha256": "",
    }))
    .unwrap()
}

async fn remote_names(target: &Target) -> Vec<String> {
    target.list().await.unwrap().into_iter().map(|o| o.name).collect()
}

#[tokio::test]
async fn uploads_once_replaces_only_the_keyring_and_applies_retention_remotely() {
    let Some(binary) = moto_binary() else { return };
    let moto = Moto::start(&binary).await;
    create_bucket(&binary, &moto.endpoint(), "unit");
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path();
    put(backups, "backup-20260301T020000Z-aaaa0001.sealed", b"one");
    put(
        backups,
        "backup-20260301T020000Z-aaaa0001.manifest.json",
        &manifest("backup-20260301T020000Z-aaaa0001.sealed", "2026-03-01T02:00:00Z", 10),
    );
    put(backups, "keyring.sealed", b"keys v1");
    put(backups, &seg(1, 5), b"seg 1-5");
    put(backups, ".backup-20260302T020000Z-bbbb0002.sealed.77.tmp", b"half written");
    put(backups, "last-verify.json", b"{}");
    let target = Target::new(&settings(&moto.endpoint(), "s3://unit/firm")).unwrap();
    let keep = Keep { daily: 1, weekly: 0 };
    let mut uploader = Uploader::new(target.clone(), backups, keep, Clock::system());
    let mut uploaded = 0;
    for _ in 0..4 {
        uploaded += uploader.round().await.unwrap().uploaded;
    }
    assert_eq!(uploaded, 4, "the sealed files, the manifest, the keyring and the segment");
    let listed = remote_names(&target).await;
    assert_eq!(
        listed,
        [
            "backup-20260301T020000Z-aaaa0001.manifest.json",
            "backup-20260301T020000Z-aaaa0001.sealed",
            "keyring.sealed",
            &seg(1, 5)
        ],
        "temp files and local bookkeeping stay home"
    );
    assert_eq!(uploader.status().pending_files, 0);

    // A restart: the bucket is listed, nothing goes up twice.
    let mut again = Uploader::new(target.clone(), backups, keep, Clock::system());
    assert_eq!(again.round().await.unwrap().uploaded, 0, "nothing uploaded twice after a restart");
    // A final name is written once: a conditional put leaves the object alone.
    let (put_again, _) = target.put_bytes(&seg(1, 5), bytes::Bytes::from_static(b"forged"), false).await.unwrap();
    assert_eq!(put_again, Put::AlreadyThere);
    assert_eq!(&target.get(&seg(1, 5)).await.unwrap()[..], b"seg 1-5");

    // The shipper rolls its open segment longer; the keyring is rewritten in place.
    std::fs::remove_file(backups.join(seg(1, 5))).unwrap();
    put(backups, &seg(1, 9), b"seg 1-9");
    tokio::time::sleep(Duration::from_millis(20)).await;
    put(backups, "keyring.sealed", b"keys v2, longer");
    let mut uploaded = 0;
    for _ in 0..3 {
        uploaded += again.round().await.unwrap().uploaded;
    }
    assert_eq!(uploaded, 2);
    assert_eq!(&target.get("keyring.sealed").await.unwrap()[..], b"keys v2, longer");
    let listed = remote_names(&target).await;
    assert!(listed.contains(&seg(1, 9)) && !listed.contains(&seg(1, 5)), "the superseded segment goes: {listed:?}");

    // A newer day's backup: local retention removed the older one, and so does the bucket's.
    for name in ["backup-20260301T020000Z-aaaa0001.sealed", "backup-20260301T020000Z-aaaa0001.manifest.json"] {
        std::fs::remove_file(backups.join(name)).unwrap();
    }
    std::fs::remove_file(backups.join(seg(1, 9))).unwrap();
    put(backups, "backup-20260302T020000Z-bbbb0002.sealed", b"two");
    put(
        backups,
        "backup-20260302T020000Z-bbbb0002.manifest.json",
        &manifest("backup-20260302T020000Z-bbbb0002.sealed", "2026-03-02T02:00:00Z", 12),
    );
    put(backups, &seg(10, 14), b"seg 10-14");
    for _ in 0..4 {
        again.round().await.unwrap();
    }
    let listed = remote_names(&target).await;
    assert_eq!(
        listed,
        [
            "backup-20260302T020000Z-bbbb0002.manifest.json",
            "backup-20260302T020000Z-bbbb0002.sealed",
            "keyring.sealed",
            &seg(10, 14)
        ],
        "the dropped backup and the segments it alone needed are gone remotely"
    );
    let window = again.status().window;
    assert_eq!(window.start.unwrap().to_rfc3339(), "2026-03-02T02:00:00Z");
    assert_eq!(window.end, window.start, "the newest commit held is the backup's (the segment's is older)");
    assert_eq!(scan(backups).unwrap().len(), 4, "local files untouched by the uploader");
}

#[tokio::test]
async fn an_unreachable_bucket_is_an_error_naming_the_fix_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), &seg(1, 2), b"x");
    let target = Target::new(&settings(&format!("http://127.0.0.1:{}", free_port()), "s3://nobody/p")).unwrap();
    let mut uploader = Uploader::new(target, dir.path(), Keep { daily: 7, weekly: 4 }, Clock::system());
    let e = uploader.round().await.unwrap_err().to_string();
    assert!(e.contains("s3://nobody/p") && e.contains("fix:") && e.contains("pending files stay"), "{e}");
    let status = uploader.status();
    assert!(status.failing() && status.last_error.is_some());
    assert_eq!(status.pending_files, 1, "the segment waits in backup.dir");
}

fn config_error(pairs: &[(&str, &str)]) -> String {
    let vars = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let built = Layers::new().env(vars).and_then(|layers| {
        layers
            .flag("data_dir", toml::Value::String("/tmp/d".into()), "data-dir")
            .flag("tls.mode", toml::Value::String("off".into()), "data-dir")
            .build()
    });
    built.err().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn bad_offsite_settings_name_the_key_and_the_fix() {
    let base = [("DOCKET_BACKUP__OFFSITE__ACCESS_KEY_ID", "k"), ("DOCKET_BACKUP__OFFSITE__SECRET_ACCESS_KEY", "s")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        config_error(&all)
    };
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("DOCKET_BACKUP__OFFSITE__URL", "https://bucket/x")], "backup.offsite.url"),
        (&[("DOCKET_BACKUP__OFFSITE__URL", "s3://B/x")], "backup.offsite.url"),
        (&[("DOCKET_BACKUP__OFFSITE__URL", "s3://bucket/a/../b")], "backup.offsite.url"),
        (
            &[
                ("DOCKET_BACKUP__OFFSITE__URL", "s3://bucket"),
                ("DOCKET_BACKUP__OFFSITE__ENDPOINT", "http://minio.lan:9000"),
            ],
            "backup.offsite.endpoint",
        ),
        (
            &[
                ("DOCKET_BACKUP__OFFSITE__URL", "s3://bucket"),
                ("DOCKET_BACKUP__OFFSITE__ENDPOINT", "https://s3.example"),
                ("DOCKET_BACKUP__OFFSITE__ALLOW_HTTP", "true"),
            ],
            "backup.offsite.allow_http",
        ),
        (
            &[("DOCKET_BACKUP__OFFSITE__URL", "s3://bucket"), ("DOCKET_BACKUP__OFFSITE__ALLOW_HTTP", "maybe")],
            "backup.offsite.allow_http",
        ),
    ];
    for (extra, key) in cases {
        let e = with(extra);
        assert!(e.contains(key) && e.contains("fix:"), "{extra:?}: {e}");
    }
    let e =
        config_error(&[("DOCKET_BACKUP__OFFSITE__URL", "s3://bucket"), ("DOCKET_BACKUP__OFFSITE__ACCESS_KEY_ID", "k")]);
    assert!(e.contains("backup.offsite.secret_access_key") && e.contains("secret_access_key_file"), "{e}");
    assert_eq!(with(&[("DOCKET_BACKUP__OFFSITE__URL", "s3://bucket/firm/one")]), "", "a good config loads");
    // The secret never appears in a dump of the config.
    let vars = [
        ("DOCKET_BACKUP__OFFSITE__URL".to_string(), "s3://bucket".to_string()),
        ("DOCKET_BACKUP__OFFSITE__ACCESS_KEY_ID".into(), "k".into()),
        ("DOCKET_BACKUP__OFFSITE__SECRET_ACCESS_KEY".into(), "very-secret-value".into()),
    ];
    let loaded =
        Layers::new().env(vars).unwrap().flag("tls.mode", toml::Value::String("off".into()), "t").build().unwrap();
    assert!(!loaded.describe().contains("very-secret-value"), "redacted");
    assert!(!format!("{:?}", loaded.config).contains("very-secret-value"), "redacted in Debug");
}

/// `docket serve` of a config file, killed (SIGKILL) when dropped unless stopped.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Service {
    fn start(config: &str) -> Service {
        let child = Command::new(crate::support::docket_bin())
            .args(["serve", "--config", config])
            .stdout(log_file(config))
            .stderr(log_file(config))
            .spawn()
            .unwrap();
        Service(child)
    }

    /// SIGTERM, then wait (off the runtime: the test's link proxy must keep
    /// forwarding while the service uploads its last segment).
    async fn stop(mut self) {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        tokio::task::spawn_blocking(move || self.0.wait().unwrap()).await.unwrap();
    }
}

/// The service's log beside its config (appended), for a failing test's reader.
fn log_file(config: &str) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(format!("{config}.log")).unwrap()
}

/// The off-site and shutdown lines of the service's log.
fn offsite_log(config: &str) -> String {
    let text = std::fs::read_to_string(format!("{config}.log")).unwrap_or_default();
    let lines: Vec<&str> =
        text.lines().filter(|l| l.contains("offsite") || l.contains("stopp") || l.contains("shutting")).collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Writers committing (a token creation every 100 ms each) until aborted.
fn writers(base: &str, token: &str, count: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count)
        .map(|w| {
            let (http, base, token) = (reqwest::Client::new(), base.to_string(), token.to_string());
            tokio::spawn(async move {
                for n in 0.. {
                    let body = serde_json::json!({"name": format!("w{w}-{n}"), "role": "staff"});
                    let _ =
                        http.post(format!("{base}/api/v1/tokens/service")).bearer_auth(&token).json(&body).send().await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect()
}

fn newest_remote_seq(names: &[String]) -> u64 {
    names.iter().filter_map(|n| docket::lifecycle::offsite::segment(n)).map(|s| s.last).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disaster_drill_restores_from_the_bucket_alone_after_an_outage_and_a_restart() {
    let Some(binary) = moto_binary() else { return };
    let moto = Moto::start(&binary).await;
    create_bucket(&binary, &moto.endpoint(), "drill");
    let link = Link::start(moto.port).await;
    let url = "s3://drill/firm-1";
    let dir = tempfile::tempdir().unwrap();
    let (data, backups) = (dir.path().join("data"), dir.path().join("backups"));
    let offline = age::x25519::Identity::generate();
    let offline_key = dir.path().join("offline.key");
    {
        use age::secrecy::ExposeSecret as _;
        std::fs::write(&offline_key, format!("{}\n", offline.to_string().expose_secret())).unwrap();
        std::fs::set_permissions(&offline_key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let secret_file = dir.path().join("offsite.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let port = free_port();
    let config = dir.path().join("docket.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[tls]\nmode = \"off\"\n[server]\nlisten = [\"127.0.0.1:{port}\"]\n[backup]\ndir = \"{}\"\nship_interval = 1\nrecipients = [\"{}\"]\n[backup.offsite]\nurl = \"{url}\"\nendpoint = \"{}\"\nallow_http = true\naccess_key_id = \"{KEY_ID}\"\nsecret_access_key_file = \"{}\"\n",
            data.display(),
            backups.display(),
            offline.to_public(),
            link.endpoint(),
            secret_file.display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap().to_string();
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", &cfg]);
        run_docket(&all, &[])
    };
    let token = crate::support::provision_acme(&cfg);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let ready = async || http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200);
    let target = Target::new(&settings(&moto.endpoint(), url)).unwrap();

    let service = Service::start(&cfg);
    assert!(eventually(Duration::from_secs(20), ready).await, "docket serve starts");
    let (code, out, err) = cli(&["backup", "now"]);
    assert_eq!(code, 0, "{out}{err}");
    let load = writers(&base, &token, 2);
    let uploaded = eventually(Duration::from_secs(30), async || {
        let names = remote_names(&target).await;
        names.iter().any(|n| n.ends_with(".manifest.json"))
            && names.contains(&"keyring.sealed".to_string())
            && newest_remote_seq(&names) > 20
    })
    .await;
    assert!(uploaded, "the backup, its manifest, the keyring and segments reach the bucket");
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("docket_offsite_lag_seconds")
            && metrics.contains("docket_offsite_window_end_timestamp_seconds"),
        "{metrics}"
    );

    // The outage: the bucket unreachable for a minute while the service writes,
    // and is restarted halfway.
    link.down();
    let before_outage = newest_remote_seq(&remote_names(&target).await);
    tokio::time::sleep(Duration::from_secs(25)).await;
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("docket_offsite_up 0"), "the failure shows in /metrics: {metrics}");
    let (_, doctor, _) = cli(&["doctor", "--no-network"]);
    assert!(doctor.contains("off-site copies") && doctor.contains("failing since"), "{doctor}");
    load.iter().for_each(|t| t.abort());
    service.stop().await;
    let service = Service::start(&cfg);
    assert!(eventually(Duration::from_secs(20), ready).await, "docket serve starts again during the outage");
    let load = writers(&base, &token, 2);
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(newest_remote_seq(&remote_names(&target).await), before_outage, "nothing reached the bucket meanwhile");

    // The link comes back: the uploader catches up (its backoff is at most 30 s).
    link.up().await;
    let local_head = || {
        docket::lifecycle::shipping::list(&backups.join("segments")).unwrap().chain.last().map_or(0, |s| s.name.last)
    };
    let caught_up =
        eventually(Duration::from_secs(60), async || newest_remote_seq(&remote_names(&target).await) >= local_head())
            .await;
    assert!(caught_up, "the uploads catch up once the bucket answers");
    load.iter().for_each(|t| t.abort());
    service.stop().await;

    // Everything sealed locally is in the bucket, each segment once.
    let local: Vec<String> = scan(&backups).unwrap().into_iter().map(|f| f.name).collect();
    let remote = remote_names(&target).await;
    for name in &local {
        assert!(remote.contains(name), "{name} is off-site; the service's log:\n{}", offsite_log(&cfg));
    }
    let firsts: Vec<u64> =
        remote.iter().filter_map(|n| docket::lifecycle::offsite::segment(n)).map(|s| s.first).collect();
    let mut unique = firsts.clone();
    unique.dedup();
    assert_eq!(firsts, unique, "no superseded segment left off-site: {remote:?}\nlocal: {local:?}");

    let store = Store::open(&data.join("docket.redb"), Clock::system()).unwrap();
    let (digest, head) = (store.digest().unwrap(), store.journal_head().unwrap());
    let last = docket::lifecycle::shipping::list(&backups.join("segments")).unwrap().chain.last().unwrap().name;
    assert_eq!(last.last, head, "a clean stop shipped everything");
    drop(store);

    // What the operator kept with the offline key: the signer's fingerprint.
    let signer = docket::lifecycle::signing::pinned(&data).expect("the service pinned its signer").fingerprint();
    // The disaster: the disk is gone, data dir and backup dir with it.
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::remove_dir_all(&backups).unwrap();
    let env = [
        ("DOCKET_BACKUP__OFFSITE__ENDPOINT", moto.endpoint()),
        ("DOCKET_BACKUP__OFFSITE__ALLOW_HTTP", "true".into()),
        ("DOCKET_BACKUP__OFFSITE__ACCESS_KEY_ID", KEY_ID.into()),
        ("DOCKET_BACKUP__OFFSITE__SECRET_ACCESS_KEY_FILE", secret_file.display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out, err) = run_docket(&["backup", "list", "--backup-dir", url], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{url}/backup-")), "listed from the bucket: {out}");
    let into = dir.path().join("restored");
    let at = docket::timestamp::Timestamp::from_micros(last.last_time).to_rfc3339();
    let (code, out, err) = run_docket(
        &[
            "restore",
            "--backup-dir",
            url,
            "--at",
            &at,
            "--into",
            into.to_str().unwrap(),
            "--key",
            offline_key.to_str().unwrap(),
            "--trust",
            &signer,
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("from {url}")) && !out.contains(".docket-offsite-"), "{out}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".docket-offsite-"))
        .collect();
    assert!(leftovers.is_empty(), "the staging dir is removed");
    let restored = Store::open(&into.join("docket.redb"), Clock::system()).unwrap();
    assert_eq!(restored.journal_head().unwrap(), head, "restored to the last commit");
    assert_eq!(restored.digest().unwrap(), digest, "the firm's data as it was at the last commit");
    drop(restored);
    let (code, out, err) = run_docket(&["audit", "verify", "--data-dir", into.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "the audit chains are intact: {out}{err}");

    // The restored appliance answers the firm's token.
    let port = free_port();
    let restored_config = dir.path().join("restored.toml");
    std::fs::write(
        &restored_config,
        format!("data_dir = \"{}\"\n[tls]\nmode = \"off\"\n[server]\nlisten = [\"127.0.0.1:{port}\"]\n[backup]\ndir = \"{}\"\n", into.display(), dir.path().join("new-backups").display()),
    )
    .unwrap();
    let service = Service::start(restored_config.to_str().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        eventually(Duration::from_secs(20), async || http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200))
        .await
    );
    let me = http.get(format!("{base}/api/v1/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 200, "the firm's token works on the restored appliance");
    service.stop().await;
}
