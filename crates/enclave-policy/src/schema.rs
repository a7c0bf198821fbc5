//! Every unknown field at once. Serde stops at the first unknown field; this walk over the
//! parsed document (with spans) finds them all before serde runs.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use toml_edit::{Document, Item, TableLike, Value};

use crate::diag::{Severity, Sink};
use crate::raw::{
    RawAcl, RawActiveHours, RawDefinition, RawDirectPolicy, RawGateway, RawGatewayPolicy,
    RawNetwork, RawPresharedKey, RawSystem, RawTag, RawTrust,
};

/// One kind of table: the names of its fields, as the raw struct that serde reads it into
/// declares them (so that the two never disagree), and the kinds of the tables that some of
/// those fields hold (as a table, an array of tables, or inline).
struct Kind {
    fields: &'static [&'static str],
    tables: Vec<(&'static str, Kind)>,
}

impl Kind {
    /// The kind of table that `T` is read from, with no tables inside.
    fn of<'de, T: Deserialize<'de>>() -> Kind {
        let mut fields: &'static [&'static str] = &[];
        // The probe fails on purpose once it has the names; only they are wanted.
        let _ = T::deserialize(FieldNames(&mut fields));
        Kind {
            fields,
            tables: Vec::new(),
        }
    }

    /// The same kind, with the tables that the field `name` holds of kind `kind`.
    fn holding(mut self, name: &'static str, kind: Kind) -> Kind {
        debug_assert!(self.fields.contains(&name), "no field {name}");
        self.tables.push((name, kind));
        self
    }
}

/// The network definition: every kind of table in it.
fn definition() -> Kind {
    Kind::of::<RawDefinition>()
        .holding("network", Kind::of::<RawNetwork>())
        .holding(
            "system",
            Kind::of::<RawSystem>().holding("gateway", Kind::of::<RawGateway>()),
        )
        .holding("tag", Kind::of::<RawTag>())
        .holding("trust_requirement", Kind::of::<RawTrust>())
        .holding(
            "direct_policy",
            Kind::of::<RawDirectPolicy>()
                .holding("acl", Kind::of::<RawAcl>())
                .holding("active_hours", Kind::of::<RawActiveHours>()),
        )
        .holding(
            "gateway_policy",
            Kind::of::<RawGatewayPolicy>()
                .holding("acl", Kind::of::<RawAcl>())
                .holding("active_hours", Kind::of::<RawActiveHours>()),
        )
        .holding("preshared_key", Kind::of::<RawPresharedKey>())
}

/// A deserializer that reads nothing: it notes the field names a struct asks for and fails.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("only the field names were wanted"))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Reports every unknown field of a parsed document; returns whether there was one.
pub(crate) fn unknown_fields(doc: &Document<String>, sink: &mut Sink<'_>) -> bool {
    let before = sink.error_count();
    table(doc.as_table(), &definition(), sink);
    sink.error_count() > before
}

fn unknown(key: &str, span: Option<std::ops::Range<usize>>, fields: &[&str], sink: &mut Sink<'_>) {
    let expected: Vec<String> = fields.iter().map(|name| format!("`{name}`")).collect();
    let message = format!(
        "unknown field `{key}`, expected one of {}",
        expected.join(", ")
    );
    let near = fields
        .iter()
        .map(|name| (distance(key, name), *name))
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

/// Reports the keys of `t` (a table or an inline table of kind `kind`) that it does not name,
/// and walks into those whose values are tables of their own.
fn table(t: &dyn TableLike, kind: &Kind, sink: &mut Sink<'_>) {
    for (key, item) in t.iter() {
        let span = t.get_key_value(key).and_then(|(k, _)| k.span());
        if !kind.fields.contains(&key) {
            unknown(key, span, kind.fields, sink);
        } else if let Some((_, inner)) = kind.tables.iter().find(|(name, _)| *name == key) {
            item_of(item, inner, sink);
        }
    }
}

fn item_of(item: &Item, kind: &Kind, sink: &mut Sink<'_>) {
    match item {
        Item::Table(t) => table(t, kind, sink),
        Item::ArrayOfTables(a) => a.iter().for_each(|t| table(t, kind, sink)),
        Item::Value(v) => value_of(v, kind, sink),
        Item::None => {}
    }
}

fn value_of(value: &Value, kind: &Kind, sink: &mut Sink<'_>) {
    match value {
        Value::InlineTable(t) => table(t, kind, sink),
        Value::Array(a) => a.iter().for_each(|v| value_of(v, kind, sink)),
        _ => {}
    }
}
