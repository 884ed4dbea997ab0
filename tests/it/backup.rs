//! Backups and whole-backup restores: consistency while writes continue, the
//! operator's restore drill with only an offline key, a SIGKILL mid-backup,
//! key rotation, retention, verification, and every failure named.
use crate::support::{TestServer, client, docket_bin, run_docket, test_config};
use docket::app::{self, Instance};
use docket::clock::Clock;
use docket::config::Config;
use docket::control::{self, Command, Reply};
use docket::lifecycle::backup::{
    self, BackupError, BackupInfo, Quiet, SealError, Settings, Signer, Trust, retention::Keep, signing,
};
use docket::lifecycle::restore::{self, RestoreError, RestoreOptions};
use docket::secrets::{Keyring, default_key_path, write_identity};
use docket::store::{OrgId, OrgTask, OrgTaskContext, RECORDS, Store, SystemContext, Task};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs the binary off the async workers (the in-process server keeps serving).
async fn docket(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || run_docket(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]))
        .await
        .unwrap()
}

const CTX: OrgTaskContext = OrgTaskContext::new(OrgTask::Test);

/// A data dir with a master key and an org, backups to `<root>/backups`.
fn instance(root: &Path) -> Instance {
    let mut config = test_config(&root.join("data"));
    config.backup.dir = Some(root.join("backups"));
    Keyring::generate(&default_key_path(&config.data_dir)).unwrap();
    let instance = Instance::open(config, Clock::system()).unwrap();
    control::create_org(&instance.store, &CTX, "smith-jones", "Smith & Jones LLP").unwrap();
    instance
}

fn put_records(store: &Store, from: u32, count: u32) {
    let scope = CTX.org_scope(OrgId(1));
    store
        .write(|w| {
            (from..from + count)
                .try_for_each(|n| w.put(&scope, &RECORDS, &n.to_be_bytes(), format!("matter {n}").as_bytes()))
        })
        .unwrap();
}

/// A sealed file being written (not the manifest's temp file).
fn is_sealed_temp(name: &str) -> bool {
    name.starts_with(".backup-") && name.contains(".sealed.") && name.ends_with(".tmp")
}

fn settings(config: &Config) -> Settings {
    Settings::from_config(config).unwrap()
}

/// The signer of backups written outside an instance.
fn test_signer() -> &'static Signer {
    static SIGNER: std::sync::OnceLock<Signer> = std::sync::OnceLock::new();
    SIGNER.get_or_init(Signer::generate)
}

/// The instance's own signer (its `signing.pub`).
fn trust(inst: &Instance) -> Trust {
    Trust::signer(signing::pinned(&inst.config.data_dir).expect("Instance::open pins the signer"))
}

/// Whom a restore of `info` believes: the signer of the instance beside its
/// backup dir (`<root>/data`, as [`instance`] lays it out), else the test signer.
fn trust_for(info: &BackupInfo) -> Trust {
    let root = info.path.parent().and_then(Path::parent).unwrap();
    Trust::signer(signing::pinned(&root.join("data")).unwrap_or(test_signer().public()))
}

fn restore_into(
    info: &BackupInfo,
    keys: &[age::x25519::Identity],
    into: &Path,
) -> Result<restore::Restored, RestoreError> {
    let options = RestoreOptions::new(Clock::system(), &Quiet, trust_for(info));
    restore::restore(Some(info), keys, into, &options, |_| Ok::<(), RestoreError>(()))
}

/// The store as of `seq`: the live journal replayed into a new store.
fn replayed_to(live: &Store, seq: u64, path: &Path) -> Store {
    let copy = Store::open(path, Clock::system()).unwrap();
    let r = copy.restore(&SystemContext::new(Task::Test)).unwrap();
    let mut after = 0;
    while after < seq {
        let batch = live.journal_since(&SystemContext::new(Task::Test), after, 1 << 20).unwrap();
        let entries: Vec<_> = batch.entries.into_iter().take_while(|e| e.seq <= seq).collect();
        after = entries.last().unwrap().seq;
        r.replay(&entries).unwrap();
    }
    r.finish().unwrap();
    copy
}

