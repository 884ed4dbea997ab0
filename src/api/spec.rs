//! What the served spec says beyond what poem-openapi derives from the
//! operations: the contract integrators and client generators rely on.
//!
//! - plain `application/json` media types (the server still sends `charset=utf-8`);
//! - the licence in `info`, `security: []` on public operations;
//! - closed sets as `enum`s ([`ENUMS`]; `Problem.code` from the error table),
//!   `format: date-time` on every instant ([`is_instant`]);
//! - the headers of the HTTP contract (`http::semantics`): `RateLimit-*` on
//!   every response, `Retry-After` on 429 and 503, `ETag` and a `304` on
//!   reads, `Location` on 201, `Idempotency-Key` on `POST`;
//! - a description on every parameter and response, and an example of every
//!   parameter and JSON response ([`sample`], built from the schema so it
//!   always fits it).
use super::problem::TABLE;
use serde_json::{Value, json};

/// The licence docket is published under.
const LICENSE: (&str, &str) = ("AGPL-3.0-only", "https://www.gnu.org/licenses/agpl-3.0.html");

/// The eight kinds of records.
const KINDS: &[&str] = &["matter", "contact", "activity", "bill", "user", "task", "calendar_entry", "note"];

/// Closed sets of response fields: (schema, property, values).
const ENUMS: &[(&str, &str, &[&str])] = &[
    ("AuditEvent", "outcome", &["success", "failure", "denied"]),
    ("ClioConnection", "state", &["not_configured", "configured", "connected", "disconnected"]),
    ("JobRunView", "outcome", &["ok", "error", "cancelled"]),
    ("JobView", "scope", &["appliance", "org"]),
    ("Me", "credential", &["session", "personal-token", "service-token"]),
    ("Record", "kind", KINDS),
    ("SearchHit", "kind", KINDS),
    ("KindStatus", "kind", KINDS),
    ("ConfirmedKind", "kind", KINDS),
    ("SuggestionView", "kind", &["matter", "contact", "user"]),
    ("SystemStatus", "tls_mode", &["self-signed", "files", "acme", "off"]),
];

/// Whether a string property holds an instant (RFC 3339), by docket's naming rule.
fn is_instant(name: &str) -> bool {
    name.ends_with("_at")
        || matches!(name, "time" | "started" | "ended" | "next_run" | "held_since" | "synced_through" | "date")
}

/// Applies everything in the module docs to a spec poem-openapi produced.
pub fn refine(spec: &mut Value) {
    spec["info"]["license"] = json!({"name": LICENSE.0, "url": LICENSE.1});
    plain_json(spec);
    schemas(spec);
    records_by_kind(spec);
    plain_record_refs(spec);
    let schemas = spec["components"]["schemas"].clone();
    for (_, ops) in spec["paths"].as_object_mut().into_iter().flatten() {
        for (method, op) in ops.as_object_mut().into_iter().flatten() {
            operation(method, op, &schemas);
        }
    }
    spec["components"]["headers"] = headers();
}

/// Renames `application/json; charset=utf-8` content keys to `application/json`.
fn plain_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(body) = map.remove("application/json; charset=utf-8") {
                map.insert("application/json".into(), body);
            }
            map.values_mut().for_each(plain_json);
        }
        Value::Array(items) => items.iter_mut().for_each(plain_json),
        _ => {}
    }
}

fn schemas(spec: &mut Value) {
    let Some(schemas) = spec.pointer_mut("/components/schemas").and_then(Value::as_object_mut) else { return };
    for (schema, property, values) in ENUMS {
        if let Some(p) = schemas.get_mut(*schema).and_then(|s| s.pointer_mut(&format!("/properties/{property}"))) {
            p["enum"] = json!(values);
        }
    }
    if let Some(problem) = schemas.get_mut("Problem") {
        let codes: Vec<&str> = TABLE.iter().map(|r| r.1).collect();
        let types: Vec<String> = codes.iter().map(|c| format!("urn:docket:problem:{c}")).collect();
        problem["properties"]["code"]["enum"] = json!(codes);
        problem["properties"]["type"]["enum"] = json!(types);
    }
    for (_, schema) in schemas.iter_mut() {
        for (name, p) in schema.get_mut("properties").and_then(Value::as_object_mut).into_iter().flatten() {
            if p.get("type").and_then(Value::as_str) == Some("string") && p.get("format").is_none() && is_instant(name)
            {
                p["format"] = json!("date-time");
            }
        }
    }
}

