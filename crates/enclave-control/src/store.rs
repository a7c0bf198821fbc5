//! The store: one trait, one implementation over sqlx's `Any` driver that serves SQLite and
//! PostgreSQL with one schema and one set of versioned migrations (`migrations/`), applied on
//! open.
//!
//! A commit is one transaction that first moves the network's revision from the one the
//! change was computed on to the next (`UPDATE … WHERE revision = base`): a commit computed
//! on an older revision changes nothing and fails with [`Error::Conflict`], so two servers or
//! two administrators can never lose one another's edits. Everything else in the transaction
//! is all or nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr as _;

use enclave_control_proto::Redacted;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row as _};

use crate::core::Change;
use crate::model::{
    AdminToken, Approval, ApprovalMode, AuditEntry, Document, EnrolmentKey, ManagedSystem,
    Presence, Settings, State,
};

/// The PostgreSQL channel on which every commit announces its revision (`NOTIFY`), so that
/// other servers on the same database push the change to their agents at once.
pub const CHANNEL: &str = "enclave_revision";

/// How long a statement waits for a database connection before it fails: a database that is
/// down makes requests fail quickly and clearly, instead of hanging.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database URL is neither `sqlite:` nor `postgres:`.
    #[error("unsupported database URL {0:?}: use sqlite:///PATH or postgres://…")]
    Url(String),
    /// The database could not be reached or refused a statement.
    #[error("the database failed ({what})")]
    Database {
        /// What we were doing.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The SQLite file could not be created or made private.
    #[error("the database file {} cannot be created readable by its owner only (mode 0600)", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The migrations could not be applied.
    #[error("the database schema could not be migrated")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A stored value does not decode (the database was edited by hand, or is newer than us).
    #[error("a stored {what} does not decode: {detail}")]
    Corrupt {
        /// Which row kind.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Someone else committed since the change was computed; nothing was written.
    #[error(
        "the network changed since this edit was computed (revision {base} is no longer current)"
    )]
    Conflict {
        /// The revision the change was computed on.
        base: i64,
    },
}

/// The result type of the store.
pub type Result<T> = std::result::Result<T, Error>;

/// A boxed future (the trait is used as `dyn Store`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the managed network is kept.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The current revision (cheap: tells whether a cached state is current).
    fn revision(&self) -> BoxFuture<'_, Result<i64>>;
    /// The whole state at one revision (read in one transaction).
    fn load(&self) -> BoxFuture<'_, Result<State>>;
    /// Writes `changes` and `audit` at `base + 1`, all or nothing; [`Error::Conflict`] when
    /// the revision is no longer `base`.
    fn commit<'a>(
        &'a self,
        base: i64,
        changes: &'a [Change],
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<()>>;
    /// Audit entries with a revision above `after`, oldest first, at most `limit`.
    fn audit(&self, after: i64, limit: u32) -> BoxFuture<'_, Result<Vec<AuditEntry>>>;
    /// Where agents are connected, as their servers last wrote it.
    fn presence(&self) -> BoxFuture<'_, Result<Vec<Presence>>>;
    /// Writes (inserts or replaces) presence rows, in one transaction. Does not move the
    /// revision.
    fn put_presence<'a>(&'a self, rows: &'a [Presence]) -> BoxFuture<'a, Result<()>>;
    /// Tells of other writers' commits as they happen: the receiver changes on each (and
    /// after a lost connection, when one may have been missed). `None` where there can be no
    /// other writer to hear (SQLite has one server).
    fn listen(&self) -> BoxFuture<'_, Result<Option<tokio::sync::watch::Receiver<u64>>>>;
    /// The portal's account `name` ([`crate::portal::users`]).
    fn portal_user<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<crate::portal::users::User>>>;
    /// Creates or replaces a portal account.
    fn put_portal_user<'a>(
        &'a self,
        user: &'a crate::portal::users::User,
    ) -> BoxFuture<'a, Result<()>>;
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend of a database URL.
    ///
    /// # Errors
    /// [`Error::Url`] for anything else.
    pub fn of(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::Url(redact(url)))
        }
    }
}