#[test]
fn a_backup_taken_while_writes_continue_is_the_store_at_its_seq() {
    let root = tempfile::tempdir().unwrap();
    let inst = instance(root.path());
    put_records(&inst.store, 0, 2000);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (inst.store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 10_000;
            while !stop.load(Ordering::Relaxed) {
                put_records(&store, n, 5);
                n += 5;
            }
            n
        })
    };
    let me = inst.keys.current().identity().clone();
    let mut seqs = vec![];
    for i in 0..3 {
        // Retention keeps one backup a day: each is checked before the next replaces it.
        let info =
            backup::run(&inst.store, &settings(&inst.config), &inst.keys.current(), &Clock::system(), &Quiet).unwrap();
        seqs.push(info.manifest.head_seq);
        let restored = restore_into(&info, std::slice::from_ref(&me), &root.path().join(format!("r{i}"))).unwrap();
        assert_eq!(restored.head_seq, info.manifest.head_seq);
        let copy = Store::open(&restored.into.join("docket.redb"), Clock::system()).unwrap();
        let expected = replayed_to(&inst.store, info.manifest.head_seq, &root.path().join(format!("e{i}.redb")));
        assert_eq!(
            copy.digest().unwrap(),
            expected.digest().unwrap(),
            "backup {i} is the store at seq {}",
            info.manifest.head_seq
        );
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 10_000, "writes went on during the backups");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "writes landed between backups: {seqs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_drill_on_a_new_machine_with_only_the_offline_key() {
    let keys = tempfile::tempdir().unwrap();
    let offline = age::x25519::Identity::generate();
    let offline_file = keys.path().join("offline.key");
    write_identity(&offline_file, &offline).unwrap();
    let backups = keys.path().join("share");
    let public = offline.to_public().to_string();
    let share = backups.clone();
    let s = TestServer::start_with(move |c| {
        c.backup.dir = Some(share);
        c.backup.recipients = vec![public];
    })
    .await;
    // `docket backup now` reaches the running service through its control socket.
    let config = keys.path().join("docket.toml");
    let data = s.dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[tls]\nmode = \"off\"\n[backup]\ndir = \"{}\"\n",
            data.display(),
            backups.display()
        ),
    )
    .unwrap();
    let (code, out, err) = docket(&["backup", "now", "--config", config.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("wrote") && out.contains(".sealed"), "{out}");
    let (code, listed, _) = docket(&["backup", "list", "--config", config.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{listed}");
    assert!(listed.lines().any(|l| l.contains(".sealed")), "{listed}");
    assert!(listed.lines().last().is_some_and(|l| l.starts_with("point-in-time window: from ")), "{listed}");
    let (admin, member) = (s.admin_token.clone(), s.member_token.clone());
    // What the operator kept with the offline key: the signer's fingerprint (`docket doctor` prints it).
    let fingerprint = signing::pinned(&data).unwrap().fingerprint();
    drop(s.stop().await); // the machine is lost with its data dir and master key

    let machine = tempfile::tempdir().unwrap();
    let fresh = machine.path().join("data");
    let sealed = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "sealed") && !p.ends_with(backup::KEYRING_FILE))
        .unwrap();
    let untrusted = ["restore", "--backup", sealed.to_str().unwrap(), "--into", fresh.to_str().unwrap()];
    let (code, _, err) = docket(&[&untrusted[..], &["--key", offline_file.to_str().unwrap()]].concat()).await;
    assert_ne!(code, 0);
    assert!(err.contains("--trust"), "without a pinned signer the restore says what to give: {err}");
    let args = [&untrusted[..], &["--trust", &fingerprint]].concat();
    let (code, _, err) = docket(&args).await;
    assert_ne!(code, 0);
    assert!(err.contains("--key"), "without a key the restore says which to give: {err}");
    let (code, out, err) = docket(&[&args[..], &["--key", offline_file.to_str().unwrap()]].concat()).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit chains intact"), "{out}");

    let (code, out, err) = docket(&["audit", "verify", "--data-dir", fresh.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("smith-jones") && out.contains("chain intact"), "{out}");
    let instance = Instance::open(test_config(&fresh), Clock::system()).unwrap();
    let running = app::start(instance).await.unwrap();
    let base = format!("https://localhost:{}", running.main_addrs[0].port());
    for token in [&admin, &member] {
        let org: serde_json::Value =
            client().get(format!("{base}/api/v1/org")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        assert_eq!(org["name"], "Smith & Jones LLP", "the firm's sign-ins work on the restored machine: {org}");
    }
    running.stop().await.unwrap();
}

#[test]
fn a_backup_killed_mid_write_leaves_no_final_file_and_the_next_run_completes() {
    let root = tempfile::tempdir().unwrap();
    let inst = instance(root.path());
    // Incompressible rows, so the backup takes long enough to be killed mid-write.
    let scope = CTX.org_scope(OrgId(1));
    for chunk in 0..40u32 {
        inst.store
            .write(|w| {
                (0..200u32).try_for_each(|n| {
                    let noise: Vec<u8> = (0..4096u32)
                        .map(|i| ((chunk * 200 + n) ^ i).wrapping_mul(2654435761).to_le_bytes()[2])
                        .collect();
                    w.put(&scope, &RECORDS, &(chunk * 200 + n).to_be_bytes(), &noise)
                })
            })
            .unwrap();
    }
    let config_file = root.path().join("docket.toml");
    let dir = inst.config.backup.dir.clone().unwrap();
    std::fs::write(
        &config_file,
        format!(
            "data_dir = \"{}\"\n[tls]\nmode = \"off\"\n[backup]\ndir = \"{}\"\n",
            inst.config.data_dir.display(),
            dir.display()
        ),
    )
    .unwrap();
    let data_dir = inst.config.data_dir.clone();
    drop(inst);
    let mut child = std::process::Command::new(docket_bin())
        .args(["backup", "now", "--config", config_file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let temp_seen = (0..20_000).any(|_| {
        let seen = std::fs::read_dir(&dir)
            .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| is_sealed_temp(&e.file_name().to_string_lossy()))));
        if !seen {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        seen
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(temp_seen, "the backup was caught mid-write");
    assert!(backup::list(&dir).unwrap().is_empty(), "no backup carries a final name");
    // Killed between its two renames, a run leaves a complete sealed file and
    // no manifest: unlisted, but every file with a final name reads whole.
    let me = Keyring::load(&[docket::secrets::KeySource::File(default_key_path(&data_dir))]).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("backup-") && name.ends_with(".sealed") {
            let pinned = Trust::signer(signing::pinned(&data_dir).unwrap());
            let mut r = backup::SealedReader::open(&path, &[me.identity().clone()], &pinned).unwrap();
            while r.next_frame().unwrap().is_some() {}
        }
    }

    let (code, out, err) = run_docket(&["backup", "now", "--config", config_file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "the killed run's temp file is swept: {names:?}");
    let (code, out, err) = run_docket(&["backup", "verify", "--config", config_file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("match the live store"), "{out}");
}

#[test]
fn a_backup_sealed_before_a_key_rotation_restores_with_the_new_key() {
    let root = tempfile::tempdir().unwrap();
    let inst = instance(root.path());
    put_records(&inst.store, 0, 10);
    let before =
        backup::run(&inst.store, &settings(&inst.config), &inst.keys.current(), &Clock::system(), &Quiet).unwrap();
    // A keyring written before docket signed its files (its signature block
    // cut off): the rotation still carries its keys over, and signs it.
    let keyring_file = inst.config.backup.dir.clone().unwrap().join(backup::KEYRING_FILE);
    let signed = std::fs::read(&keyring_file).unwrap();
    std::fs::write(&keyring_file, &signed[..signed.len() - 104]).unwrap();
    for command in [Command::KeyRotate, Command::KeyConfirm] {
        let reply = control::execute(&command, &inst.store, &inst.keys, &inst.config);
        assert!(matches!(reply, Reply::Ok(_)), "{reply:?}");
    }
    let new_key = inst.keys.current().identity().clone();
    assert!(!before.manifest.recipients.contains(&new_key.to_public().to_string()));
    let dir = inst.config.backup.dir.clone().unwrap();
    let keys = backup::opening_keys(&dir, std::slice::from_ref(&new_key), &trust(&inst)).unwrap();
    let restored = restore_into(&before, &keys, &root.path().join("r")).unwrap();
    assert_eq!(restored.head_seq, before.manifest.head_seq);

    // Without the keyring the old backup no longer opens with the new key.
    std::fs::remove_file(dir.join(backup::KEYRING_FILE)).unwrap();
    let keys = backup::opening_keys(&dir, &[new_key], &trust(&inst)).unwrap();
    let e = restore_into(&before, &keys, &root.path().join("r2")).unwrap_err();
    assert!(matches!(e, RestoreError::Backup(BackupError::Seal(SealError::WrongKey { .. }))), "{e}");
    assert!(!root.path().join("r2").exists(), "a failed restore leaves nothing behind");
}

#[test]
fn retention_keeps_the_configured_days() {
    let root = tempfile::tempdir().unwrap();
    let inst = instance(root.path());
    let clock = Clock::fixed(time::macros::datetime!(2026-11-02 02:00 UTC));
    let mut s = settings(&inst.config);
    s.keep = Keep { daily: 3, weekly: 0 };
    for day in 0..6u32 {
        put_records(&inst.store, day * 10, 10);
        backup::run(&inst.store, &s, &inst.keys.current(), &clock, &Quiet).unwrap();
        clock.advance(std::time::Duration::from_secs(86_400));
    }
    let kept: Vec<String> = backup::list(&s.dir).unwrap().iter().map(|b| b.manifest.created.to_rfc3339()).collect();
    // The oldest stays too: it is the base of the 7-day point-in-time window (backup.pitr_days).
    assert_eq!(kept, ["2026-11-02T02:00:00Z", "2026-11-05T02:00:00Z", "2026-11-06T02:00:00Z", "2026-11-07T02:00:00Z"]);
    let files = std::fs::read_dir(&s.dir).unwrap().count();
    assert_eq!(files, 4 * 2 + 1, "each kept backup has its manifest, plus the keyring; nothing else");
}

#[test]
fn verification_restores_and_compares_with_the_live_store_and_records_failure() {
    let root = tempfile::tempdir().unwrap();
    let inst = instance(root.path());
    put_records(&inst.store, 0, 100);
    let s = settings(&inst.config);
    let info = backup::run(&inst.store, &s, &inst.keys.current(), &Clock::system(), &Quiet).unwrap();
    put_records(&inst.store, 100, 50); // the live store moves on
    let me = backup::appliance_keys(&inst.keys.current());
    let scratch = root.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let v =
        docket::lifecycle::verify::verify(&inst.store, &s.dir, &me, &trust(&inst), &scratch, &Clock::system(), &Quiet)
            .unwrap();
    assert!(v.against_live && v.compared_seq > info.manifest.head_seq, "{v:?}");
    assert!(v.parts >= 3, "{v:?}");
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0, "the scratch copy is removed");

    let metrics = docket::telemetry::Metrics::default();
    let bytes = std::fs::read(&info.path).unwrap();
    let mut altered = bytes.clone();
    let at = altered.len() / 2;
    altered[at] ^= 0x40;
    std::fs::write(&info.path, &altered).unwrap();
    let outcome =
        docket::lifecycle::verify::verify(&inst.store, &s.dir, &me, &trust(&inst), &scratch, &Clock::system(), &Quiet);
    docket::lifecycle::verify::record(&s.dir, Some(&metrics), &Clock::system(), &outcome);
    let e = outcome.unwrap_err();
    assert!(e.to_string().contains(&info.path.display().to_string()) && e.to_string().contains("fix:"), "{e}");
    let status = docket::lifecycle::verify::last(&s.dir).unwrap();
    assert!(!status.ok && status.detail.contains("SHA-256"), "{status:?}");
    assert!(
        metrics.render().contains("docket_backup_verifications_total{result=\"failed\"} 1"),
        "{}",
        metrics.render()
    );
}

#[test]
fn failures_are_named_and_leave_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    let inst = instance(root.path());
    put_records(&inst.store, 0, 300);
    let s = settings(&inst.config);
    let me = inst.keys.current().identity().clone();
    let live_digest = inst.store.digest().unwrap();

    // A full disk: no final file, no temp file.
    let e = backup::run_with(&inst.store, &s, &inst.keys.current(), &Clock::system(), &Quiet, Some(2048)).unwrap_err();
    assert!(matches!(e, BackupError::Seal(SealError::NoSpace { .. })), "{e}");
    assert_eq!(std::fs::read_dir(&s.dir).unwrap().count(), 0, "nothing left in {}", s.dir.display());

    // An unreachable backup dir (its parent is a file, as with a share that is not mounted).
    let blocker = root.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let unreachable = Settings { dir: blocker.join("backups"), ..s.clone() };
    let e = backup::run(&inst.store, &unreachable, &inst.keys.current(), &Clock::system(), &Quiet).unwrap_err();
    assert!(e.to_string().contains("not-a-dir/backups") && e.to_string().contains("fix:"), "{e}");

    let info = backup::run(&inst.store, &s, &inst.keys.current(), &Clock::system(), &Quiet).unwrap();
    // A non-empty target is refused.
    let occupied = root.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("x"), b"keep me").unwrap();
    let e = restore_into(&info, std::slice::from_ref(&me), &occupied).unwrap_err();
    assert!(matches!(e, RestoreError::NotEmpty { .. }) && e.to_string().contains("--into"), "{e}");
    assert_eq!(std::fs::read(occupied.join("x")).unwrap(), b"keep me");

    // A wrong key, a truncated and a corrupt file: errors naming the file, no output.
    let other = age::x25519::Identity::generate();
    let e = restore_into(&info, &[other], &root.path().join("w")).unwrap_err();
    assert!(e.to_string().contains(&info.path.display().to_string()) && e.to_string().contains("--key"), "{e}");
    let bytes = std::fs::read(&info.path).unwrap();
    std::fs::write(&info.path, &bytes[..bytes.len() / 3]).unwrap();
    let e = restore_into(&info, std::slice::from_ref(&me), &root.path().join("t")).unwrap_err();
    assert!(e.to_string().contains("truncated") && e.to_string().contains("fix:"), "{e}");
    let mut bad = bytes.clone();
    let at = bytes.len() - 50;
    bad[at] ^= 1;
    std::fs::write(&info.path, &bad).unwrap();
    let mut manifest = info.clone();
    manifest.manifest.sha256 = docket::lifecycle::backup::sealed::file_sha256(&info.path).unwrap();
    let e = restore_into(&manifest, std::slice::from_ref(&me), &root.path().join("c")).unwrap_err();
    let shown = info.manifest_path().display().to_string();
    assert!(
        e.to_string().contains("altered") && e.to_string().contains(&shown),
        "an edited manifest fails its signature: {e}"
    );
    for dir in ["w", "t", "c"] {
        assert!(!root.path().join(dir).exists(), "{dir}: no partial output");
    }
    let leftovers: Vec<PathBuf> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("restoring"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(inst.store.digest().unwrap(), live_digest, "the live store is untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_writes_nothing_and_replace_refuses_a_running_service_then_swaps_and_keeps_the_old_dir() {
    let keys = tempfile::tempdir().unwrap();
    let share = keys.path().join("share");
    let dir = share.clone();
    let s = TestServer::start_with(move |c| c.backup.dir = Some(dir)).await;
    let data = s.dir.path().join("data");
    let config = keys.path().join("docket.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\n[tls]\nmode = \"off\"\n[backup]\ndir = \"{}\"\n", data.display(), share.display()),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let (code, out, err) = docket(&["backup", "now", "--config", cfg]).await;
    assert_eq!(code, 0, "{out}{err}");
    let info = backup::list(&share).unwrap().pop().unwrap();
    let file = info.path.to_str().unwrap();
    let into = keys.path().join("checked");
    let (code, out, err) =
        docket(&["restore", "--backup", file, "--into", into.to_str().unwrap(), "--dry-run", "--config", cfg]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dry run"), "{out}");
    assert!(!into.exists(), "a dry run writes nothing");

    // Issue 16, finding 6: with its control socket gone, the service still runs
    // (and writes): its life lock, not the socket, says so.
    std::fs::remove_file(data.join("control.sock")).unwrap();
    let (code, _, err) = docket(&["restore", "--backup", file, "--replace", "--config", cfg]).await;
    assert_ne!(code, 0);
    assert!(err.contains("service is running") && err.contains("service.lock"), "{err}");
    drop(s.stop().await.keep());
    std::fs::write(data.join("marker"), b"old").unwrap();
    let (code, out, err) = docket(&["restore", "--backup", file, "--replace", "--config", cfg]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!data.join("marker").exists(), "the restored dir is in place");
    let kept: Vec<PathBuf> = std::fs::read_dir(s_parent(&data))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("before-restore"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(kept[0].join("marker")).unwrap(), b"old", "the old data dir is kept");
    assert_eq!(
        Store::open(&data.join("docket.redb"), Clock::system()).unwrap().journal_head().unwrap(),
        info.manifest.head_seq
    );
}

fn s_parent(p: &Path) -> &Path {
    p.parent().unwrap()
}

#[test]
fn the_demo_keeps_its_backups_under_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = docket::demo::config(dir.path(), 8443, 8080).unwrap();
    assert_eq!(config.backup.dir, Some(dir.path().join("backups")));
}

#[test]
fn backup_settings_are_validated_at_load_naming_the_key() {
    use docket::config::Layers;
    for (var, value, key) in [
        ("DOCKET_BACKUP__SCHEDULE", "every night", "backup.schedule"),
        ("DOCKET_BACKUP__VERIFY_SCHEDULE", "0 0 25 * * *", "backup.verify_schedule"),
        ("DOCKET_BACKUP__RECIPIENTS", "AGE-SECRET-KEY-1XYZ", "backup.recipients"),
        ("DOCKET_BACKUP__KEEP_DAILY", "0", "backup.keep_daily"),
    ] {
        let env = vec![("DOCKET_TLS__MODE".to_string(), "off".to_string()), (var.to_string(), value.to_string())];
        let e =
            Layers::new().env(env).and_then(|l| l.build()).err().unwrap_or_else(|| panic!("{var}={value} accepted"));
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
    }
    let offline = age::x25519::Identity::generate().to_public().to_string();
    let env = vec![
        ("DOCKET_TLS__MODE".to_string(), "off".to_string()),
        ("DOCKET_BACKUP__RECIPIENTS".to_string(), offline.clone()),
    ];
    assert_eq!(Layers::new().env(env).unwrap().build().unwrap().config.backup.recipients, vec![offline]);
}

#[test]
fn the_scheduled_jobs_count_their_outcomes() {
    let root = tempfile::tempdir().unwrap();
    let inst = instance(root.path());
    let metrics = docket::telemetry::Metrics::default();
    let mut unreachable = inst.config.clone();
    let not_a_dir = root.path().join("not-a-dir");
    std::fs::write(&not_a_dir, b"").unwrap();
    unreachable.backup.dir = Some(not_a_dir);
    let e = backup::job_backup(&inst.store, &inst.keys.current(), &unreachable, Some(&metrics), &Quiet).unwrap_err();
    assert!(e.to_string().contains("not-a-dir") && e.to_string().contains("fix:"), "{e}");
    let info = backup::job_backup(&inst.store, &inst.keys.current(), &inst.config, Some(&metrics), &Quiet).unwrap();
    docket::lifecycle::verify::job_verify(&inst.store, &inst.keys.current(), &inst.config, Some(&metrics), &Quiet)
        .unwrap();
    let text = metrics.render();
    for line in [
        "docket_backups_total{result=\"failed\"} 1",
        "docket_backups_total{result=\"ok\"} 1",
        "docket_backup_verifications_total{result=\"ok\"} 1",
        &format!("docket_backup_last_bytes {}", info.manifest.bytes),
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    assert!(docket::lifecycle::verify::last(&inst.config.backup.dir.clone().unwrap()).unwrap().ok);
}

/// Visits every row of a store file as an export would, without opening it
/// through `Store` (which would migrate it first).
fn raw_rows(path: &Path, visit: &mut backup::archive::Visit<'_>) -> Result<u64, docket::store::StoreError> {
    use docket::store::{RawRow, Section, TABLES};
    use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
    let db = redb::Database::open(path).unwrap();
    let r = db.begin_read().unwrap();
    let meta = r.open_table(TableDefinition::<&str, &[u8]>::new("meta")).unwrap();
    for row in meta.iter().unwrap() {
        let (k, v) = row.unwrap();
        visit(RawRow { section: Section::Meta, key: k.value().as_bytes(), value: v.value() })?;
    }
    for table in TABLES {
        let Ok(t) = r.open_table(TableDefinition::<&[u8], &[u8]>::new(table.name())) else { continue };
        for row in t.iter().unwrap() {
            let (k, v) = row.unwrap();
            visit(RawRow { section: Section::Table(*table), key: k.value(), value: v.value() })?;
        }
    }
    let journal = r.open_table(TableDefinition::<u64, &[u8]>::new("journal")).unwrap();
    let mut head = 0;
    for row in journal.iter().unwrap() {
        let (k, v) = row.unwrap();
        head = k.value();
        visit(RawRow { section: Section::Journal, key: &head.to_be_bytes(), value: v.value() })?;
    }
    Ok(head)
}

#[test]
fn a_backup_of_an_older_schema_restores_migrated() {
    let root = tempfile::tempdir().unwrap();
    let old = root.path().join("v1.redb");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1.redb"), &old).unwrap();
    let key = age::x25519::Identity::generate();
    let dir = root.path().join("backups");
    std::fs::create_dir(&dir).unwrap();
    let options = backup::archive::WriteOptions {
        dir: &dir,
        recipients: &[key.to_public()],
        keys: &[],
        signer: test_signer(),
        created: docket::timestamp::Timestamp::from_micros(1_780_000_000_000_000),
        progress: &Quiet,
        fail_after: None,
    };
    let info = backup::archive::write_rows(&options, 0, |visit| raw_rows(&old, visit)).unwrap();
    assert_eq!(info.manifest.schema_version, 1);
    let restored = restore_into(&info, &[key], &root.path().join("r")).unwrap();
    assert_eq!(restored.schema_version, docket::store::SCHEMA_VERSION);
    assert!(restored.head_seq > info.manifest.head_seq, "the migration's fence continues the journal");
    let migrated = Store::open(&old, Clock::system()).unwrap(); // the same file migrated in place
    let copy = Store::open(&restored.into.join("docket.redb"), Clock::system()).unwrap();
    assert_eq!(copy.digest().unwrap(), migrated.digest().unwrap());
}

#[test]
fn what_killed_restores_and_verifications_left_is_swept() {
    let root = tempfile::tempdir().unwrap();
    let inst = instance(root.path());
    let s = settings(&inst.config);
    let info = backup::run(&inst.store, &s, &inst.keys.current(), &Clock::system(), &Quiet).unwrap();
    let stale_restore = root.path().join(".r.restoring-999999999");
    let stale_verify = root.path().join(".verify-999999999");
    for dir in [&stale_restore, &stale_verify] {
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        std::fs::write(dir.join("docket.redb"), b"half").unwrap();
    }
    restore_into(&info, &[inst.keys.current().identity().clone()], &root.path().join("r")).unwrap();
    assert!(!stale_restore.exists(), "a killed restore's staging dir is removed");
    let me = backup::appliance_keys(&inst.keys.current());
    docket::lifecycle::verify::verify(&inst.store, &s.dir, &me, &trust(&inst), root.path(), &Clock::system(), &Quiet)
        .unwrap();
    assert!(!stale_verify.exists(), "a killed verification's scratch dir is removed");
}

/// A config file for `instance(root)` (for the binary).
fn config_file(root: &Path) -> PathBuf {
    let path = root.join("docket.toml");
    let text = format!(
        "data_dir = \"{}\"\n[tls]\nmode = \"off\"\n[backup]\ndir = \"{}\"\n",
        root.join("data").display(),
        root.join("backups").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Issue 16, finding 1, the whole-backup attack: someone who can write the
/// backup share builds a store of their own (their master key, their rows),
/// seals its backup to the victim's public recipient (printed in every
/// manifest) and drops it beside the victim's backups with a manifest that
/// matches it. It decrypts with the victim's key; only the signature tells,
/// and the restore refuses it before importing anything.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_backup_sealed_to_the_victims_recipient_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let victim = instance(root.path());
    put_records(&victim.store, 0, 10);
    let genuine =
        backup::run(&victim.store, &settings(&victim.config), &victim.keys.current(), &Clock::system(), &Quiet)
            .unwrap();
    let recipient = victim.keys.current().age_recipient().clone();
    let victim_key = victim.keys.current().identity().clone();

    let elsewhere = tempfile::tempdir().unwrap();
    let attacker = instance(elsewhere.path());
    put_records(&attacker.store, 0, 3);
    let attacker_key = attacker.keys.current().identity().clone();
    let forger = Signer::generate();
    let options = backup::archive::WriteOptions {
        dir: &root.path().join("backups"),
        recipients: std::slice::from_ref(&recipient),
        keys: std::slice::from_ref(&attacker_key),
        signer: &forger,
        created: genuine.manifest.created.plus_micros(1),
        progress: &Quiet,
        fail_after: None,
    };
    let forged = backup::archive::write(&attacker.store, &options).unwrap();

    let e = restore_into(&forged, std::slice::from_ref(&victim_key), &root.path().join("r")).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, RestoreError::Backup(BackupError::Seal(SealError::UnknownSigner { .. }))), "{text}");
    assert!(text.contains(&forged.manifest_path().display().to_string()) && text.contains("move it out"), "{text}");
    assert!(!root.path().join("r").exists(), "nothing was written");

    // The same through the binary, pinned by the instance's own signing.pub.
    let cfg = config_file(root.path());
    let into = root.path().join("restored");
    let args = ["restore", "--backup", forged.path.to_str().unwrap(), "--into", into.to_str().unwrap()];
    let (code, out, err) = docket(&[&args[..], &["--config", cfg.to_str().unwrap()]].concat()).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("not the pinned signer")
            && err.contains(forged.path.file_name().unwrap().to_str().unwrap().trim_end_matches(".sealed")),
        "{err}"
    );
    assert!(!into.exists());
    // Without any pin nothing is believed, and the error names the fix.
    let (code, _, err) =
        docket(&[&args[..], &["--key", default_key_path(&root.path().join("data")).to_str().unwrap()]].concat()).await;
    assert_ne!(code, 0);
    assert!(err.contains("--trust") && err.contains("docket doctor"), "{err}");
    // The genuine backup restores with the fingerprint alone (a new machine).
    let fingerprint = signing::pinned(&root.path().join("data")).unwrap().fingerprint();
    let key_file = root.path().join("victim.key");
    write_identity(&key_file, &victim_key).unwrap();
    let genuine_args = [
        "restore",
        "--backup",
        genuine.path.to_str().unwrap(),
        "--into",
        into.to_str().unwrap(),
        "--key",
        key_file.to_str().unwrap(),
        "--trust",
        &fingerprint,
    ];
    let (code, out, err) = docket(&genuine_args).await;
    assert_eq!(code, 0, "{out}{err}");

    // A forger with no key at all: the same file without signatures is refused too.
    let mut unsigned = forged.clone();
    unsigned.manifest.signature.clear();
    let e = restore_into(&unsigned, &[victim_key], &root.path().join("u")).unwrap_err();
    assert!(e.to_string().contains("no signature") && e.to_string().contains("--allow-unsigned"), "{e}");
}

/// Issue 16, finding 1: a master key the configured instance does not know
/// is installed only when the operator says so.
#[test]
fn a_carried_master_key_the_instance_does_not_know_needs_accept_master_key() {
    let root = tempfile::tempdir().unwrap();
    let inst = instance(root.path());
    let info =
        backup::run(&inst.store, &settings(&inst.config), &inst.keys.current(), &Clock::system(), &Quiet).unwrap();
    let me = inst.keys.current().identity().clone();
    let other = age::x25519::Identity::generate().to_public().to_string();
    let mut options = RestoreOptions::new(Clock::system(), &Quiet, trust(&inst));
    options.known_keys = Some(vec![other]);
    let e = restore::restore(Some(&info), std::slice::from_ref(&me), &root.path().join("a"), &options, |_| {
        Ok::<(), RestoreError>(())
    })
    .unwrap_err();
    assert!(matches!(e, RestoreError::UnknownMasterKey { .. }) && e.to_string().contains("--accept-master-key"), "{e}");
    assert!(!root.path().join("a").exists());
    options.accept_master_key = true;
    restore::restore(Some(&info), std::slice::from_ref(&me), &root.path().join("b"), &options, |_| {
        Ok::<(), RestoreError>(())
    })
    .unwrap();
    options.accept_master_key = false;
    options.known_keys = Some(vec![me.to_public().to_string()]);
    restore::restore(Some(&info), &[me], &root.path().join("c"), &options, |_| Ok::<(), RestoreError>(())).unwrap();
}

/// Issue 16, finding 7: whatever the umask, everything docket creates under
/// the backup dir is 0700 (dirs) or 0600 (files).
#[test]
fn every_file_and_dir_under_backups_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().unwrap();
    let inst = instance(root.path());
    put_records(&inst.store, 0, 10);
    backup::job_backup(&inst.store, &inst.keys.current(), &inst.config, None, &Quiet).unwrap();
    docket::lifecycle::verify::job_verify(&inst.store, &inst.keys.current(), &inst.config, None, &Quiet).unwrap();
    let signer = signing::ensure(&inst.store, &inst.keys.current()).unwrap();
    let seal = docket::lifecycle::shipping::ApplianceSeal { keys: inst.keys.clone(), offline: vec![], signer };
    let segments = root.path().join("backups").join(docket::lifecycle::shipping::SEGMENTS_DIR);
    let mut shipper = docket::lifecycle::shipping::Shipper::open(
        inst.store.clone(),
        &segments,
        Arc::new(seal),
        docket::lifecycle::shipping::Roll::default(),
        None,
    )
    .unwrap();
    put_records(&inst.store, 10, 10);
    shipper.ship().unwrap();
    let mut seen = vec![];
    let mut stack = vec![root.path().join("backups")];
    while let Some(dir) = stack.pop() {
        seen.push((dir.clone(), std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777));
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                seen.push((path.clone(), std::fs::metadata(&path).unwrap().permissions().mode() & 0o777));
            }
        }
    }
    let names: Vec<String> = seen.iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in ["last-verify.json", "shipping.json", "keyring.sealed", "segments"] {
        assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
    }
    for (path, mode) in seen {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
    assert_eq!(
        std::fs::metadata(root.path().join("data").join("signing.pub")).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// Issue 16, finding 4: when the shipper refuses its segment directory (here
/// a later timeline's segments beside a restored store), point-in-time
/// protection is off, and every place an operator looks says so: doctor,
/// /metrics, the readiness detail, the systemd status line, and the alert
/// rule's series.
#[test]
fn shipping_that_switches_itself_off_is_reported_everywhere() {
    use docket::lifecycle::{doctor, shipping};
    let root = tempfile::tempdir().unwrap();
    let inst = instance(root.path());
    let segments = root.path().join("backups").join(shipping::SEGMENTS_DIR);
    std::fs::create_dir_all(&segments).unwrap();
    let later = shipping::SegmentName { first: 1, last: 1_000_000, first_time: 1, last_time: 2 };
    std::fs::write(segments.join(later.file_name()), b"another timeline").unwrap();
    let metrics = Arc::new(docket::telemetry::Metrics::default());
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let started = shipping::start(&inst.config, inst.store.clone(), inst.keys.clone(), metrics.clone(), stopped);
    assert!(started.is_none(), "the shipper refuses a timeline the store is behind");

    let now = inst.store.clock().now_micros();
    let status = shipping::Status::read(&root.path().join("backups")).unwrap();
    assert!(!status.on && status.last_error.as_deref().is_some_and(|e| e.contains("move")), "{status:?}");
    assert!(metrics.render().contains("docket_ship_up 0"), "{}", metrics.render());
    assert_eq!(shipping::readiness(&inst.config, now)["state"], "off");
    assert!(shipping::status_note(&inst.config).is_some_and(|n| n.contains("OFF")));
    let checks = doctor::backups(&inst.config, docket::timestamp::Timestamp::from_micros(now));
    let shipping_check = checks.iter().find(|c| c.name == "journal shipping").unwrap();
    assert!(shipping_check.detail.contains("OFF"), "{shipping_check:?}");
    let signer = checks.iter().find(|c| c.name == "backup signer").unwrap();
    let pinned = signing::pinned(&inst.config.data_dir).unwrap();
    assert!(signer.detail.contains(&pinned.fingerprint()), "doctor prints the fingerprint to keep: {signer:?}");
    let rules =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/prometheus-alerts.yml")).unwrap();
    assert!(rules.contains("alert: DocketShippingOff") && rules.contains("docket_ship_up"), "an alert rule watches it");
}
