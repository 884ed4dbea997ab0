//! Journal shipping and point-in-time restore, end to end: a workload under a
//! controlled clock restored to many instants (bursts included) must equal the
//! store as it was then; missing, out-of-order and corrupt segments and
//! instants outside the window are refused with the file and the fix; a key
//! rotation between segments still restores; a `docket serve` killed while
//! shipping converges at the next start.
use docket::auth::tokens;
use docket::clio::generator::Firm;
use docket::clio::sync::{self, Pushed, SyncScope};
use docket::clock::Clock;
use docket::lifecycle::backup::archive::{self, WriteOptions};
use docket::lifecycle::backup::{Quiet, Signer, Trust};
use docket::lifecycle::pitr::{self, AtOptions, PitrError};
use docket::lifecycle::restore::RestoreOptions;
use docket::lifecycle::shipping::{self, Roll, SealedSegments, Shipper};
use docket::records::{Kind, Record};
use docket::store::{OrgId, OrgTask, OrgTaskContext, Store};
use docket::timestamp::Timestamp;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The appliance's signing key in these tests.
pub fn signer() -> &'static Signer {
    static SIGNER: std::sync::OnceLock<Signer> = std::sync::OnceLock::new();
    SIGNER.get_or_init(Signer::generate)
}

pub fn trust() -> Trust {
    Trust::signer(signer().public())
}

/// Segments sealed to `to`, opened with `with`, signed by [`signer`].
fn sealed(to: Vec<age::x25519::Recipient>, with: Vec<age::x25519::Identity>) -> SealedSegments {
    SealedSegments { recipients: to, identities: with, signer: Some(signer().clone()), trust: trust() }
}

fn key() -> (age::x25519::Identity, SealedSegments) {
    let id = age::x25519::Identity::generate();
    let seal = sealed(vec![id.to_public()], vec![id.clone()]);
    (id, seal)
}

fn at_options<'a>(
    backup_dir: &'a Path,
    identities: &'a [age::x25519::Identity],
    at: Timestamp,
    into: &'a Path,
    dry_run: bool,
) -> AtOptions<'a> {
    let restore = RestoreOptions { dry_run, ..RestoreOptions::new(Clock::system(), &Quiet, trust()) };
    AtOptions { backup_dir, identities, at, into, restore }
}

/// A small deterministic pseudo-random sequence (xorshift).
struct Dice(u64);

