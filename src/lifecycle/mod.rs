//! Jobs that act on the whole appliance: key rotation, upgrades (the
//! pre-migration backup and `docket upgrade-check`) and `docket doctor`;
//! journal shipping and point-in-time restore; backups, purges and export in
//! later issues.
pub mod doctor;
pub mod keys;
pub mod pitr;
pub mod shipping;
pub mod upgrade;
