//! The documents of the definition (policies, tags, trust requirements) as commands write
//! them: one way to create, replace and delete each kind, once its own fields are checked.

use std::collections::BTreeSet;

use super::{done, precondition, Command, Ran, Refusal, Reply, Touched, Write};
use crate::model::{Document, PolicyDoc, State, TagDoc, TrustDoc};

/// A kind of [`Document`] as commands carry it and the audit log names its changes.
pub(crate) trait Edit: Document {
    /// The audit log's action for a creation (`tag.create`).
    const CREATE: &'static str;
    /// … for a replacement (`tag.update`).
    const UPDATE: &'static str;
    /// … for a deletion (`tag.delete`).
    const DELETE: &'static str;
    /// The command that creates or replaces it.
    fn put(self, write: Write) -> Command;
    /// The command that deletes the one named `name`.
    fn delete(name: String) -> Command;
    /// The reply that shows it.
    fn reply(self) -> Reply;
    /// The names of its kind that a command touched.
    fn touched(t: &mut Touched) -> &mut BTreeSet<String>;
}

macro_rules! edit {
    ($($t:ty: $audit:literal, $put:ident, $delete:ident, $reply:expr, $touched:ident;)*) => {$(
        impl Edit for $t {
            const CREATE: &'static str = concat!($audit, ".create");
            const UPDATE: &'static str = concat!($audit, ".update");
            const DELETE: &'static str = concat!($audit, ".delete");
            fn put(self, write: Write) -> Command {
                Command::$put { doc: self, write }
            }
            fn delete(name: String) -> Command {
                Command::$delete { name }
            }
            fn reply(self) -> Reply {
                $reply(self)
            }
            fn touched(t: &mut Touched) -> &mut BTreeSet<String> {
                &mut t.$touched
            }
        }
    )*};
}
edit! {
    TagDoc: "tag", PutTag, DeleteTag, Reply::Tag, tags;
    TrustDoc: "trust", PutTrust, DeleteTrust, Reply::Trust, trust;
    PolicyDoc: "policy", PutPolicy, DeletePolicy, |doc| Reply::Policy(Box::new(doc)), policies;
}

/// Creates or replaces `doc` (its own fields already checked) as `write` says: a creation
/// must not find one of its name, a replacement must find it at the version the client read.
pub(super) fn put<D: Edit>(
    next: &mut State,
    t: &mut Touched,
    doc: D,
    write: Write,
    detail: String,
) -> Result<Ran, Refusal> {
    let current = D::all(next).get(doc.name()).map(D::version);
    precondition(D::WHAT, doc.name(), doc.version(), current, write)?;
    let name = doc.name().to_owned();
    D::all_mut(next).insert(name.clone(), doc.clone());
    D::touched(t).insert(name.clone());
    t.definition = true;
    let action = match write {
        Write::Create => D::CREATE,
        Write::Update => D::UPDATE,
    };
    Ok((action, name, detail, doc.reply()))
}

/// Deletes the document named `name`, or refuses when there is none.
pub(super) fn delete<D: Edit>(
    next: &mut State,
    t: &mut Touched,
    name: String,
) -> Result<Ran, Refusal> {
    if D::all_mut(next).remove(&name).is_none() {
        return Err(Refusal::NotFound {
            what: D::WHAT,
            name,
        });
    }
    D::touched(t).insert(name.clone());
    t.definition = true;
    Ok((D::DELETE, name, String::new(), done("deleted")))
}

/// `doc` as `state` holds it (with the version a commit gave it); as given when it is gone.
pub(super) fn fresh<D: Document>(state: &State, doc: D) -> D {
    D::all(state).get(doc.name()).cloned().unwrap_or(doc)
}
