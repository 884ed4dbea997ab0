//! Self-service export of a firm's data: a zip written as a stream from one
//! read snapshot, one record at a time, so memory stays bounded whatever the
//! size of the firm and the files agree with each other even while the sync
//! writes.
//!
//! The zip holds one file per kind (`matters.json` … or `matters.csv` …, every
//! kind present, empty or not) and `manifest.json` (format, snapshot time and
//! journal seq, counts). JSON files are arrays of the records exactly as Clio
//! sent them. CSV files have stable columns taken from the fields docket asks
//! Clio for ([`Kind::fields`]; a nested field is `parent.child`, several
//! linked objects are joined with `; `), UTF-8 (optionally with a BOM for
//! spreadsheets), and every text cell that a spreadsheet would run as a
//! formula (`=`, `+`, `-`, `@`, tab, CR first) is prefixed with `'`.
//!
//! Records are read through a [`Viewer`], so ethical walls apply: the API
//! answers a walled matter with a 403 before anything is written, and a whole
//! export leaves out what the caller may not see.
use crate::data::{self, Viewer};
use crate::records::{Kind, Record};
use crate::store::{ReadTx, Store, StoreError};
use crate::timestamp::Timestamp;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::sync::Arc;
use zip::write::SimpleFileOptions;

/// The export's file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }

    /// `json` or `csv`; the error names both.
    pub fn parse(text: &str) -> Result<Format, String> {
        match text {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(format!("`{other}` is not an export format; use `json` or `csv`")),
        }
    }
}

/// What to export.
#[derive(Clone, Debug)]
pub struct Options {
    pub format: Format,
    pub selection: Selection,
    /// Start each CSV file with a UTF-8 byte order mark (for spreadsheets).
    pub bom: bool,
}

/// Which records an export holds (always only those the viewer sees).
#[derive(Clone, Debug, Default)]
pub enum Selection {
    /// Every record of the firm.
    #[default]
    All,
    /// A matter and the records that belong to it.
    Matter(String),
    /// A subject-access export: the contact, the records linking to it, and
    /// the records search found mentioning it.
    Subject { contact_id: String, found: BTreeSet<(Kind, String)> },
}

impl Selection {
    /// Whether `record` is part of the export.
    fn keeps(&self, record: &Record) -> bool {
        match self {
            Selection::All => true,
            Selection::Matter(m) => record.matters.iter().any(|x| x == m),
            Selection::Subject { contact_id, found } => {
                links_to(record, contact_id) || found.contains(&(record.kind, record.id.clone()))
            }
        }
    }
}

/// Whether `record` is the contact `contact_id` or links to it: a matter's
/// or bill's client, a note's contact, a contact's company, a task assigned
/// to the contact.
pub fn links_to(record: &Record, contact_id: &str) -> bool {
    if record.kind == Kind::Contact && record.id == contact_id {
        return true;
    }
    let is = |v: Option<&Value>| v.and_then(|r| r.get("id")).is_some_and(|id| same_id(id, contact_id));
    let raw = &record.raw;
    let assignee = raw.get("assignee").filter(|a| a.get("type").and_then(Value::as_str) == Some("Contact"));
    is(raw.get("client")) || is(raw.get("contact")) || is(raw.get("company")) || is(assignee)
}

/// Clio ids arrive as numbers or strings.
fn same_id(id: &Value, wanted: &str) -> bool {
    match id {
        Value::String(s) => s == wanted,
        Value::Number(n) => n.to_string() == wanted,
        _ => false,
    }
}

/// What the export holds: written last into the zip as `manifest.json`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Manifest {
    pub format: &'static str,
    /// RFC 3339, UTC: when the snapshot was taken.
    pub snapshot_at: String,
    /// The journal seq of the snapshot: every change up to it, none after.
    pub journal_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matter: Option<String>,
    /// The contact of a subject-access export.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    /// Records per file name.
    pub counts: BTreeMap<String, u64>,
    pub total: u64,
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the zip failed (the client went away, the disk is full).
    #[error("writing the export failed: {0}")]
    Write(#[from] io::Error),
}

