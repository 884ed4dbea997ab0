//! Jobs that act on the whole appliance: key rotation, upgrades (the
//! pre-migration backup and `docket upgrade-check`), `docket doctor`, the
//! scheduler every background job runs on and its history, encrypted backups
//! and restores, journal shipping and point-in-time recovery, off-site
//! copies in object storage; export in a later issue.
pub mod backup;
pub mod doctor;
pub mod erase;
pub mod export;
pub mod jobs;
pub mod keys;
pub mod ledger;
pub mod offsite;
pub mod pitr;
pub mod replay;
pub mod restore;
pub mod scheduler;
pub mod sealed;
pub mod segments;
pub mod shipping;
pub mod signing;
pub mod upgrade;
pub mod verify;
