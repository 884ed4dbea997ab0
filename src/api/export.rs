//! `GET /export` and `GET /export/subject`: the firm's data as a zip,
//! streamed from one snapshot (`lifecycle::export`), as the caller's
//! [`Viewer`] so ethical walls apply; every export is audited before its
//! first byte is sent.
use super::auth::Caller;
use super::params::{Flag, Id};
use super::problem::{ApiError, ApiResult, Code};
use crate::auth::{Permission, Principal};
use crate::data::{self, Viewer};
use crate::lifecycle::export::{self, Format, Options, Selection};
use crate::records::Kind;
use crate::state::AppState;
use poem::{Body, Request};
use poem_openapi::param::Query;
use poem_openapi::payload::Binary;
use poem_openapi::{ApiResponse, Enum, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum Tag {
    /// Self-service export of the firm's data.
    Export,
}

pub struct ExportApi {
    pub state: Arc<AppState>,
}

/// The file format inside the zip.
#[derive(Enum, Clone, Copy)]
#[oai(rename_all = "lowercase")]
pub enum FormatParam {
    Json,
    Csv,
}

#[derive(ApiResponse)]
pub enum ZipExport {
    /// A zip: one file per kind and `manifest.json` (counts, snapshot time).
    #[oai(status = 200, content_type = "application/zip")]
    Zip(Binary<Body>, #[oai(header = "content-disposition")] String),
}

impl ExportApi {
    /// The caller's viewer, read off the async workers.
    async fn viewer(&self, principal: &Principal) -> ApiResult<Viewer> {
        let p = principal.clone();
        super::off_worker(&self.state.store, move |store| Ok(Viewer::of(store, &p)?)).await
    }

    /// Audits the export, then starts streaming it.
    fn start(
        &self,
        req: &Request,
        principal: &Principal,
        viewer: Viewer,
        options: Options,
        details: serde_json::Value,
        file: &str,
    ) -> ApiResult<ZipExport> {
        let target = format!("org:{}", principal.scope().org());
        super::audited(&self.state, req, principal, "data.export", &target, details, |_| Ok(()))?;
        let body = Body::from_bytes_stream(export::stream(self.state.store.clone(), viewer, options));
        Ok(ZipExport::Zip(Binary(body), format!("attachment; filename=\"{file}\"")))
    }
}

#[OpenApi(prefix_path = "/export", tag = "Tag::Export")]
impl ExportApi {
    /// Export the firm's data
    ///
    /// A zip streamed from one consistent snapshot: one file per kind
    /// (`matters.json` or `matters.csv`, …) and `manifest.json` (format,
    /// snapshot time and journal seq, counts). JSON files hold the records
    /// exactly as Clio sent them; CSV files have stable columns, UTF-8, cells
    /// a spreadsheet would run as formulas prefixed with `'`. Walled matters
    /// are left out; exporting a matter you are walled from is refused. The
    /// export is audited.
    ///
    /// Requires permission `data:export`.
    #[oai(path = "/", method = "get", operation_id = "export.get")]
    async fn export(
        &self,
        req: &Request,
        auth: Caller,
        /// `json` (default) or `csv`.
        format: Query<Option<FormatParam>>,
        /// Only this matter and the records that belong to it.
        matter: Query<Option<Id>>,
        /// `true`: start each CSV file with a UTF-8 byte order mark (for spreadsheets).
        bom: Query<Option<Flag>>,
    ) -> ApiResult<ZipExport> {
        let p = auth.require(Permission::DataExport)?;
        let format = match format.0 {
            Some(FormatParam::Csv) => Format::Csv,
            _ => Format::Json,
        };
        let matter: Option<String> = matter.0.map(Into::into);
        let viewer = self.viewer(p).await?;
        let selection = match &matter {
            Some(id) => {
                self.visible_matter(&viewer, id).await?;
                Selection::Matter(id.clone())
            }
            None => Selection::All,
        };
        let options = Options { format, selection, bom: bom.0.is_some_and(|b| b.0) };
        let details = serde_json::json!({"format": format.as_str(), "matter": matter, "bom": options.bom});
        let file = match &matter {
            Some(id) => format!("docket-export-matter-{id}.zip"),
            None => "docket-export.zip".to_string(),
        };
        self.start(req, p, viewer, options, details, &file)
    }

    /// Export everything about one contact
    ///
    /// A subject-access export for data-protection requests: the contact,
    /// the records that link to it (matters and bills it is the client of,
    /// notes about it, tasks assigned to it, contacts of its company) and the
    /// records search finds mentioning its name or email address, as JSON in
    /// a zip with `manifest.json`. Walls apply. The export is audited.
    ///
    /// Requires permission `data:export`.
    #[oai(path = "/subject", method = "get", operation_id = "export.subject")]
    async fn subject(
        &self,
        req: &Request,
        auth: Caller,
        /// The Clio id of the contact.
        contact_id: Query<Id>,
    ) -> ApiResult<ZipExport> {
        let p = auth.require(Permission::DataExport)?;
        let contact_id: String = contact_id.0.into();
        let viewer = self.viewer(p).await?;
        let (engine, wanted, v) = (self.state.search.clone(), contact_id.clone(), viewer.clone());
        let found = super::off_worker(&self.state.store, move |store| {
            let contact = data::get(store, &v, Kind::Contact, &wanted)?
                .ok_or_else(|| ApiError::new(Code::NotFound, format!("contact `{wanted}` was not found")))?;
            Ok(export::subject_hits(&engine, &v, &contact)?)
        })
        .await?;
        let options = Options {
            format: Format::Json,
            selection: Selection::Subject { contact_id: contact_id.clone(), found },
            bom: false,
        };
        let details = serde_json::json!({"format": "json", "contact_id": contact_id});
        self.start(req, p, viewer, options, details, &format!("docket-subject-contact-{contact_id}.zip"))
    }
}

impl ExportApi {
    /// A matter the caller may export: a walled one is refused whether or not
    /// it exists (the caller learns nothing); an unknown one is a 404.
    async fn visible_matter(&self, viewer: &Viewer, id: &str) -> ApiResult<()> {
        if viewer.hidden_matters().contains(id) {
            return Err(ApiError::new(
                Code::Forbidden,
                format!("matter `{id}` is behind an ethical wall that screens you; it cannot be exported"),
            ));
        }
        let (v, wanted) = (viewer.clone(), id.to_string());
        let exists = super::off_worker(&self.state.store, move |store| {
            Ok(data::get(store, &v, Kind::Matter, &wanted)?.is_some())
        })
        .await?;
        if exists { Ok(()) } else { Err(ApiError::new(Code::NotFound, format!("matter `{id}` was not found"))) }
    }
}