impl Dice {
    fn roll(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

struct Workload {
    clock: Clock,
    store: Arc<Store>,
    sync: SyncScope,
    org: OrgId,
    firm: Firm,
    backups: PathBuf,
    dice: Dice,
    version: u64,
}

impl Workload {
    fn new(dir: &Path) -> Workload {
        let clock = Clock::fixed(time::macros::datetime!(2026-03-02 09:00 UTC));
        let store = Arc::new(Store::open(&dir.join("docket.redb"), clock.clone()).unwrap());
        let ctx = OrgTaskContext::new(OrgTask::Test);
        let org = docket::control::create_org(&store, &ctx, "acme", "Acme LLP").unwrap();
        let sync = SyncScope::begin(&store, &ctx, org.id).unwrap();
        let backups = dir.join("backups");
        std::fs::create_dir_all(&backups).unwrap();
        Workload {
            clock,
            store,
            sync,
            org: org.id,
            firm: Firm::new(3, 400),
            backups,
            dice: Dice(0x9e37_79b9),
            version: 0,
        }
    }

    fn record(&mut self, i: u64) -> Record {
        let kind = Kind::ALL[(i % 8) as usize];
        let mut raw = self.firm.record(kind, (i / 8) % self.firm.count(kind));
        self.version += 1;
        raw["etag"] = serde_json::json!(format!("e{}", self.version));
        Record::from_clio(kind, raw).unwrap()
    }

    /// One transaction of the workload, chosen at random: a sync page, edits,
    /// deletes, a token change or a member change.
    fn step(&mut self) {
        let ctx = OrgTaskContext::new(OrgTask::Test);
        match self.dice.roll(5) {
            0 | 1 => {
                let start = self.dice.roll(300);
                let page: Vec<Record> = (start..start + 20).map(|i| self.record(i)).collect();
                self.upsert(page);
            }
            2 => {
                let gone: Vec<(Kind, String)> = (0..3)
                    .map(|_| {
                        let i = self.dice.roll(300);
                        let r = self.record(i);
                        (r.kind, r.id)
                    })
                    .collect();
                let sync = &self.sync;
                self.store
                    .write(|w| {
                        for (kind, id) in gone {
                            sync::apply_pushed(w, sync, Pushed::Delete(kind, id))?;
                        }
                        Ok(())
                    })
                    .unwrap();
            }
            3 => {
                let name = format!("t{}", self.version);
                self.version += 1;
                let (_, record) = tokens::create_service(&self.store, &ctx, self.org, &name, "staff", None).unwrap();
                if self.dice.roll(2) == 0 {
                    let scope = ctx.org_scope(self.org);
                    self.store.write(|w| tokens::revoke(w, &scope, &record.id)).unwrap();
                }
            }
            _ => {
                let scope = ctx.org_scope(self.org);
                let new = docket::auth::users::NewMember {
                    email: format!("m{}@acme.test", self.version),
                    name: "Member".into(),
                    role: "staff".into(),
                };
                self.version += 1;
                let grantor = docket::auth::grant::Grantor::operator();
                self.store.write(|w| docket::auth::users::create(w, &scope, &new, &grantor)).unwrap();
            }
        }
    }

    fn upsert(&self, records: Vec<Record>) {
        let sync = &self.sync;
        self.store
            .write(|w| {
                for r in records {
                    sync::apply_pushed(w, sync, Pushed::Upsert(r))?;
                }
                Ok(())
            })
            .unwrap();
    }

    fn backup(&self, seal: &SealedSegments) {
        let options = WriteOptions {
            dir: &self.backups,
            recipients: &seal.recipients,
            keys: &[],
            signer: signer(),
            created: self.now(),
            progress: &Quiet,
            fail_after: None,
        };
        archive::write(&self.store, &options).unwrap();
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.clock.now_micros())
    }

    fn shipper(&self, seal: &SealedSegments, roll: Roll) -> Shipper {
        let dir = self.backups.join(shipping::SEGMENTS_DIR);
        Shipper::open(self.store.clone(), &dir, Arc::new(seal.clone()), roll, None).unwrap()
    }
}

/// Restores to `at` into a new data dir; the restored store's digest.
fn restore_at(backups: &Path, identities: &[age::x25519::Identity], at: Timestamp) -> Result<String, PitrError> {
    let into = tempfile::tempdir().unwrap();
    let target = into.path().join("data");
    let options = at_options(backups, identities, at, &target, false);
    let restored = pitr::restore_at(&options)?;
    let store = Store::open(&restored.restored.into.join("docket.redb"), Clock::system()).unwrap();
    Ok(store.digest().unwrap())
}

#[test]
fn restoring_to_any_instant_reproduces_the_store_then() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Workload::new(dir.path());
    let (id, seal) = key();
    let mut shipper = w.shipper(&seal, Roll { bytes: 64 << 10, age: Duration::from_secs(3600) });
    // (instant, digest) after every commit; bursts share or neighbour a microsecond.
    let mut states: Vec<(Timestamp, String)> = vec![];
    for step in 0..120 {
        match w.dice.roll(4) {
            0 => {} // same instant as the previous commit
            1 => w.clock.advance(Duration::from_micros(1)),
            _ => w.clock.advance(Duration::from_millis(1 + w.dice.roll(5000))),
        }
        w.step();
        states.push((w.now(), w.store.digest().unwrap()));
        if step % 7 == 0 {
            shipper.ship().unwrap();
        }
        if step == 40 || step == 90 {
            w.backup(&seal);
        }
    }
    shipper.ship().unwrap();
    assert!(w.store.journal_start().unwrap().is_none(), "the live journal is pruned once shipped");
    let chain = shipping::list(&w.backups.join(shipping::SEGMENTS_DIR)).unwrap().chain;
    assert!(chain.len() > 3, "segments rolled: {}", chain.len());
    // Every commit instant, one microsecond before some, and random instants between.
    let first = states[0].0;
    let mut instants: Vec<Timestamp> = states.iter().map(|s| s.0).collect();
    instants.extend(states.iter().step_by(5).map(|s| s.0.plus_micros(-1)).filter(|t| *t >= first));
    let span = (states.last().unwrap().0.micros() - first.micros()) as u64;
    instants.extend((0..15).map(|_| first.plus_micros(w.dice.roll(span + 1) as i64)));
    instants.sort();
    instants.dedup();
    for at in instants {
        let expected = &states.iter().rev().find(|(t, _)| *t <= at).unwrap().1;
        let got = restore_at(&w.backups, std::slice::from_ref(&id), at).unwrap();
        assert_eq!(&got, expected, "restored to {}", at.to_rfc3339());
    }
}