/// A kind, the name of its `data` schema, and its typed fields.
type KindSchema = (&'static str, &'static str, Vec<(&'static str, Value)>);

/// The typed fields of each kind's `data` (Clio's record, CLIO.md §4): the
/// kind, its schema's name, and (field, schema) pairs. Every field may be
/// null, and `data` stays open to fields Clio adds.
fn kind_fields() -> Vec<KindSchema> {
    let t = |ty: &str| json!({"type": ty, "nullable": true});
    let date = || json!({"type": "string", "format": "date", "nullable": true});
    let instant = || json!({"type": "string", "format": "date-time", "nullable": true});
    let one_of = |values: &[&str]| json!({"type": "string", "enum": values, "nullable": true});
    let common = |mut fields: Vec<(&'static str, Value)>| {
        fields.splice(0..0, [("etag", t("string")), ("created_at", instant()), ("updated_at", instant())]);
        fields
    };
    let int_id = || ("id", json!({"type": "integer", "description": "Clio's id (the record's `id`, as a number)."}));
    vec![
        (
            "matter",
            "MatterData",
            common(vec![
                int_id(),
                ("number", t("integer")),
                ("display_number", t("string")),
                ("description", t("string")),
                ("status", one_of(&["Pending", "Open", "Closed"])),
                ("billable", t("boolean")),
                ("open_date", date()),
                ("close_date", date()),
            ]),
        ),
        (
            "contact",
            "ContactData",
            common(vec![
                int_id(),
                ("name", t("string")),
                ("type", one_of(&["Person", "Company"])),
                ("is_client", t("boolean")),
                ("primary_email_address", t("string")),
                ("primary_phone_number", t("string")),
            ]),
        ),
        (
            "activity",
            "ActivityData",
            common(vec![
                int_id(),
                ("type", one_of(&["TimeEntry", "ExpenseEntry", "HardCostEntry", "SoftCostEntry"])),
                ("date", date()),
                ("quantity", t("number")),
                ("price", t("number")),
                ("total", t("number")),
                ("note", t("string")),
                ("billed", t("boolean")),
            ]),
        ),
        (
            "bill",
            "BillData",
            common(vec![
                int_id(),
                ("number", t("string")),
                ("state", one_of(&["draft", "awaiting_approval", "awaiting_payment", "paid", "void", "deleted"])),
                ("issued_at", date()),
                ("due_at", date()),
                ("paid_at", instant()),
                ("total", t("number")),
                ("balance", t("number")),
            ]),
        ),
        (
            "user",
            "UserData",
            common(vec![
                int_id(),
                ("name", t("string")),
                ("email", t("string")),
                ("enabled", t("boolean")),
                ("subscription_type", one_of(&["Attorney", "NonAttorney"])),
            ]),
        ),
        (
            "task",
            "TaskData",
            common(vec![
                int_id(),
                ("name", t("string")),
                ("description", t("string")),
                ("status", one_of(&["pending", "in_progress", "in_review", "complete"])),
                ("priority", one_of(&["High", "Normal", "Low"])),
                ("due_at", date()),
                ("completed_at", instant()),
            ]),
        ),
        (
            "calendar_entry",
            "CalendarEntryData",
            common(vec![
                ("id", json!({"type": "string", "description": "Clio's id (a string for calendar entries)."})),
                ("summary", t("string")),
                ("description", t("string")),
                ("start_at", instant()),
                ("end_at", instant()),
                ("all_day", t("boolean")),
            ]),
        ),
        (
            "note",
            "NoteData",
            common(vec![
                int_id(),
                ("type", one_of(&["Matter", "Contact"])),
                ("subject", t("string")),
                ("detail", t("string")),
                ("date", date()),
            ]),
        ),
    ]
}

/// `Record` becomes a `oneOf` on `kind`: one schema per kind whose `data`
/// has that kind's typed fields (and any others Clio sends).
fn records_by_kind(spec: &mut Value) {
    let Some(schemas) = spec.pointer_mut("/components/schemas").and_then(Value::as_object_mut) else { return };
    let Some(base) = schemas.get("Record").cloned() else { return };
    let (mut variants, mut mapping) = (vec![], serde_json::Map::new());
    for (kind, data_name, fields) in kind_fields() {
        let record_name = data_name.replace("Data", "Record");
        let properties: serde_json::Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        schemas.insert(
            data_name.into(),
            json!({"type": "object", "description": format!("A {kind} as Clio sent it: the fields docket relies on, typed; any other field Clio sends is kept."),
                   "properties": properties, "additionalProperties": true}),
        );
        let mut record = base.clone();
        record["title"] = json!(record_name);
        record["description"] = json!(format!("A {kind}, with its identity and Clio's record."));
        record["properties"]["kind"] = json!({"type": "string", "enum": [kind]});
        record["properties"]["data"] = json!({"$ref": format!("#/components/schemas/{data_name}")});
        let reference = format!("#/components/schemas/{record_name}");
        schemas.insert(record_name, record);
        variants.push(json!({"$ref": reference}));
        mapping.insert(kind.into(), json!(reference));
    }
    schemas.insert(
        "Record".into(),
        json!({"description": base.get("description").cloned().unwrap_or(json!("A record.")),
               "oneOf": variants, "discriminator": {"propertyName": "kind", "mapping": mapping}}),
    );
}

/// A property holding a `Record` refers to it plainly: poem wraps a described
/// `$ref` in `allOf`, and generated clients cannot take `allOf` of a `oneOf`.
fn plain_record_refs(spec: &mut Value) {
    let record = json!({"$ref": "#/components/schemas/Record"});
    let Some(schemas) = spec.pointer_mut("/components/schemas").and_then(Value::as_object_mut) else { return };
    for schema in schemas.values_mut() {
        for property in
            schema.get_mut("properties").and_then(Value::as_object_mut).into_iter().flat_map(|p| p.values_mut())
        {
            if property.pointer("/allOf/0") == Some(&record) {
                *property = record.clone();
            }
        }
    }
}

/// The reusable response headers.
fn headers() -> Value {
    let int = |description: &str| json!({"description": description, "schema": {"type": "integer", "minimum": 0}});
    json!({
        "RateLimit-Limit": int("Requests the tightest rate limit that applied allows in a burst."),
        "RateLimit-Remaining": int("Requests left in that burst."),
        "RateLimit-Reset": int("Seconds until the burst is whole again."),
        "Retry-After": int("Seconds to wait before retrying."),
        "ETag": {"description": "The validator of this response; send it as `If-None-Match` to get a 304 while it is unchanged.", "schema": {"type": "string"}},
        "Location": {"description": "The URL of the resource created.", "schema": {"type": "string"}},
        "Idempotent-Replayed": {"description": "`true` when this is the stored response to an earlier request with the same `Idempotency-Key`.", "schema": {"type": "string", "enum": ["true"]}},
    })
}

fn header_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/headers/{name}")})
}

fn operation(method: &str, op: &mut Value, schemas: &Value) {
    if op.get("security").is_none() {
        op["security"] = json!([]);
    }
    describe_parameters(op);
    comma_lists_as_arrays(op);
    for p in op.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
        if p.get("example").is_none() {
            let name = p["name"].as_str().unwrap_or("").to_string();
            p["example"] = sample(&name, &p["schema"], schemas, 0);
        }
    }
    let body = op.pointer_mut("/requestBody/content/application~1json").and_then(Value::as_object_mut);
    if let Some(media) = body.filter(|m| !m.contains_key("example")) {
        let example = sample("", media.get("schema").unwrap_or(&Value::Null), schemas, 0);
        media.insert("example".into(), example);
    }
    let creates = method == "post" && !op["operationId"].as_str().is_some_and(|id| id.starts_with("auth."));
    if creates {
        let parameters = op["parameters"].as_array_mut().map(std::mem::take).unwrap_or_default();
        let mut parameters = parameters;
        parameters.push(json!({
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": "Makes the request safe to retry: a retry with the same key and body gets the first response again (for 24 hours, per credential); the same key with another body is a 422.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
            "example": "3f2b8c1e-9a4d-4d2f-8f57-0c6b1d2e7a90",
        }));
        op["parameters"] = Value::Array(parameters);
    }
    let read = method == "get";
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else { return };
    if read && responses.contains_key("200") {
        responses.insert(
            "304".into(),
            json!({"description": "Not modified: the `If-None-Match` validator still matches.", "headers": {"ETag": header_ref("ETag")}}),
        );
    }
    for (status, response) in responses.iter_mut() {
        let headers = response.as_object_mut().map(|r| r.entry("headers").or_insert_with(|| json!({})));
        let Some(headers) = headers.and_then(Value::as_object_mut) else { continue };
        for name in ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"] {
            headers.insert(name.into(), header_ref(name));
        }
        match status.as_str() {
            "429" | "503" => {
                headers.insert("Retry-After".into(), header_ref("Retry-After"));
            }
            "200" if read => {
                headers.insert("ETag".into(), header_ref("ETag"));
            }
            "201" => {
                headers.insert("Location".into(), header_ref("Location"));
            }
            _ => {}
        }
        if creates && (status.starts_with('2') || status.starts_with('4')) {
            headers.insert("Idempotent-Replayed".into(), header_ref("Idempotent-Replayed"));
        }
        let json = response.pointer_mut("/content/application~1json").and_then(Value::as_object_mut);
        if let Some(media) = json.filter(|m| !m.contains_key("example")) {
            let example = sample("", media.get("schema").unwrap_or(&Value::Null), schemas, 0);
            media.insert("example".into(), example);
        }
        if response.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
            response["description"] = json!(describe_status(status, response, schemas));
        }
    }
}