/// A URL with its password (if any) hidden, for messages and logs: the one in the user
/// information (`postgres://USER:***@HOST/DB`) and a `password=` query parameter
/// (`?password=***`), which PostgreSQL's URLs also take.
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &base[..scheme + 3],
                    &userinfo[..colon],
                    &base[at..]
                ),
                None => base.to_owned(),
            }
        }
        _ => base.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// The file of a `sqlite://PATH?…` URL.
pub fn sqlite_path(url: &str) -> Option<&str> {
    let path = url.strip_prefix("sqlite://")?.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// Makes the SQLite file readable by its owner only before SQLite opens it: a new file is
/// created with mode 0600 (never through a symbolic link: `O_CREAT|O_EXCL`), so that no other
/// user can read it even for a moment, and SQLite gives its journal and WAL files the same mode;
/// an existing regular file is narrowed to 0600. The file holds hashes, not secrets, but nobody
/// else needs to read the network, its keys' hashes or its audit log.
fn private_file(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let failed = |source| Error::File {
        path: path.to_owned(),
        source,
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o077 != 0 => {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(failed)
                }
                Ok(_) => Ok(()),
                Err(e) => Err(failed(e)),
            }
        }
        Err(e) => Err(failed(e)),
    }
}

/// The SQL store (SQLite or PostgreSQL).
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) pool: AnyPool,
    backend: Backend,
    url: Url,
}

/// A database URL, whose `Debug` hides the password.
#[derive(Clone)]
struct Url(String);

impl std::fmt::Debug for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

const DELETE_SYSTEM: &str = "DELETE FROM systems WHERE name = $1";
const DELETE_TAG: &str = "DELETE FROM tags WHERE name = $1";
const DELETE_TRUST: &str = "DELETE FROM trust_requirements WHERE name = $1";
const DELETE_POLICY: &str = "DELETE FROM policies WHERE name = $1";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Database { what, source }
}