impl From<zip::result::ZipError> for ExportError {
    fn from(e: zip::result::ZipError) -> Self {
        match e {
            zip::result::ZipError::Io(e) => ExportError::Write(e),
            other => ExportError::Write(io::Error::other(other.to_string())),
        }
    }
}

/// The name of a kind's file in the zip.
pub fn file_name(kind: Kind, format: Format) -> String {
    format!("{}.{}", kind.collection(), format.as_str())
}

/// Writes the export of what `viewer` sees as a zip into `out`, from one read
/// snapshot; `progress` is called with the running record count. Returns the
/// manifest written into the zip.
pub fn write_zip<W: Write>(
    store: &Store,
    viewer: &Viewer,
    options: &Options,
    out: W,
    progress: impl FnMut(u64),
) -> Result<Manifest, ExportError> {
    let mut zip = zip::ZipWriter::new_stream(out);
    let manifest = store.read(|r| Ok(write_kinds(store, r, viewer, options, &mut zip, progress)))??;
    zip.start_file("manifest.json", file_options().large_file(false))?;
    serde_json::to_writer_pretty(&mut zip, &manifest).map_err(io::Error::from)?;
    zip.finish()?.into_inner().flush()?;
    Ok(manifest)
}

/// Deflate, quick; zip64 sizes so a file of any size fits.
fn file_options() -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(3))
        .large_file(true)
}

