//! Jobs that act on the whole appliance: key rotation, upgrades (the
//! pre-migration backup and `docket upgrade-check`), `docket doctor`,
//! encrypted backups and restores; point-in-time recovery, purges and export
//! in later issues.
pub mod backup;
pub mod doctor;
pub mod keys;
pub mod restore;
pub mod upgrade;
