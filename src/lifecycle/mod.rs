//! Jobs that act on the whole appliance: key rotation, upgrades (the
//! pre-migration backup and `docket upgrade-check`), `docket doctor`, the
//! scheduler every background job runs on and its history;
//! backups, point-in-time recovery, purges and export in later issues.
pub mod doctor;
pub mod jobs;
pub mod keys;
pub mod scheduler;
pub mod upgrade;
