//! Deletion on request: `POST /clio/data/erase` erases the firm's cached
//! Clio data now (`lifecycle::erase`). Confirmed by the firm's slug, audited,
//! one permission of its own.
use super::auth::Caller;
use super::problem::ApiResult;
use super::types::Text;
use crate::auth::Permission;
use crate::lifecycle::erase;
use crate::state::AppState;
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum Tag {
    /// Deleting the firm's data on request.
    Lifecycle,
}

pub struct LifecycleApi {
    pub state: Arc<AppState>,
}

/// The typed confirmation of an irreversible deletion.
#[derive(Object)]
#[oai(rename = "Confirmation", deny_unknown_fields)]
pub struct Confirmation {
    /// The firm's slug, typed out.
    #[oai(validator(min_length = 1, max_length = 100))]
    pub confirm: Text,
}

/// What an erasure removed.
#[derive(Object)]
#[oai(rename = "Erased")]
pub struct ErasedView {
    /// Records deleted.
    pub records: u64,
    /// Live journal entries that held them, redacted.
    pub journal_entries: u64,
    /// The sync stays stopped until someone starts it (`POST /clio/sync`).
    pub sync_stopped: bool,
}

#[OpenApi(tag = "Tag::Lifecycle")]
impl LifecycleApi {
    /// Erase the firm's cached Clio data
    ///
    /// Irreversible: stops the sync (it stays stopped until someone starts
    /// it with `POST /clio/sync`), deletes every record, redacts the live
    /// journal entries that held them and rebuilds the search index without
    /// them. `confirm` must be the firm's slug. Audited.
    ///
    /// Requires permission `data:erase`.
    #[oai(path = "/clio/data/erase", method = "post", operation_id = "clio.erase_data")]
    async fn erase_data(&self, req: &Request, auth: Caller, body: Json<Confirmation>) -> ApiResult<Json<ErasedView>> {
        let p = auth.require(Permission::DataErase)?;
        let scope = p.scope().clone();
        let confirm = body.0.confirm.0;
        let s = scope.clone();
        super::off_worker(&self.state.store, move |store| Ok(erase::check_confirmation(store, &s, &confirm)?)).await?;
        let org = scope.org();
        self.state.sync.stop(org).await;
        let context = super::audit_context(req);
        let ledger = self.state.config.backup_dir();
        let erased = super::off_worker(&self.state.store, move |store| {
            Ok(erase::erase_clio_data(store, &scope, &context, &ledger)?)
        })
        .await?;
        self.state.search.request_reindex([org]);
        Ok(Json(ErasedView { records: erased.records, journal_entries: erased.journal_entries, sync_stopped: true }))
    }
}
