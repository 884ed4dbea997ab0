//! Spine v2 tests (temporary: the v1 fixture writer, run once at the base commit).
use docket::auth::tokens;
use docket::auth::users::{self, NewMember};
use docket::clock::Clock;
use docket::records::{Kind, Record};
use docket::secrets::Keyring;
use docket::store::{HOOKS, RECORDS, SESSIONS, Store, SystemContext};

#[test]
#[ignore = "writes tests/fixtures/store-v1.redb; run once with the v1 code"]
fn write_v1_fixture() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1.redb");
    let _ = std::fs::remove_file(&path);
    let dir = tempfile::tempdir().unwrap();
    let keys = Keyring::generate(&dir.path().join("master.key")).unwrap();
    let clock = Clock::fixed(time::macros::datetime!(2026-03-01 09:00 UTC));
    let store = Store::open(&path, clock.clone()).unwrap();
    let ctx = SystemContext::new("fixture");
    let step = || clock.advance(std::time::Duration::from_secs(7));
    let firm = docket::control::create_org(&store, &ctx, "smith-jones", "Smith & Jones LLP").unwrap();
    step();
    let other = docket::control::create_org(&store, &ctx, "other-firm", "Other Firm").unwrap();
    step();
    for (org, email, name) in [
        (firm.id, "olive@smith-jones.test", "Olive Owner"),
        (firm.id, "sam@smith-jones.test", "Sam Staff"),
        (other.id, "otto@other.test", "Otto Other"),
    ] {
        let scope = ctx.org_scope(org);
        let new = NewMember { email: email.into(), name: name.into(), role: "owner".into() };
        store.write(|w| users::create(w, &scope, &new, true)).unwrap();
        step();
    }
    tokens::create_service(&store, &ctx, firm.id, "integration", "admin", None).unwrap();
    step();
    tokens::create_service(&store, &ctx, other.id, "reports", "auditor", Some(30)).unwrap();
    step();
    let scope = ctx.org_scope(firm.id);
    store
        .write(|w| {
            w.put_secret(&scope, &keys, "clio.refresh", b"refresh-token")?;
            w.put_system_secret(&ctx, &keys, "acme.account", b"account-key")?;
            w.put_system_json(&ctx, &HOOKS, b"hook-smith-jones", &firm.id)?;
            w.put_system_json(&ctx, &SESSIONS, b"session-hash", &serde_json::json!({"org": firm.id.0, "user": "u"}))
        })
        .unwrap();
    step();
    store
        .write(|w| {
            for (kind, id) in [(Kind::Matter, "1001"), (Kind::Contact, "2001"), (Kind::Matter, "1002")] {
                let raw = serde_json::json!({"id": id.parse::<u64>().unwrap(), "etag": "\"e1\"", "updated_at": "2026-02-27T10:00:00-05:00", "display_number": format!("M-{id}"), "name": format!("Name {id}")});
                let record = Record::from_clio(kind, raw).unwrap();
                w.put_json(&scope, &RECORDS, &docket::clio::sync::record_key(kind, id), &record)?;
            }
            Ok(())
        })
        .unwrap();
    step();
    store.write(|w| w.delete(&scope, &RECORDS, &docket::clio::sync::record_key(Kind::Matter, "1002")).map(|_| ())).unwrap();
    println!("journal head {}", store.journal_head().unwrap());
}
