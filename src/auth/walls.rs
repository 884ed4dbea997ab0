//! Ethical walls: an admin screens a matter off from named members or
//! identity-provider groups. For a screened member the matter and everything
//! under it (activities, bills, notes, tasks, calendar entries) does not exist:
//! every list, count, export and search leaves it out, and a direct read
//! answers 404, never 403, so the wall itself reveals nothing.
//!
//! Walls apply to people (sessions and personal tokens). Service tokens act
//! for the firm and are not screened; give integrations narrow roles instead.
use super::{Principal, public_id, users};
use crate::store::{OrgScope, Reader, StoreError, Tx, WALLS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One wall around one matter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wall {
    /// Public id, e.g. `wal_1a2b3c4d5e6f`.
    pub id: String,
    /// The Clio matter id it screens.
    pub matter_id: String,
    /// Members (user ids) screened off.
    pub users: Vec<String>,
    /// Identity-provider groups screened off (as the provider names them).
    pub groups: Vec<String>,
    /// Why, e.g. "conflict: represented the other side in 2019".
    pub reason: String,
    pub created_at: i64,
    pub created_by: String,
}

/// A new wall.
#[derive(Clone, Debug)]
pub struct NewWall {
    pub matter_id: String,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub reason: String,
}

/// The matters hidden from one caller; consulted by every read of matter data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Screen {
    hidden: BTreeSet<String>,
}

impl Screen {
    /// Whether `matter_id` (and everything under it) is hidden from the caller.
    pub fn hides(&self, matter_id: &str) -> bool {
        self.hidden.contains(matter_id)
    }

    /// The hidden matter ids (for search filters).
    pub fn hidden(&self) -> &BTreeSet<String> {
        &self.hidden
    }
}

/// Every wall of the org.
pub fn list(r: &impl Reader, scope: &OrgScope) -> Result<Vec<Wall>, StoreError> {
    r.scan_json(scope, &WALLS, b"")
}

/// The screen of member `user` with identity-provider `groups`.
pub fn screen_for(r: &impl Reader, scope: &OrgScope, user: &str, groups: &[String]) -> Result<Screen, StoreError> {
    let hidden = list(r, scope)?
        .into_iter()
        .filter(|w| w.users.iter().any(|u| u == user) || w.groups.iter().any(|g| groups.contains(g)))
        .map(|w| w.matter_id)
        .collect();
    Ok(Screen { hidden })
}

/// The screen of an authenticated caller: a member's walls, none for service tokens.
pub fn screen(r: &impl Reader, principal: &Principal) -> Result<Screen, StoreError> {
    let Some(user) = principal.user() else { return Ok(Screen::default()) };
    let groups = users::get(r, principal.scope(), user)?.map(|u| u.groups).unwrap_or_default();
    screen_for(r, principal.scope(), user, &groups)
}

fn invalid(field: &'static str, problem: impl Into<String>) -> StoreError {
    StoreError::Invalid { field, problem: problem.into() }
}

/// Builds a wall; every named member must exist in the org.
pub fn create(w: &mut Tx, scope: &OrgScope, new: &NewWall) -> Result<Wall, StoreError> {
    let matter = new.matter_id.trim();
    if matter.is_empty() || matter.len() > 64 || !matter.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(invalid("matter_id", "must be a Clio matter id (1 to 64 letters, digits or -)"));
    }
    if new.users.is_empty() && new.groups.is_empty() {
        return Err(invalid("users", "and `groups` are both empty: name at least one member or group to screen off"));
    }
    for user in &new.users {
        if users::get(w, scope, user)?.is_none() {
            return Err(StoreError::Refused { problem: format!("member `{user}` does not exist in this firm") });
        }
    }
    if new.reason.chars().count() > 500 || new.reason.chars().any(char::is_control) {
        return Err(invalid("reason", "must be at most 500 characters without control characters"));
    }
    let wall = Wall {
        id: public_id("wal"),
        matter_id: matter.into(),
        users: new.users.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect(),
        groups: new.groups.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect(),
        reason: new.reason.trim().into(),
        created_at: w.time(),
        created_by: scope.actor().to_string(),
    };
    w.put_json(scope, &WALLS, wall.id.as_bytes(), &wall)?;
    Ok(wall)
}

/// Takes a wall down.
pub fn delete(w: &mut Tx, scope: &OrgScope, id: &str) -> Result<Wall, StoreError> {
    let wall: Wall = w
        .get_json(scope, &WALLS, id.as_bytes())?
        .ok_or_else(|| StoreError::NotFound { what: format!("wall `{id}`") })?;
    w.delete(scope, &WALLS, id.as_bytes())?;
    Ok(wall)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::store::{OrgTask, OrgTaskContext, Store};
    use users::NewMember;

    #[test]
    fn walls_screen_named_members_and_groups_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), Clock::system()).unwrap();
        let ctx = OrgTaskContext::new(OrgTask::Test);
        let org = store.write(|w| crate::store::orgs::create(w, &ctx, "acme", "Acme")).unwrap();
        let other = store.write(|w| crate::store::orgs::create(w, &ctx, "other", "Other")).unwrap();
        let scope = ctx.org_scope(org.id);
        let member = |email: &str| {
            let new = NewMember { email: email.into(), name: email.into(), role: "staff".into() };
            store.write(|w| users::create(w, &scope, &new, &crate::auth::grant::Grantor::operator())).unwrap()
        };
        let (ann, bob) = (member("ann@acme.test"), member("bob@acme.test"));
        let wall = NewWall {
            matter_id: "1001".into(),
            users: vec![ann.id.clone()],
            groups: vec!["Litigation".into()],
            reason: "conflict".into(),
        };
        let made = store.write(|w| create(w, &scope, &wall)).unwrap();

        let screen = |user: &str, groups: &[String]| store.read(|r| screen_for(r, &scope, user, groups)).unwrap();
        assert!(screen(&ann.id, &[]).hides("1001"), "named member");
        assert!(screen(&bob.id, &["Litigation".into()]).hides("1001"), "member of a named group");
        assert!(!screen(&bob.id, &["Tax".into()]).hides("1001"), "everyone else sees it");
        assert!(!screen(&ann.id, &[]).hides("1002"), "only the walled matter");
        let elsewhere = store.read(|r| screen_for(r, &ctx.org_scope(other.id), &ann.id, &[])).unwrap();
        assert!(!elsewhere.hides("1001"), "walls belong to one firm");

        let ghost = NewWall { users: vec!["usr_nobody".into()], ..wall.clone() };
        assert!(matches!(store.write(|w| create(w, &scope, &ghost)), Err(StoreError::Refused { .. })));
        let empty = NewWall { users: vec![], groups: vec![], ..wall };
        assert!(matches!(store.write(|w| create(w, &scope, &empty)), Err(StoreError::Invalid { .. })));
        store.write(|w| delete(w, &scope, &made.id)).unwrap();
        assert!(!screen(&ann.id, &[]).hides("1001"), "a removed wall screens nothing");
    }
}
