//! Every unknown field at once. Serde stops at the first unknown field; this walk over the
//! parsed document (with spans) finds them all before serde runs.

use toml_edit::{Document, Item, TableLike, Value};

use crate::diag::{Severity, Sink};

/// A field, with the fields of its value when that is a table (or an array of tables).
struct Field(&'static str, Option<Fields>);

/// The fields of one kind of table.
type Fields = &'static [Field];

const NETWORK: Fields = &[Field("overlay", None), Field("keepalive", None)];
const GATEWAY: Fields = &[
    Field("allowed", None),
    Field("subnets", None),
    Field("removed", None),
    Field("auto_discover", None),
    Field("priority", None),
];
const SYSTEM: Fields = &[
    Field("name", None),
    Field("public_key", None),
    Field("address", None),
    Field("tags", None),
    Field("endpoint", None),
    Field("enabled", None),
    Field("gateway", Some(GATEWAY)),
];
const TAG: Fields = &[Field("name", None), Field("trust", None)];
const TRUST: Fields = &[
    Field("name", None),
    Field("kind", None),
    Field("allow", None),
    Field("block", None),
];
const ACL: Fields = &[
    Field("protocol", None),
    Field("ports", None),
    Field("label", None),
];
const HOURS: Fields = &[
    Field("days", None),
    Field("hours", None),
    Field("zone", None),
];
const DIRECT: Fields = &[
    Field("name", None),
    Field("enabled", None),
    Field("senders", None),
    Field("receivers", None),
    Field("acl", Some(ACL)),
    Field("trust", None),
    Field("active_hours", Some(HOURS)),
];
const GATEWAY_POLICY: Fields = &[
    Field("name", None),
    Field("enabled", None),
    Field("senders", None),
    Field("gateways", None),
    Field("subnets", None),
    Field("filter", None),
    Field("acl", Some(ACL)),
    Field("trust", None),
    Field("active_hours", Some(HOURS)),
];
const PRESHARED_KEY: Fields = &[Field("systems", None), Field("file", None)];
const TOP: Fields = &[
    Field("network", Some(NETWORK)),
    Field("system", Some(SYSTEM)),
    Field("tag", Some(TAG)),
    Field("trust_requirement", Some(TRUST)),
    Field("direct_policy", Some(DIRECT)),
    Field("gateway_policy", Some(GATEWAY_POLICY)),
    Field("preshared_key", Some(PRESHARED_KEY)),
];

/// Reports every unknown field of a parsed document; returns whether there was one.
pub(crate) fn unknown_fields(doc: &Document<String>, sink: &mut Sink<'_>) -> bool {
    let before = sink.error_count();
    table(doc.as_table(), TOP, sink);
    sink.error_count() > before
}

fn unknown(key: &str, span: Option<std::ops::Range<usize>>, fields: Fields, sink: &mut Sink<'_>) {
    let expected: Vec<String> = fields
        .iter()
        .map(|Field(name, _)| format!("`{name}`"))
        .collect();
    let message = format!(
        "unknown field `{key}`, expected one of {}",
        expected.join(", ")
    );
    let near = fields
        .iter()
        .map(|Field(name, _)| (distance(key, name), *name))
        .filter(|(d, _)| *d <= 2)
        .min();
    let hint = near.map(|(_, name)| format!("did you mean `{name}`?"));
    sink.push(Severity::Error, &span.unwrap_or(0..0), message, hint);
}

/// Edit distance (insertions, deletions, substitutions) between two short names.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// Reports the keys of `t` (a table or an inline table) that `fields` does not name, and walks
/// into those whose values have fields of their own.
fn table(t: &dyn TableLike, fields: Fields, sink: &mut Sink<'_>) {
    for (key, item) in t.iter() {
        let span = t.get_key_value(key).and_then(|(k, _)| k.span());
        match fields.iter().find(|Field(name, _)| *name == key) {
            None => unknown(key, span, fields, sink),
            Some(Field(_, Some(inner))) => item_of(item, inner, sink),
            Some(Field(_, None)) => {}
        }
    }
}

fn item_of(item: &Item, fields: Fields, sink: &mut Sink<'_>) {
    match item {
        Item::Table(t) => table(t, fields, sink),
        Item::ArrayOfTables(a) => a.iter().for_each(|t| table(t, fields, sink)),
        Item::Value(v) => value_of(v, fields, sink),
        Item::None => {}
    }
}

fn value_of(value: &Value, fields: Fields, sink: &mut Sink<'_>) {
    match value {
        Value::InlineTable(t) => table(t, fields, sink),
        Value::Array(a) => a.iter().for_each(|v| value_of(v, fields, sink)),
        _ => {}
    }
}