/// A value that fits `schema` (following `$ref`s into `schemas`), for the
/// property or parameter `name`: the first of an enum, the bounds of a
/// number, an RFC 3339 instant for `date-time`, every property of an object.
fn sample(name: &str, schema: &Value, schemas: &Value, depth: usize) -> Value {
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        let found = target.strip_prefix("#/components/schemas/").and_then(|n| schemas.get(n));
        return found.map_or(Value::Null, |s| sample(name, s, schemas, depth + 1));
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        if let Some(first) = schema.get(key).and_then(|s| s.get(0)) {
            return sample(name, first, schemas, depth + 1);
        }
    }
    if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    if let Some(example) = schema.get("example") {
        return example.clone();
    }
    let number = |key: &str| schema.get(key).and_then(Value::as_f64);
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => json!(sample_string(name, schema)),
        Some("integer") => {
            json!(number("minimum").map_or(1, |m| m.max(1.0).min(number("maximum").unwrap_or(m.max(1.0))) as i64))
        }
        Some("number") => json!(number("minimum").unwrap_or(1.0)),
        Some("boolean") => json!(true),
        Some("array") if depth < 8 => json!([sample(name, &schema["items"], schemas, depth + 1)]),
        Some("array") => json!([]),
        _ if depth < 8 => {
            let props = schema.get("properties").and_then(Value::as_object);
            let fields = props.into_iter().flatten().map(|(k, v)| (k.clone(), sample(k, v, schemas, depth + 1)));
            Value::Object(fields.collect())
        }
        _ => json!({}),
    }
}