/// Every kind's file from the snapshot `r`; the manifest of what was written.
fn write_kinds<W: Write + io::Seek>(
    store: &Store,
    r: &ReadTx,
    viewer: &Viewer,
    options: &Options,
    zip: &mut zip::ZipWriter<W>,
    mut progress: impl FnMut(u64),
) -> Result<Manifest, ExportError> {
    let journal_seq = r.journal_head()?;
    let snapshot_at = Timestamp::from_micros(store.clock().now_micros()).to_rfc3339();
    let (mut counts, mut total) = (BTreeMap::new(), 0u64);
    for kind in Kind::ALL {
        let name = file_name(kind, options.format);
        zip.start_file(name.as_str(), file_options())?;
        let mut file = KindWriter { zip: &mut *zip, format: options.format, columns: columns(kind), first: true };
        file.header(options.bom)?;
        let (mut n, mut failure) = (0u64, None);
        data::visit_seen(r, viewer, kind, |record| {
            if !options.selection.keeps(&record) {
                return Ok(true);
            }
            if let Err(e) = file.record(&record) {
                failure = Some(e);
                return Ok(false);
            }
            (n, total) = (n + 1, total + 1);
            progress(total);
            Ok(true)
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        file.finish()?;
        counts.insert(name, n);
    }
    Ok(Manifest {
        format: options.format.as_str(),
        snapshot_at,
        journal_seq,
        matter: if let Selection::Matter(m) = &options.selection { Some(m.clone()) } else { None },
        contact_id: if let Selection::Subject { contact_id, .. } = &options.selection {
            Some(contact_id.clone())
        } else {
            None
        },
        counts,
        total,
    })
}

/// The most search hits a subject-access export follows.
pub const SUBJECT_HITS_MAX: usize = 10_000;

/// The records search finds mentioning `contact` (its name as a phrase, its
/// email address), as the viewer: walls apply inside the query.
pub fn subject_hits(
    engine: &crate::search::Engine,
    viewer: &Viewer,
    contact: &Record,
) -> Result<BTreeSet<(Kind, String)>, crate::search::SearchError> {
    let text =
        |field: &str| contact.raw.get(field).and_then(Value::as_str).map(|s| s.replace('"', " ").trim().to_string());
    let mut clauses = vec![];
    if let Some(name) = text("name").filter(|n| !n.is_empty()) {
        clauses.push(format!("\"{name}\""));
    }
    if let Some(email) = text("primary_email_address").filter(|e| !e.is_empty() && !e.contains(' ')) {
        clauses.push(format!("email:\"{email}\""));
    }
    let mut found = BTreeSet::new();
    if clauses.is_empty() {
        return Ok(found);
    }
    let mut req = crate::search::run::Request { q: clauses.join(" OR "), limit: 100, ..Default::default() };
    loop {
        let page = engine.search(viewer, &req)?;
        for hit in page.hits {
            if let Some(kind) = Kind::ALL.into_iter().find(|k| k.as_str() == hit.kind) {
                found.insert((kind, hit.id));
            }
        }
        match page.next_cursor {
            Some(next) if found.len() < SUBJECT_HITS_MAX => req.cursor = Some(next),
            _ => return Ok(found),
        }
    }
}

/// `docket export`: writes `org`'s export (no walls: an operator's copy of
/// the whole firm) to `out` under a temporary name, fsyncs it and renames it
/// into place, so a final name is always a whole zip.
pub fn to_file(
    store: &Store,
    org: crate::store::OrgId,
    options: &Options,
    out: &std::path::Path,
    progress: impl FnMut(u64),
) -> Result<Manifest, String> {
    let ctx = crate::store::OrgTaskContext::new(crate::store::OrgTask::Export);
    let viewer = Viewer::unwalled(&ctx, org);
    let name = out.file_name().ok_or_else(|| format!("--out {} does not name a file", out.display()))?;
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = (|| -> Result<Manifest, ExportError> {
        let file = std::fs::File::create(&tmp)?;
        let manifest = write_zip(store, &viewer, options, io::BufWriter::new(&file), progress)?;
        file.sync_all()?;
        std::fs::rename(&tmp, out)?;
        Ok(manifest)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write the export to {}: {e}", out.display())
    })
}

/// How much of the zip is buffered before it is handed to the client.
const CHUNK: usize = 64 * 1024;

/// The export as a stream of zip bytes for an HTTP body: written on the
/// blocking pool from one snapshot into a bounded channel (at most a few
/// chunks in flight), so memory stays bounded and a slow client slows the
/// export instead of filling memory. A client that goes away stops it.
pub fn stream(
    store: Arc<Store>,
    viewer: Viewer,
    options: Options,
) -> impl futures_util::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let out = io::BufWriter::with_capacity(CHUNK, ChannelWriter { tx: tx.clone() });
        match write_zip(&store, &viewer, &options, out, |_| {}) {
            Ok(m) => tracing::info!(records = m.total, format = m.format, "export streamed"),
            Err(ExportError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                tracing::info!("export stopped: the client went away");
            }
            Err(e) => {
                tracing::error!(error = %e, "export failed mid-stream");
                // The status line is sent: cutting the body is how the client learns.
                let _ = tx.blocking_send(Err(io::Error::other("the export failed; see the server log")));
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

/// A `Write` that hands each buffer to the HTTP body, waiting while it is full.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<bytes::Bytes>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One kind's file being written into the zip.
struct KindWriter<'z, W: Write> {
    zip: &'z mut W,
    format: Format,
    columns: Vec<Vec<&'static str>>,
    first: bool,
}

impl<W: Write> KindWriter<'_, W> {
    fn header(&mut self, bom: bool) -> Result<(), ExportError> {
        match self.format {
            Format::Json => self.zip.write_all(b"[")?,
            Format::Csv => {
                if bom {
                    self.zip.write_all("\u{feff}".as_bytes())?;
                }
                let names: Vec<String> = self.columns.iter().map(|c| c.join(".")).collect();
                write_csv_row(&mut self.zip, names.iter().map(String::as_str))?;
            }
        }
        Ok(())
    }

    fn record(&mut self, record: &Record) -> Result<(), ExportError> {
        match self.format {
            Format::Json => {
                self.zip.write_all(if self.first { b"\n" } else { b",\n" })?;
                serde_json::to_writer(&mut self.zip, &record.raw).map_err(io::Error::from)?;
            }
            Format::Csv => {
                let cells: Vec<String> = self.columns.iter().map(|path| cell(&record.raw, path)).collect();
                write_csv_row(&mut self.zip, cells.iter().map(String::as_str))?;
            }
        }
        self.first = false;
        Ok(())
    }

    fn finish(self) -> Result<(), ExportError> {
        if self.format == Format::Json {
            self.zip.write_all(if self.first { b"]\n" } else { b"\n]\n" })?;
        }
        Ok(())
    }
}

/// One CSV row (RFC 4180 quoting by the `csv` crate).
fn write_csv_row<'a>(out: &mut impl Write, cells: impl Iterator<Item = &'a str>) -> io::Result<()> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(out);
    w.write_record(cells).map_err(io::Error::other)?;
    w.flush()
}