/// A store with a few shipped segments (one transaction each, a second
/// apart), for the failure cases.
fn shipped(dir: &Path, seal: &SealedSegments) -> (Workload, Vec<shipping::Segment>) {
    let mut w = Workload::new(dir);
    let mut shipper = w.shipper(seal, Roll { bytes: 1, age: Duration::from_secs(3600) });
    for n in 0..5 {
        w.clock.advance(Duration::from_secs(1));
        let page = (n * 10..n * 10 + 10).map(|i| w.record(i)).collect();
        w.upsert(page);
        shipper.ship().unwrap();
    }
    let chain = shipping::list(&w.backups.join(shipping::SEGMENTS_DIR)).unwrap().chain;
    (w, chain)
}

#[test]
fn a_missing_segment_is_named_and_nothing_is_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (id, seal) = key();
    let (w, chain) = shipped(dir.path(), &seal);
    std::fs::remove_file(&chain[2].path).unwrap();
    let into = dir.path().join("restored");
    let ids = [id];
    let options = at_options(&w.backups, &ids, w.now(), &into, false);
    let err = pitr::restore_at(&options).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PitrError::Gap { .. }), "{text}");
    assert!(text.contains(&chain[1].path.display().to_string()) && text.contains("copy the missing segment"), "{text}");
    assert!(!into.exists(), "no partial data dir");
}

#[test]
fn a_corrupt_or_swapped_segment_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (id, seal) = key();
    let (w, chain) = shipped(dir.path(), &seal);
    // Two segments' contents swapped under each other's names: out of order.
    let (a, b) = (std::fs::read(&chain[1].path).unwrap(), std::fs::read(&chain[3].path).unwrap());
    std::fs::write(&chain[1].path, &b).unwrap();
    std::fs::write(&chain[3].path, &a).unwrap();
    let err = restore_at(&w.backups, std::slice::from_ref(&id), w.now()).unwrap_err().to_string();
    assert!(err.contains(&chain[1].path.display().to_string()) && err.contains("does not match its name"), "{err}");
    // A flipped byte: the sealed file fails to authenticate.
    std::fs::write(&chain[1].path, &a).unwrap();
    let mut bytes = b.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&chain[3].path, &bytes).unwrap();
    let err = restore_at(&w.backups, std::slice::from_ref(&id), w.now()).unwrap_err().to_string();
    assert!(err.contains(&chain[3].path.display().to_string()), "{err}");
    // Before the damaged segment, the restore still works.
    let before = Timestamp::from_micros(chain[2].name.last_time);
    assert!(restore_at(&w.backups, &[id], before).is_ok());
}

/// Issue 16, finding 8: `--at now` (an instant after the last commit, with
/// shipping caught up) is that commit's state, and the report says so.
#[test]
fn an_instant_after_the_last_commit_with_shipping_caught_up_is_that_commits_state() {
    let dir = tempfile::tempdir().unwrap();
    let (id, seal) = key();
    let (w, _) = shipped(dir.path(), &seal);
    let last = w.now();
    let ids = [id];
    for (n, at) in [last.plus_micros(1), last.plus_micros(20_000_000)].into_iter().enumerate() {
        let into = dir.path().join(format!("now{n}"));
        let restored = pitr::restore_at(&at_options(&w.backups, &ids, at, &into, false)).unwrap();
        assert_eq!(restored.after_last_commit, Some(last));
        let report = restored.describe(at);
        assert!(report.contains("after the newest shipped commit") && report.contains(&last.to_rfc3339()), "{report}");
        let store = Store::open(&into.join("docket.redb"), Clock::system()).unwrap();
        assert_eq!(store.digest().unwrap(), w.store.digest().unwrap());
    }
    // Unknown shipping state (no status file): refused, naming the window.
    std::fs::remove_file(w.backups.join(shipping::STATUS_FILE)).unwrap();
    let into = dir.path().join("unknown");
    let err = pitr::restore_at(&at_options(&w.backups, &ids, last.plus_micros(1), &into, false)).unwrap_err();
    assert!(matches!(err, PitrError::Outside { .. }), "{err}");
}

