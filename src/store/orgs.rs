//! The registry of orgs (firms): the root of tenancy.
use super::{ORG_SLUGS, ORGS, OrgId, OrgScope, Reader as _, Store, StoreError, SystemContext, Task, Tx};
use crate::clock::{micros_to_datetime, rfc3339};
use serde::{Deserialize, Serialize};

/// A firm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    pub id: OrgId,
    /// Short stable name used on the command line, e.g. `smith-jones`.
    pub slug: String,
    /// Display name, e.g. "Smith & Jones LLP".
    pub name: String,
    /// IANA time zone used for schedules and reports.
    pub time_zone: String,
    /// RFC 3339.
    pub created_at: String,
}

/// Changes an org admin may make.
#[derive(Clone, Debug, Default)]
pub struct OrgChanges {
    pub name: Option<String>,
    pub time_zone: Option<String>,
}

/// Checks a slug: 2–40 of `a-z`, `0-9`, `-`, starting with a letter.
pub fn validate_slug(slug: &str) -> Result<(), StoreError> {
    let ok = (2..=40).contains(&slug.len())
        && slug.starts_with(|c: char| c.is_ascii_lowercase())
        && slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            field: "slug",
            problem: format!("`{slug}` must be 2 to 40 characters of a-z, 0-9 and -, starting with a letter"),
        })
    }
}

/// Checks a display name: 1–200 characters, no control characters.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let len = name.trim().chars().count();
    if (1..=200).contains(&len) && !name.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            field: "name",
            problem: "must be 1 to 200 characters without control characters".into(),
        })
    }
}

/// Checks an IANA zone name loosely (`Area/City`, `UTC`).
pub fn validate_time_zone(tz: &str) -> Result<(), StoreError> {
    let ok = tz == "UTC"
        || (tz.contains('/')
            && tz.len() <= 64
            && tz.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+')));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            field: "time_zone",
            problem: format!("`{tz}` is not an IANA time zone such as America/New_York"),
        })
    }
}

impl Store {
    /// Finds an org by slug.
    pub fn org_by_slug(&self, slug: &str) -> Result<Option<Org>, StoreError> {
        self.read(|r| {
            let Some(id) = r.get_system(&ORG_SLUGS, slug.as_bytes())? else {
                return Ok(None);
            };
            r.get_system_record(&ORGS, &id)
        })
    }

    /// Every org, by id.
    pub fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        self.read(|r| {
            r.scan_system(&ORGS, &[])?
                .into_iter()
                .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string())))
                .collect()
        })
    }

    /// The org a scope belongs to.
    pub fn org(&self, scope: &OrgScope) -> Result<Org, StoreError> {
        self.read(|r| r.get_system_record(&ORGS, &scope.org().0.to_be_bytes()))?
            .ok_or_else(|| StoreError::NotFound { what: format!("org {}", scope.org()) })
    }
}

/// Creates an org with a unique slug inside the write transaction `w`.
pub fn create(w: &mut Tx, ctx: &SystemContext, slug: &str, name: &str) -> Result<Org, StoreError> {
    validate_slug(slug)?;
    validate_name(name)?;
    if w.get_system(&ORG_SLUGS, slug.as_bytes())?.is_some() {
        return Err(StoreError::Conflict { what: format!("an org with slug `{slug}`") });
    }
    let next = w.last_system_key(&ORGS)?.map_or(1, |k| u64::from_be_bytes(k) + 1);
    let org = Org {
        id: OrgId(next),
        slug: slug.into(),
        name: name.trim().into(),
        time_zone: "UTC".into(),
        created_at: rfc3339(micros_to_datetime(w.time())),
    };
    w.put_index_json(ctx, &ORGS, org.id, &org.id.0.to_be_bytes(), &org)?;
    w.put_index(ctx, &ORG_SLUGS, org.id, slug.as_bytes(), &org.id.0.to_be_bytes())?;
    Ok(org)
}

/// Applies `changes` to the scope's org inside the write transaction `w`.
pub fn update(w: &mut Tx, scope: &OrgScope, changes: &OrgChanges) -> Result<Org, StoreError> {
    if let Some(name) = &changes.name {
        validate_name(name)?;
    }
    if let Some(tz) = &changes.time_zone {
        validate_time_zone(tz)?;
    }
    let key = scope.org().0.to_be_bytes();
    let mut org: Org = w
        .get_system_record(&ORGS, &key)?
        .ok_or_else(|| StoreError::NotFound { what: format!("org {}", scope.org()) })?;
    if let Some(name) = &changes.name {
        org.name = name.trim().into();
    }
    if let Some(tz) = &changes.time_zone {
        org.time_zone = tz.clone();
    }
    w.put_index_json(&SystemContext::new(Task::OrgSettings), &ORGS, scope.org(), &key, &org)?;
    Ok(org)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::store::{OrgTask, OrgTaskContext};

    #[test]
    fn create_find_update() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), Clock::system()).unwrap();
        let ctx = OrgTaskContext::new(OrgTask::Test);
        let new = |slug: &str, name: &str| store.write(|w| create(w, &ctx, slug, name));
        let a = new("smith-jones", "Smith & Jones LLP").unwrap();
        let b = new("acme", "Acme Legal").unwrap();
        assert_eq!((a.id, b.id), (OrgId(1), OrgId(2)));
        assert!(matches!(new("acme", "Again"), Err(StoreError::Conflict { .. })));
        assert!(matches!(new("Bad Slug", "x"), Err(StoreError::Invalid { field: "slug", .. })));
        assert_eq!(store.org_by_slug("acme").unwrap(), Some(b.clone()));
        let scope = ctx.org_scope(b.id);
        let changes = OrgChanges { name: Some("Acme LLP".into()), time_zone: Some("Europe/London".into()) };
        let updated = store.write(|w| update(w, &scope, &changes)).unwrap();
        assert_eq!((updated.name.as_str(), updated.time_zone.as_str()), ("Acme LLP", "Europe/London"));
        let bad = OrgChanges { time_zone: Some("Mars".into()), ..Default::default() };
        assert!(matches!(
            store.write(|w| update(w, &scope, &bad)),
            Err(StoreError::Invalid { field: "time_zone", .. })
        ));
        assert_eq!(store.list_orgs().unwrap().len(), 2);
    }
}