/// A string that fits a string schema named `name`.
fn sample_string(name: &str, schema: &Value) -> String {
    match schema.get("format").and_then(Value::as_str) {
        Some("date-time") => return "2026-01-31T09:30:00Z".into(),
        Some("date") => return "2026-01-31".into(),
        _ => {}
    }
    let text = match name {
        "cursor" | "next_cursor" => "c1.MTAwMQ.5f0c2a9e1b7d3c48",
        "email" => "pat@smith-jones.example",
        "name" => "billing-export",
        "role" => "staff",
        "q" => "smith",
        "location" => "us",
        "time_zone" => "America/New_York",
        "kind" => "matter",
        "facets" => "kind",
        "screened" => "group:Litigation",
        n if n == "id" || n.ends_with("_id") => "1001",
        _ => "text",
    };
    let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    format!("{text:x<min$}")
}

/// A description for a response that has none, from its status and schema.
fn describe_status(status: &str, response: &Value, schemas: &Value) -> String {
    let schema = response
        .pointer("/content/application~1json/schema/$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"));
    let described = schema
        .and_then(|name| schemas.get(name))
        .and_then(|s| s.get("description"))
        .and_then(Value::as_str)
        .map(|d| d.lines().next().unwrap_or(d).trim_end_matches('.').to_string());
    match (status, described, schema) {
        ("200", Some(d), _) => d,
        ("200", None, Some(name)) => format!("The {name}"),
        ("201", _, _) => "Created".into(),
        ("204", _, _) => "Done; no content".into(),
        ("302" | "303", _, _) => "A redirect to the `Location` given".into(),
        _ => super::problem::Code::for_status(status.parse().unwrap_or(500)).title().into(),
    }
}

