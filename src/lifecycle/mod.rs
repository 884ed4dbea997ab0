//! Jobs that act on the whole appliance: key rotation, upgrades (the
//! pre-migration backup and `docket upgrade-check`), `docket doctor`,
//! encrypted backups and restores, journal shipping and point-in-time
//! recovery; purges and export in later issues.
pub mod backup;
pub mod doctor;
pub mod keys;
pub mod pitr;
pub mod restore;
pub mod shipping;
pub mod upgrade;