#[test]
fn an_instant_outside_the_window_names_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let (id, seal) = key();
    let (w, chain) = shipped(dir.path(), &seal);
    let from = Timestamp::from_micros(chain[0].name.first_time);
    // Long after the shipper last confirmed it was caught up: later commits may be unshipped.
    let late = w.now().plus_micros(3 * shipping::HEARTBEAT.as_micros() as i64);
    for at in [from.plus_micros(-1), late] {
        let err = restore_at(&w.backups, std::slice::from_ref(&id), at).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, PitrError::Outside { .. }), "{text}");
        assert!(text.contains(&from.to_rfc3339()) && text.contains(&w.now().to_rfc3339()), "{text}");
    }
}

#[test]
fn segments_sealed_before_a_key_rotation_still_restore() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Workload::new(dir.path());
    let (old, old_seal) = key();
    let (offline, _) = key();
    let (new, _) = key();
    let sealed_to = |id: &age::x25519::Identity| sealed(vec![id.to_public(), offline.to_public()], vec![id.clone()]);
    let mut shipper = w.shipper(&sealed_to(&old), Roll { bytes: 1, age: Duration::from_secs(3600) });
    for _ in 0..3 {
        w.clock.advance(Duration::from_secs(1));
        w.step();
        shipper.ship().unwrap();
    }
    drop(shipper);
    // The appliance key rotates: the shipper restarts sealing to the new key.
    let mut shipper = w.shipper(&sealed_to(&new), Roll { bytes: 1, age: Duration::from_secs(3600) });
    for _ in 0..3 {
        w.clock.advance(Duration::from_secs(1));
        w.step();
        shipper.ship().unwrap();
    }
    let expected = w.store.digest().unwrap();
    assert_eq!(
        restore_at(&w.backups, &[new.clone(), old.clone()], w.now()).unwrap(),
        expected,
        "current and previous key"
    );
    assert_eq!(
        restore_at(&w.backups, std::slice::from_ref(&offline), w.now()).unwrap(),
        expected,
        "the offline key alone"
    );
    let err = restore_at(&w.backups, &[new], w.now()).unwrap_err().to_string();
    assert!(err.contains("none of the keys"), "without the previous key the old segments are named: {err}");
    let _ = old_seal;
}

/// Reads every segment with a final name (each must open and match its name)
/// and checks the chain: consecutive seqs from 1, no seq twice.
/// Right after a kill (`killed`), a shorter segment the killed round had
/// superseded may remain (the next start removes it): it must be a prefix of
/// a chain segment.
fn check_chain(segments: &Path, key: &age::x25519::Identity, killed: bool) -> shipping::Segment {
    let listing = shipping::list(segments).unwrap();
    if killed {
        for old in &listing.superseded {
            let longer = listing.chain.iter().find(|s| s.name.first == old.name.first).unwrap();
            assert!(longer.name.last > old.name.last, "{old:?} is superseded by {longer:?}");
        }
    } else {
        assert!(listing.superseded.is_empty(), "a start removes superseded segments: {:?}", listing.superseded);
    }
    // Written by a service: its own signer, pinned in `<root>/data/signing.pub`.
    let data = segments.parent().and_then(Path::parent).unwrap().join("data");
    let pinned = docket::lifecycle::backup::signing::pinned(&data).map_or_else(trust, Trust::signer);
    let seal = SealedSegments::reader(vec![key.clone()], pinned);
    let mut next = 1;
    for segment in &listing.chain {
        assert_eq!(segment.name.first, next, "no seq missing or shipped twice before {}", segment.path.display());
        let entries = shipping::read(&seal, segment).unwrap();
        assert_eq!(entries.len() as u64, segment.name.last - segment.name.first + 1);
        next = segment.name.last + 1;
    }
    listing.chain.last().cloned().unwrap()
}

