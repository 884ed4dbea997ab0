//! The firm the backup and export benchmarks measure: `clio::generator::Firm`
//! written through the sync's write path, 1,000 records per transaction.
use docket::clio::generator::Firm;
use docket::clio::sync::{self, Pushed, SyncScope};
use docket::records::{Kind, Record};
use docket::store::{OrgId, OrgTask, OrgTaskContext, Store};

const PER_TX: u64 = 1_000;

/// Creates the org `bench` and writes a firm of `total` records into it.
pub fn fill(store: &Store, total: u64) -> OrgId {
    let ctx = OrgTaskContext::new(OrgTask::Test);
    let org = docket::control::create_org(store, &ctx, "bench", "Bench LLP").expect("org");
    let sync = SyncScope::begin(store, &ctx, org.id).expect("sync scope");
    let firm = Firm::new(1, total);
    for kind in Kind::ALL {
        let count = firm.count(kind);
        let mut start = 0;
        while start < count {
            let end = (start + PER_TX).min(count);
            store
                .write(|w| {
                    for i in start..end {
                        let record = Record::from_clio(kind, firm.record(kind, i)).expect("record");
                        sync::apply_pushed(w, &sync, Pushed::Upsert(record))?;
                    }
                    Ok(())
                })
                .expect("write");
            start = end;
        }
    }
    org.id
}
