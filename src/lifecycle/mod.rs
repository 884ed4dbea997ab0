//! Jobs that act on the whole appliance: key rotation, upgrades (the
//! pre-migration backup and `docket upgrade-check`), `docket doctor`, the
//! scheduler every background job runs on and its history, encrypted backups
//! and restores, journal shipping and point-in-time recovery; export in a
//! later issue.
pub mod backup;
pub mod doctor;
pub mod erase;
pub mod export;
pub mod jobs;
pub mod keys;
pub mod ledger;
pub mod pitr;
pub mod restore;
pub mod scheduler;
pub mod shipping;
pub mod upgrade;