impl SqlStore {
    /// Opens the database (a SQLite file is created if missing) and applies the migrations.
    ///
    /// # Errors
    /// The URL is not supported, the database cannot be reached, or migrating failed.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url)?;
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        if let Some(path) = sqlite_path(&url) {
            private_file(std::path::Path::new(path))?;
        }
        let options = AnyConnectOptions::from_str(&url).map_err(db("parsing the URL"))?;
        // One SQLite connection: its writers serialise anyway, and one connection never
        // meets "database is locked". PostgreSQL gets a small pool.
        let max = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => 8,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(db("connecting"))?;
        MIGRATOR.run(&pool).await.map_err(Error::Migrate)?;
        Ok(Self {
            pool,
            backend,
            url: Url(url),
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The applied migrations' versions, oldest first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn migrations(&self) -> Result<Vec<i64>> {
        let rows = sqlx::query("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading the migrations"))?;
        rows.iter()
            .map(|r| r.try_get::<i64, _>(0).map_err(db("reading the migrations")))
            .collect()
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn load_state(&self) -> Result<State> {
        let mut tx = self.pool.begin().await.map_err(db("starting a read"))?;
        let net = sqlx::query("SELECT revision, overlay, keepalive FROM network WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(db("reading the network"))?;
        let overlay: String = net.try_get("overlay").map_err(db("reading the network"))?;
        let keepalive: i64 = net
            .try_get("keepalive")
            .map_err(db("reading the network"))?;
        let mut state = State {
            revision: net.try_get("revision").map_err(db("reading the network"))?,
            settings: Settings {
                overlay: overlay.parse().map_err(|_| corrupt("network", "overlay"))?,
                keepalive: u16::try_from(keepalive).map_err(|_| corrupt("network", "keepalive"))?,
            },
            ..State::default()
        };
        for row in sqlx::query("SELECT * FROM systems")
            .fetch_all(&mut *tx)
            .await
            .map_err(db("reading systems"))?
        {
            let system = system_of(&row)?;
            state.systems.insert(system.name.clone(), system);
        }
        state.tags = documents(&mut tx, "SELECT body, version FROM tags", "reading tags").await?;
        state.trust_requirements = documents(
            &mut tx,
            "SELECT body, version FROM trust_requirements",
            "reading trust requirements",
        )
        .await?;
        state.policies = documents(
            &mut tx,
            "SELECT body, version FROM policies",
            "reading policies",
        )
        .await?;
        for row in sqlx::query("SELECT body FROM preshared_keys ORDER BY position")
            .fetch_all(&mut *tx)
            .await
            .map_err(db("reading pre-shared keys"))?
        {
            state.preshared_keys.push(body_of(&row, "pre-shared key")?);
        }
        for row in sqlx::query("SELECT * FROM enrolment_keys")
            .fetch_all(&mut *tx)
            .await
            .map_err(db("reading enrolment keys"))?
        {
            let key = key_of(&row)?;
            state.keys.insert(key.id.clone(), key);
        }
        for row in sqlx::query("SELECT * FROM admin_tokens")
            .fetch_all(&mut *tx)
            .await
            .map_err(db("reading admin tokens"))?
        {
            let e = db("reading admin tokens");
            let token = AdminToken {
                id: row.try_get("id").map_err(db("reading admin tokens"))?,
                name: row.try_get("name").map_err(db("reading admin tokens"))?,
                hash: Redacted::new(row.try_get("hash").map_err(db("reading admin tokens"))?),
                created_at: row
                    .try_get("created_at")
                    .map_err(db("reading admin tokens"))?,
                revoked: row.try_get::<i64, _>("revoked").map_err(e)? != 0,
            };
            state.tokens.insert(token.id.clone(), token);
        }
        tx.commit().await.map_err(db("finishing a read"))?;
        Ok(state)
    }

    async fn commit_changes(
        &self,
        base: i64,
        changes: &[Change],
        audit: &[AuditEntry],
    ) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        // First the revision: this takes the write lock, and refuses a stale base.
        let moved = sqlx::query("UPDATE network SET revision = $1 WHERE id = 1 AND revision = $2")
            .bind(base + 1)
            .bind(base)
            .execute(&mut *tx)
            .await
            .map_err(db("moving the revision"))?;
        if moved.rows_affected() != 1 {
            // Dropping the transaction rolls it back.
            return Err(Error::Conflict { base });
        }
        // Replace = delete every touched row, then insert the new ones: rows that swap a
        // unique value (an address, a public key) never collide half-way.
        for change in changes {
            let (statement, key) = match change {
                Change::Settings(_)
                | Change::PresharedKeys(_)
                | Change::PutKey(_)
                | Change::PutToken(_) => continue,
                Change::PutSystem(s) => (DELETE_SYSTEM, s.name.as_str()),
                Change::DeleteSystem(n) => (DELETE_SYSTEM, n.as_str()),
                Change::PutTag(t) => (DELETE_TAG, t.name.as_str()),
                Change::DeleteTag(n) => (DELETE_TAG, n.as_str()),
                Change::PutTrust(t) => (DELETE_TRUST, t.name.as_str()),
                Change::DeleteTrust(n) => (DELETE_TRUST, n.as_str()),
                Change::PutPolicy(p) => (DELETE_POLICY, p.name.as_str()),
                Change::DeletePolicy(n) => (DELETE_POLICY, n.as_str()),
            };
            sqlx::query(statement)
                .bind(key.to_owned())
                .execute(&mut *tx)
                .await
                .map_err(db("deleting a row"))?;
        }
        for change in changes {
            let query = match change {
                Change::Settings(s) => {
                    sqlx::query("UPDATE network SET overlay = $1, keepalive = $2 WHERE id = 1")
                        .bind(s.overlay.to_string())
                        .bind(i64::from(s.keepalive))
                }
                Change::PresharedKeys(keys) => {
                    sqlx::query("DELETE FROM preshared_keys")
                        .execute(&mut *tx)
                        .await
                        .map_err(db("replacing pre-shared keys"))?;
                    for (position, key) in keys.iter().enumerate() {
                        sqlx::query("INSERT INTO preshared_keys (position, body) VALUES ($1, $2)")
                            .bind(i64::try_from(position).unwrap_or(i64::MAX))
                            .bind(json(key)?)
                            .execute(&mut *tx)
                            .await
                            .map_err(db("replacing pre-shared keys"))?;
                    }
                    continue;
                }
                Change::PutSystem(s) => insert_system(s)?,
                Change::PutTag(t) => {
                    sqlx::query("INSERT INTO tags (name, body, version) VALUES ($1, $2, $3)")
                        .bind(t.name.clone())
                        .bind(json(t)?)
                        .bind(t.version)
                }
                Change::PutTrust(t) => sqlx::query(
                    "INSERT INTO trust_requirements (name, body, version) VALUES ($1, $2, $3)",
                )
                .bind(t.name.clone())
                .bind(json(t)?)
                .bind(t.version),
                Change::PutPolicy(p) => sqlx::query(
                    "INSERT INTO policies (name, kind, body, version) VALUES ($1, $2, $3, $4)",
                )
                .bind(p.name.clone())
                .bind(match p.kind {
                    crate::model::PolicyKind::Direct => "direct",
                    crate::model::PolicyKind::Gateway => "gateway",
                })
                .bind(json(p)?)
                .bind(p.version),
                Change::PutKey(k) => {
                    sqlx::query("DELETE FROM enrolment_keys WHERE id = $1")
                        .bind(k.id.clone())
                        .execute(&mut *tx)
                        .await
                        .map_err(db("writing an enrolment key"))?;
                    insert_key(k)?
                }
                Change::PutToken(t) => {
                    sqlx::query("DELETE FROM admin_tokens WHERE id = $1")
                        .bind(t.id.clone())
                        .execute(&mut *tx)
                        .await
                        .map_err(db("writing an admin token"))?;
                    sqlx::query(
                        "INSERT INTO admin_tokens (id, name, hash, created_at, revoked) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(t.id.clone())
                    .bind(t.name.clone())
                    .bind(t.hash.expose().clone())
                    .bind(t.created_at)
                    .bind(i64::from(t.revoked))
                }
                Change::DeleteSystem(_)
                | Change::DeleteTag(_)
                | Change::DeleteTrust(_)
                | Change::DeletePolicy(_) => continue,
            };
            query.execute(&mut *tx).await.map_err(db("writing a row"))?;
        }
        for (seq, entry) in audit.iter().enumerate() {
            sqlx::query(
                "INSERT INTO audit (revision, seq, at, actor, action, target, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(base + 1)
            .bind(i64::try_from(seq).unwrap_or(i64::MAX))
            .bind(entry.at)
            .bind(entry.actor.clone())
            .bind(entry.action.clone())
            .bind(entry.target.clone())
            .bind(entry.detail.clone())
            .execute(&mut *tx)
            .await
            .map_err(db("writing the audit log"))?;
        }
        if self.backend == Backend::Postgres {
            // Delivered to listeners when (and only if) the transaction commits.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind((base + 1).to_string())
                .execute(&mut *tx)
                .await
                .map_err(db("announcing the commit"))?;
        }
        tx.commit().await.map_err(db("committing"))?;
        Ok(())
    }

    async fn read_presence(&self) -> Result<Vec<Presence>> {
        let rows =
            sqlx::query("SELECT public_key, server, connected, last_seen, endpoint FROM presence")
                .fetch_all(&self.pool)
                .await
                .map_err(db("reading presence"))?;
        rows.iter()
            .map(|r| {
                let e = || db("reading presence");
                Ok(Presence {
                    public_key: r.try_get("public_key").map_err(e())?,
                    server: r.try_get("server").map_err(e())?,
                    connected: r.try_get::<i64, _>("connected").map_err(e())? != 0,
                    last_seen: r.try_get("last_seen").map_err(e())?,
                    endpoint: r.try_get("endpoint").map_err(e())?,
                })
            })
            .collect()
    }

    async fn write_presence(&self, rows: &[Presence]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        for row in rows {
            sqlx::query(
                "INSERT INTO presence (public_key, server, connected, last_seen, endpoint) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (public_key) DO UPDATE SET server = excluded.server, \
                 connected = excluded.connected, last_seen = excluded.last_seen, \
                 endpoint = excluded.endpoint",
            )
            .bind(row.public_key.clone())
            .bind(row.server.clone())
            .bind(i64::from(row.connected))
            .bind(row.last_seen)
            .bind(row.endpoint.clone())
            .execute(&mut *tx)
            .await
            .map_err(db("writing presence"))?;
        }
        tx.commit().await.map_err(db("committing presence"))?;
        Ok(())
    }

    /// LISTENs on [`CHANNEL`] on a connection of its own, for as long as the receiver lives.
    async fn listen_commits(&self) -> Result<Option<tokio::sync::watch::Receiver<u64>>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url.0)
            .await
            .map_err(db("connecting to listen for commits"))?;
        listener
            .listen(CHANNEL)
            .await
            .map_err(db("listening for commits"))?;
        let (sender, receiver) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            let mut heard = 0u64;
            loop {
                let wait = match listener.try_recv().await {
                    // A commit, or a lost connection (re-established on the next call) during
                    // which one may have been missed: either way, look again.
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for other servers' commits failed; retrying");
                        Some(std::time::Duration::from_secs(1))
                    }
                };
                heard += 1;
                if sender.send(heard).is_err() {
                    return;
                }
                if let Some(wait) = wait {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = sender.closed() => return,
                    }
                }
            }
        });
        Ok(Some(receiver))
    }

    async fn read_audit(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT revision, at, actor, action, target, detail FROM audit \
             WHERE revision > $1 ORDER BY revision, seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading the audit log"))?;
        rows.iter()
            .map(|r| {
                let e = || db("reading the audit log");
                Ok(AuditEntry {
                    revision: r.try_get("revision").map_err(e())?,
                    at: r.try_get("at").map_err(e())?,
                    actor: r.try_get("actor").map_err(e())?,
                    action: r.try_get("action").map_err(e())?,
                    target: r.try_get("target").map_err(e())?,
                    detail: r.try_get("detail").map_err(e())?,
                })
            })
            .collect()
    }
}