#[tokio::test]
async fn a_service_killed_while_shipping_converges_at_the_next_start() {
    use crate::support::{eventually, free_port, run_docket};
    let dir = tempfile::tempdir().unwrap();
    let (data, backups) = (dir.path().join("data"), dir.path().join("backups"));
    let port = free_port();
    let config = dir.path().join("docket.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[tls]\nmode = \"off\"\n[server]\nlisten = [\"127.0.0.1:{port}\"]\n[backup]\ndir = \"{}\"\nship_interval = 1\n",
            data.display(),
            backups.display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap().to_string();
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", &cfg]);
        run_docket(&all, &[])
    };
    assert_eq!(cli(&["key", "generate"]).0, 0);
    assert_eq!(cli(&["org", "create", "--slug", "acme", "--name", "Acme"]).0, 0);
    let (code, out, err) = cli(&["token", "create", "--org", "acme", "--role", "admin", "--name", "t"]);
    assert_eq!(code, 0, "{err}");
    let token = out.lines().next().unwrap().trim().to_string();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let ready = async || http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200);
    // Writers that keep committing (token creations) until the test ends.
    let writers = |count: usize| {
        (0..count)
            .map(|w| {
                let (http, base, token) = (http.clone(), base.clone(), token.clone());
                tokio::spawn(async move {
                    for n in 0.. {
                        let body = serde_json::json!({"name": format!("w{w}-{n}"), "role": "staff"});
                        let _ = http
                            .post(format!("{base}/api/v1/tokens/service"))
                            .bearer_auth(&token)
                            .json(&body)
                            .send()
                            .await;
                    }
                })
            })
            .collect::<Vec<_>>()
    };
    let segments = backups.join(shipping::SEGMENTS_DIR);
    let first = crate::crash::serve(&cfg);
    assert!(eventually(Duration::from_secs(20), ready).await, "docket serve starts");
    let load = writers(4);
    let shipped_twice = eventually(Duration::from_secs(30), async || {
        shipping::list(&segments).is_ok_and(|l| l.chain.last().is_some_and(|s| s.name.last > 40))
    })
    .await;
    assert!(shipped_twice, "segments are shipped under load");
    drop(first); // SIGKILL, mid-load: a round may be writing
    load.iter().for_each(|t| t.abort());
    let key =
        docket::secrets::Keyring::load(&[docket::secrets::KeySource::File(docket::secrets::default_key_path(&data))])
            .unwrap();
    let before = check_chain(&segments, key.identity(), true);

    let second = crate::crash::serve(&cfg);
    assert!(eventually(Duration::from_secs(20), ready).await, "docket serve starts again");
    let load = writers(2);
    let more = eventually(Duration::from_secs(30), async || {
        shipping::list(&segments).is_ok_and(|l| l.chain.last().is_some_and(|s| s.name.last > before.name.last + 20))
    })
    .await;
    assert!(more, "shipping resumes after the kill");
    load.iter().for_each(|t| t.abort());
    let pid = second.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut second = second;
    second.0.wait().unwrap();
    let last = check_chain(&segments, key.identity(), false);
    let store = Store::open(&data.join("docket.redb"), Clock::system()).unwrap();
    assert_eq!(last.name.last, store.journal_head().unwrap(), "a clean stop ships everything");
    let at = Timestamp::from_micros(last.name.last_time).to_rfc3339();
    let into = dir.path().join("restored");
    let key_file = docket::secrets::default_key_path(&data);
    let (code, out, err) = run_docket(
        &[
            "restore",
            "--at",
            &at,
            "--backup-dir",
            backups.to_str().unwrap(),
            "--into",
            into.to_str().unwrap(),
            "--key",
            key_file.to_str().unwrap(),
            "--trust",
            &docket::lifecycle::backup::signing::pinned(&data).unwrap().to_string(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let restored = Store::open(&into.join("docket.redb"), Clock::system()).unwrap();
    assert_eq!(restored.digest().unwrap(), store.digest().unwrap(), "the restore equals the store at its stop");
}

#[test]
fn retention_keeps_the_segments_after_the_oldest_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (id, seal) = key();
    let (mut w, chain) = shipped(dir.path(), &seal);
    let window_start = |w: &Workload| w.now().plus_micros(-7 * 86_400_000_000);
    assert!(
        shipping::apply_retention(&w.backups, window_start(&w)).unwrap().is_empty(),
        "no backup: the segments are the only way back"
    );
    w.backup(&seal);
    let page = (0..5).map(|i| w.record(i)).collect();
    w.clock.advance(Duration::from_secs(1));
    w.upsert(page);
    w.shipper(&seal, Roll::default()).ship().unwrap();
    assert!(
        shipping::apply_retention(&w.backups, window_start(&w)).unwrap().is_empty(),
        "a backup inside the window (a manual one) does not shorten it: issue 16"
    );
    let last = w.now();
    w.clock.advance(Duration::from_secs(8 * 86_400));
    let removed = shipping::apply_retention(&w.backups, window_start(&w)).unwrap();
    assert_eq!(
        removed,
        chain.iter().map(|s| s.path.clone()).collect::<Vec<_>>(),
        "once the backup is older than the window, it covers every earlier segment"
    );
    assert_eq!(restore_at(&w.backups, std::slice::from_ref(&id), last).unwrap(), w.store.digest().unwrap());
}

#[test]
fn a_dry_run_checks_everything_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (id, seal) = key();
    let (w, chain) = shipped(dir.path(), &seal);
    let into = dir.path().join("restored");
    let at = Timestamp::from_micros(chain[2].name.last_time);
    let options = |dry_run| at_options(&w.backups, std::slice::from_ref(&id), at, &into, dry_run);
    let checked = pitr::restore_at(&options(true)).unwrap();
    assert!(checked.restored.dry_run && !into.exists(), "nothing written");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no scratch dir left beside it");
    std::fs::remove_file(&chain[1].path).unwrap();
    let err = pitr::restore_at(&options(true)).unwrap_err().to_string();
    assert!(err.contains("missing"), "a dry run finds what the real one would: {err}");
}