/// The CSV columns of a kind, from the fields docket asks Clio for:
/// `client{id,name}` becomes `client.id` and `client.name`.
pub fn columns(kind: Kind) -> Vec<Vec<&'static str>> {
    let mut out = vec![];
    let mut parent: Option<&'static str> = None;
    for part in kind.fields().split(',') {
        let part = part.trim();
        if let Some((p, child)) = part.split_once('{') {
            parent = Some(p);
            out.push(vec![p, child.trim_end_matches('}')]);
            if part.ends_with('}') {
                parent = None;
            }
        } else if let Some(p) = parent {
            out.push(vec![p, part.trim_end_matches('}')]);
            if part.ends_with('}') {
                parent = None;
            }
        } else {
            out.push(vec![part]);
        }
    }
    out
}

/// The text of one cell: the value at `path` in the record's JSON (several
/// linked objects joined with `; `), defused against formula injection.
fn cell(raw: &Value, path: &[&str]) -> String {
    let mut values = vec![raw];
    for step in path {
        values = values
            .into_iter()
            .flat_map(|v| match v {
                Value::Array(items) => items.iter().filter_map(|i| i.get(step)).collect::<Vec<_>>(),
                other => other.get(step).into_iter().collect(),
            })
            .collect();
    }
    let texts: Vec<String> = values.into_iter().filter_map(scalar).collect();
    texts.join("; ")
}

/// A JSON value as cell text: numbers and booleans as written, text
/// defused, `null` as empty, anything else as its JSON.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::String(s) => Some(defuse(s)),
        other => Some(defuse(&other.to_string())),
    }
}

/// Prefixes text a spreadsheet would take as a formula with `'`. Numbers
/// never reach here as text (a JSON number cannot be a formula), so a
/// negative amount stays a number.
pub fn defuse(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formula_prefixes_are_defused_and_nothing_else() {
        for bad in ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx", "=HYPERLINK(\"http://x\")"] {
            assert_eq!(defuse(bad), format!("'{bad}"), "{bad:?}");
        }
        for fine in ["Smith & Co", "", "1=1", " =x", "'quoted"] {
            assert_eq!(defuse(fine), fine);
        }
        assert_eq!(scalar(&json!(-12.5)).as_deref(), Some("-12.5"), "a JSON number is never a formula");
        assert_eq!(scalar(&json!("-12.5")).as_deref(), Some("'-12.5"), "text is");
    }

    #[test]
    fn columns_come_from_the_requested_fields() {
        let matter = columns(Kind::Matter);
        let names: Vec<String> = matter.iter().map(|c| c.join(".")).collect();
        assert_eq!(names[0], "id");
        assert!(names.contains(&"client.id".to_string()) && names.contains(&"client.name".to_string()));
        assert!(names.contains(&"practice_area.name".to_string()));
        assert!(!names.iter().any(|n| n.contains('{') || n.contains('}')), "{names:?}");
    }

    #[test]
    fn cells_follow_links_and_join_several() {
        let bill = json!({"id": 1, "matters": [{"id": 7, "display_number": "=A"}, {"id": 8}], "client": null});
        assert_eq!(cell(&bill, &["matters", "id"]), "7; 8");
        assert_eq!(cell(&bill, &["matters", "display_number"]), "'=A");
        assert_eq!(cell(&bill, &["client", "name"]), "");
        assert_eq!(cell(&bill, &["missing"]), "");
    }
}