impl Store for SqlStore {
    fn revision(&self) -> BoxFuture<'_, Result<i64>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT revision FROM network WHERE id = 1")
                .fetch_one(&self.pool)
                .await
                .map_err(db("reading the revision"))?;
            row.try_get::<i64, _>(0).map_err(db("reading the revision"))
        })
    }

    fn load(&self) -> BoxFuture<'_, Result<State>> {
        Box::pin(self.load_state())
    }

    fn commit<'a>(
        &'a self,
        base: i64,
        changes: &'a [Change],
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.commit_changes(base, changes, audit))
    }

    fn audit(&self, after: i64, limit: u32) -> BoxFuture<'_, Result<Vec<AuditEntry>>> {
        Box::pin(self.read_audit(after, limit))
    }

    fn presence(&self) -> BoxFuture<'_, Result<Vec<Presence>>> {
        Box::pin(self.read_presence())
    }

    fn put_presence<'a>(&'a self, rows: &'a [Presence]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.write_presence(rows))
    }

    fn listen(&self) -> BoxFuture<'_, Result<Option<tokio::sync::watch::Receiver<u64>>>> {
        Box::pin(self.listen_commits())
    }

    fn portal_user<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<crate::portal::users::User>>> {
        Box::pin(crate::portal::users::read(&self.pool, name))
    }

    fn put_portal_user<'a>(
        &'a self,
        user: &'a crate::portal::users::User,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(crate::portal::users::write(&self.pool, user))
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Corrupt {
        what: "value",
        detail: e.to_string(),
    })
}