/// Issue 16, finding 1, the stealthy attack: one extra segment
/// `seg_<last+1>_…`, sealed to the appliance's public recipient, holding a
/// single planted journal entry. `restore --at` would replay it into the
/// restored store with all the firm's real data and no audit event; the
/// signature check refuses it, naming the file, before anything is replayed.
#[test]
fn a_planted_segment_after_the_last_is_refused_naming_it() {
    use docket::lifecycle::backup::Pin;
    use docket::lifecycle::shipping::{SegmentName, SegmentSink as _};
    use docket::store::{JournalEntry, Op};
    let dir = tempfile::tempdir().unwrap();
    let (id, seal) = key();
    let (w, chain) = shipped(dir.path(), &seal);
    let real = shipping::read(&seal, chain.last().unwrap()).unwrap().pop().unwrap();
    let mut key_bytes = real.key.clone();
    key_bytes.extend_from_slice(b"-planted");
    let planted = JournalEntry {
        seq: real.seq + 1,
        tx: real.tx + 1,
        last: true,
        schema: real.schema,
        time: real.time + 1,
        org: real.org,
        table: real.table.clone(),
        key: key_bytes,
        op: Op::Put(b"{\"owner token\":\"dkt_attacker\"}".to_vec()),
    };
    let name = SegmentName::of(std::slice::from_ref(&planted)).unwrap();
    let path = w.backups.join(shipping::SEGMENTS_DIR).join(name.file_name());
    let forger = Signer::generate();
    let forged = SealedSegments {
        recipients: vec![id.to_public()],
        identities: vec![],
        signer: Some(forger.clone()),
        trust: Trust::signer(forger.public()),
    };
    forged.write(&path, &shipping::encode(&name, &[planted])).unwrap();

    let at = Timestamp::from_micros(name.last_time);
    let ids = [id];
    let into = dir.path().join("r");
    let err = pitr::restore_at(&at_options(&w.backups, &ids, at, &into, false)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()) && text.contains("move it out"), "{text}");
    assert!(!into.exists(), "nothing was written");
    // A dry run refuses it too, and an instant before it still restores.
    assert!(pitr::restore_at(&at_options(&w.backups, &ids, at, &into, true)).is_err());
    let before = Timestamp::from_micros(real.time);
    assert_eq!(restore_at(&w.backups, &ids, before).unwrap(), w.store.digest().unwrap());

    // Only the pin stands in the way: believing the forger too, the planted entry is replayed.
    let mut options = at_options(&w.backups, &ids, at, &into, false);
    options.restore.trust = Trust::pins(vec![Pin::Key(signer().public()), Pin::Key(forger.public())]);
    assert_eq!(pitr::restore_at(&options).unwrap().head, real.seq + 1);
}

