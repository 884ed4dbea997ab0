//! Jobs that act on the whole appliance: key rotation now; backups,
//! point-in-time recovery, purges and export in later issues.
pub mod keys;