fn corrupt(what: &'static str, detail: &str) -> Error {
    Error::Corrupt {
        what,
        detail: detail.to_owned(),
    }
}

/// Every document of one kind, by name: `select` reads its rows' `body` (JSON) and `version`.
async fn documents<D: Document + serde::de::DeserializeOwned>(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    select: &'static str,
    reading: &'static str,
) -> Result<BTreeMap<String, D>> {
    let mut documents = BTreeMap::new();
    for row in sqlx::query(select)
        .fetch_all(&mut **tx)
        .await
        .map_err(db(reading))?
    {
        let mut doc: D = body_of(&row, D::WHAT)?;
        doc.set_version(row.try_get("version").map_err(db(reading))?);
        documents.insert(doc.name().to_owned(), doc);
    }
    Ok(documents)
}

fn body_of<T: serde::de::DeserializeOwned>(row: &AnyRow, what: &'static str) -> Result<T> {
    let body: String = row.try_get("body").map_err(db("reading a row"))?;
    serde_json::from_str(&body).map_err(|e| Error::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn insert_system(s: &ManagedSystem) -> Result<Query<'static>> {
    let gateway = s.gateway.as_ref().map(json).transpose()?;
    Ok(sqlx::query(
        "INSERT INTO systems (name, public_key, address, tags, endpoint, enabled, approval, \
         gateway, discovered, ephemeral, enrolled_with, created_at, last_seen, connected, version, \
         observed_endpoint) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(s.name.clone())
    .bind(s.public_key.clone())
    .bind(s.address.to_string())
    .bind(json(&s.tags)?)
    .bind(s.endpoint.map(|e| e.to_string()))
    .bind(i64::from(s.enabled))
    .bind(s.approval.as_str())
    .bind(gateway)
    .bind(json(&s.discovered)?)
    .bind(i64::from(s.ephemeral))
    .bind(s.enrolled_with.clone())
    .bind(s.created_at)
    .bind(s.last_seen)
    .bind(i64::from(s.connected))
    .bind(s.version)
    .bind(s.observed_endpoint.map(|e| e.to_string())))
}

fn system_of(row: &AnyRow) -> Result<ManagedSystem> {
    let e = || db("reading systems");
    let text = |col: &str| -> Result<String> { row.try_get::<String, _>(col).map_err(e()) };
    let flag = |col: &str| -> Result<bool> { Ok(row.try_get::<i64, _>(col).map_err(e())? != 0) };
    let json_of = |col: &str, body: &str| -> Result<serde_json::Value> {
        serde_json::from_str(body).map_err(|err| corrupt("system", &format!("{col}: {err}")))
    };
    let tags: BTreeSet<String> = serde_json::from_value(json_of("tags", &text("tags")?)?)
        .map_err(|err| corrupt("system", &err.to_string()))?;
    let gateway = match row.try_get::<Option<String>, _>("gateway").map_err(e())? {
        Some(body) => Some(
            serde_json::from_value(json_of("gateway", &body)?)
                .map_err(|err| corrupt("system", &err.to_string()))?,
        ),
        None => None,
    };
    let discovered: BTreeMap<_, _> =
        serde_json::from_value(json_of("discovered", &text("discovered")?)?)
            .map_err(|err| corrupt("system", &err.to_string()))?;
    let endpoint_of = |col: &'static str| -> Result<Option<std::net::SocketAddr>> {
        match row.try_get::<Option<String>, _>(col).map_err(e())? {
            Some(text) => Ok(Some(text.parse().map_err(|_| corrupt("system", col))?)),
            None => Ok(None),
        }
    };
    let endpoint = endpoint_of("endpoint")?;
    let observed_endpoint = endpoint_of("observed_endpoint")?;
    Ok(ManagedSystem {
        name: text("name")?,
        public_key: text("public_key")?,
        address: text("address")?
            .parse()
            .map_err(|_| corrupt("system", "address"))?,
        tags,
        endpoint,
        observed_endpoint,
        enabled: flag("enabled")?,
        approval: Approval::parse(&text("approval")?)
            .ok_or_else(|| corrupt("system", "approval"))?,
        gateway,
        discovered,
        ephemeral: flag("ephemeral")?,
        enrolled_with: row.try_get("enrolled_with").map_err(e())?,
        created_at: row.try_get("created_at").map_err(e())?,
        last_seen: row.try_get("last_seen").map_err(e())?,
        connected: flag("connected")?,
        version: row.try_get("version").map_err(e())?,
    })
}

fn insert_key(k: &EnrolmentKey) -> Result<Query<'static>> {
    Ok(sqlx::query(
        "INSERT INTO enrolment_keys (id, hash, tags, approval, uses_allowed, uses, expires_at, \
         ephemeral, revoked, created_at, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(k.id.clone())
    .bind(k.hash.expose().clone())
    .bind(json(&k.tags)?)
    .bind(match k.approval {
        ApprovalMode::Auto => "auto",
        ApprovalMode::Manual => "manual",
    })
    .bind(k.uses_allowed.map(i64::from))
    .bind(i64::from(k.uses))
    .bind(k.expires_at)
    .bind(i64::from(k.ephemeral))
    .bind(i64::from(k.revoked))
    .bind(k.created_at)
    .bind(k.created_by.clone()))
}

fn key_of(row: &AnyRow) -> Result<EnrolmentKey> {
    let e = || db("reading enrolment keys");
    let tags: String = row.try_get("tags").map_err(e())?;
    let approval: String = row.try_get("approval").map_err(e())?;
    let count = |v: i64| u32::try_from(v).map_err(|_| corrupt("enrolment key", "uses"));
    Ok(EnrolmentKey {
        id: row.try_get("id").map_err(e())?,
        hash: Redacted::new(row.try_get("hash").map_err(e())?),
        tags: serde_json::from_str(&tags)
            .map_err(|err| corrupt("enrolment key", &err.to_string()))?,
        approval: match approval.as_str() {
            "auto" => ApprovalMode::Auto,
            "manual" => ApprovalMode::Manual,
            _ => return Err(corrupt("enrolment key", "approval")),
        },
        uses_allowed: row
            .try_get::<Option<i64>, _>("uses_allowed")
            .map_err(e())?
            .map(count)
            .transpose()?,
        uses: count(row.try_get("uses").map_err(e())?)?,
        expires_at: row.try_get("expires_at").map_err(e())?,
        ephemeral: row.try_get::<i64, _>("ephemeral").map_err(e())? != 0,
        revoked: row.try_get::<i64, _>("revoked").map_err(e())? != 0,
        created_at: row.try_get("created_at").map_err(e())?,
        created_by: row.try_get("created_by").map_err(e())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlite_file_is_readable_by_its_owner_only_from_the_start() {
        use std::os::unix::fs::PermissionsExt as _;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("enclave-control-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mode = |name: &str| {
            std::fs::metadata(dir.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        // A new file: created 0600 before SQLite opens it.
        runtime
            .block_on(SqlStore::open(&format!(
                "sqlite://{}/new.db",
                dir.display()
            )))
            .unwrap();
        assert_eq!(mode("new.db"), 0o600);
        // An existing file others may read (an empty file is an empty database): narrowed.
        let old = dir.join("old.db");
        std::fs::write(&old, b"").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        runtime
            .block_on(SqlStore::open(&format!("sqlite://{}", old.display())))
            .unwrap();
        assert_eq!(mode("old.db"), 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_database_password_never_reaches_a_message() {
        assert_eq!(
            redact("postgres://enclave:s3cret@db:5432/enclave?sslmode=disable"),
            "postgres://enclave:***@db:5432/enclave?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://enclave@db/enclave?host=/run/postgresql&password=s3cret"),
            "postgres://enclave@db/enclave?host=/run/postgresql&password=***"
        );
        assert_eq!(
            redact("postgres://enclave@localhost/enclave?host=/run/postgresql"),
            "postgres://enclave@localhost/enclave?host=/run/postgresql"
        );
        assert_eq!(
            redact("sqlite:///var/lib/enclave/control.db"),
            "sqlite:///var/lib/enclave/control.db"
        );
        assert!(!Backend::of("mysql://u:s3cret@h/db?password=s3cret")
            .unwrap_err()
            .to_string()
            .contains("s3cret"));
    }
}