/// A query parameter whose pattern is a comma list of fixed words
/// (`^(a|b)(,(a|b))*$`) is an array of that enum, written comma-separated
/// (`style: form`, `explode: false`).
fn comma_lists_as_arrays(op: &mut Value) {
    for p in op.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
        let pattern = p.pointer("/schema/pattern").and_then(Value::as_str).unwrap_or("");
        let Some(words) = pattern.strip_prefix("^(").and_then(|r| r.split_once(")(,(")).map(|(w, _)| w) else {
            continue;
        };
        let words: Vec<&str> = words.split('|').collect();
        if words.iter().any(|w| w.is_empty() || !w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')) {
            continue;
        }
        p["schema"] = json!({"type": "array", "items": {"type": "string", "enum": words}, "minItems": 1, "maxItems": words.len(), "uniqueItems": true});
        p["style"] = json!("form");
        p["explode"] = json!(false);
    }
}

/// Fills a missing parameter description from the parameter's name.
fn describe_parameters(op: &mut Value) {
    for p in op.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
        if p.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
            let name = p.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            let text = match name.as_str() {
                "id" => "The id of the object.".to_string(),
                "cursor" => "The `next_cursor` of the previous page; leave out for the first page.".to_string(),
                "limit" => "Items per page.".to_string(),
                other => format!("The `{other}` to match."),
            };
            p["description"] = json!(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_by_name() {
        for name in ["created_at", "time", "synced_through", "next_run"] {
            assert!(is_instant(name), "{name}");
        }
        for name in ["name", "etag", "timezone", "time_zone"] {
            assert!(!is_instant(name), "{name}");
        }
    }

    #[test]
    fn refines_a_minimal_spec() {
        let mut spec = json!({
            "info": {"title": "t"},
            "paths": {"/x": {
                "get": {"responses": {"200": {"description": "", "content": {"application/json; charset=utf-8": {"schema": {"$ref": "#/components/schemas/Org"}}}}}},
                "post": {"security": [{"TokenAuth": []}], "responses": {"201": {"description": "Created"}, "429": {"description": "x"}}}
            }},
            "components": {"schemas": {
                "Org": {"description": "A firm.", "type": "object", "properties": {"created_at": {"type": "string"}}},
                "Problem": {"type": "object", "properties": {"code": {"type": "string"}, "type": {"type": "string"}}}
            }}
        });
        refine(&mut spec);
        let get = &spec["paths"]["/x"]["get"];
        assert_eq!(get["security"], json!([]));
        assert!(get["responses"]["200"]["content"]["application/json"].is_object());
        assert_eq!(get["responses"]["200"]["description"], "A firm");
        assert!(get["responses"]["200"]["headers"]["ETag"].is_object());
        assert!(get["responses"]["304"].is_object());
        let post = &spec["paths"]["/x"]["post"];
        assert_eq!(post["security"], json!([{"TokenAuth": []}]));
        assert_eq!(post["parameters"][0]["name"], "Idempotency-Key");
        assert!(post["responses"]["201"]["headers"]["Location"].is_object());
        assert!(post["responses"]["429"]["headers"]["Retry-After"].is_object());
        assert_eq!(spec["components"]["schemas"]["Org"]["properties"]["created_at"]["format"], "date-time");
        let codes = spec["components"]["schemas"]["Problem"]["properties"]["code"]["enum"].as_array().unwrap();
        assert!(codes.contains(&json!("invalid-cursor")) && codes.contains(&json!("gone")));
        assert_eq!(spec["info"]["license"]["name"], "AGPL-3.0-only");
    }

    #[test]
    fn comma_lists_become_arrays_of_enums() {
        let mut op = json!({"parameters": [
            {"name": "kind", "in": "query", "schema": {"type": "string", "pattern": "^(matter|note)(,(matter|note))*$"}},
            {"name": "q", "in": "query", "schema": {"type": "string", "pattern": "^[^\\x00]*$"}}
        ]});
        comma_lists_as_arrays(&mut op);
        assert_eq!(op["parameters"][0]["schema"]["items"]["enum"], json!(["matter", "note"]));
        assert_eq!((&op["parameters"][0]["style"], &op["parameters"][0]["explode"]), (&json!("form"), &json!(false)));
        assert_eq!(op["parameters"][1]["schema"]["type"], "string", "other patterns stay");
    }
}