/// Issue 16, finding 2: `restore --at` while the service ships. The shipper
/// rewrites the open segment under a longer name and removes the shorter
/// one; a restore that listed the shorter one finds its successor.
#[test]
fn restores_while_the_shipper_rolls_the_open_segment_succeed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let (id, seal) = key();
    let mut w = Workload::new(dir.path());
    let mut shipper = w.shipper(&seal, Roll::default());
    for n in 0..3 {
        w.clock.advance(Duration::from_millis(10));
        let page = (n * 10..n * 10 + 10).map(|i| w.record(i)).collect();
        w.upsert(page);
        shipper.ship().unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, clock, stop) = (w.store.clone(), w.clock.clone(), stop.clone());
        let scope = OrgTaskContext::new(OrgTask::Test).org_scope(w.org);
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                clock.advance(Duration::from_millis(1));
                store.write(|tx| tx.put(&scope, &docket::store::WALLS, &n.to_be_bytes(), b"wall")).unwrap();
                shipper.ship().unwrap();
                n += 1;
            }
            n
        })
    };
    let segments = w.backups.join(shipping::SEGMENTS_DIR);
    let ids = [id];
    for attempt in 0..5 {
        let newest = shipping::list(&segments).unwrap().chain.last().unwrap().name.last_time;
        let into = dir.path().join(format!("r{attempt}"));
        let restored = pitr::restore_at(&at_options(&w.backups, &ids, Timestamp::from_micros(newest), &into, false));
        assert!(restored.is_ok(), "attempt {attempt}: {}", restored.err().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 5, "the shipper kept rolling meanwhile");
}

/// Issue 16, finding 5: a point-in-time restore from segments alone (no
/// backup) ends like a backup restore: in a staging dir renamed into place,
/// with the master key, audit chains checked, search indexes built: it starts.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_from_segments_alone_is_verified_and_starts() {
    use docket::lifecycle::backup::signing;
    use docket::secrets::Keyring;
    let dir = tempfile::tempdir().unwrap();
    let keyring = Keyring::generate(&dir.path().join("master.key")).unwrap();
    let master = keyring.identity().clone();
    let mut w = Workload::new(dir.path());
    signing::ensure(&w.store, &keyring).unwrap(); // the appliance's own secret, journaled
    let seal = sealed(vec![master.to_public()], vec![master.clone()]);
    let mut shipper = w.shipper(&seal, Roll { bytes: 1, age: Duration::from_secs(3600) });
    for n in 0..3 {
        w.clock.advance(Duration::from_secs(1));
        let page = (n * 10..n * 10 + 10).map(|i| w.record(i)).collect();
        w.upsert(page);
        shipper.ship().unwrap();
    }
    let into = dir.path().join("restored");
    let ids = [master.clone()];
    let done = pitr::restore_at(&at_options(&w.backups, &ids, w.now(), &into, false)).unwrap();
    assert_eq!(done.base, None, "from segments alone");
    let r = &done.restored;
    assert_eq!(r.key, Some(docket::secrets::default_key_path(&into)), "the master key is written");
    assert!(r.orgs >= 1 && r.audit_events >= 1 && r.indexed >= 1, "{r:?}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("restoring"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let key = Keyring::load(&[docket::secrets::KeySource::File(docket::secrets::default_key_path(&into))]).unwrap();
    assert_eq!(key.identity().to_public().to_string(), master.to_public().to_string());
    drop(shipper);
    let copy = Store::open(&into.join("docket.redb"), Clock::system()).unwrap();
    assert_eq!(copy.digest().unwrap(), w.store.digest().unwrap(), "the store as of the instant");
    drop(copy);
    let instance = docket::app::Instance::open(crate::support::test_config(&into), Clock::system()).unwrap();
    let running = docket::app::start(instance).await.unwrap();
    running.stop().await.unwrap();
}
