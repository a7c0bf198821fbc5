//! The service: the core over a store. It reads the state (cached while the store's revision
//! is unchanged, so a second server's edits are seen on the next request), applies a command
//! with the core, and commits; when another writer committed first, it recomputes on the new
//! state (the command is re-judged, never blindly written over the other's edit).

use std::sync::Arc;

use enclave_policy::Network;
use tokio::sync::{watch, Mutex};

use crate::core::{self, Command, Ctx, Outcome, Refusal};
use crate::model::{AuditEntry, State};
use crate::store::{self, Store};

/// How often a command is recomputed after losing a race to another writer.
const ATTEMPTS: usize = 8;

/// Errors of the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The core refused the command; nothing changed.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed; nothing changed.
    #[error("the store failed")]
    Store(#[source] store::Error),
    /// Other writers kept committing first.
    #[error("the network kept changing under this edit ({ATTEMPTS} attempts); try again")]
    Busy,
}

/// The result type of the service.
pub type Result<T> = std::result::Result<T, Error>;

/// The core over a store.
#[derive(Debug)]
pub struct Service {
    store: Arc<dyn Store>,
    cache: Mutex<Option<Arc<State>>>,
    writer: Mutex<()>,
    /// The last revision this process committed.
    committed: watch::Sender<i64>,
    /// The validated network of the last revision this process validated (a commit here, or
    /// the agents' side validating a revision read from the store): the next enrolment or
    /// approval change is checked against it, and the agents' side need not validate again.
    validated: std::sync::Mutex<Option<(i64, Arc<Network>)>>,
}

impl Service {
    /// A service over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: Mutex::new(None),
            writer: Mutex::new(()),
            committed: watch::Sender::new(0),
            validated: std::sync::Mutex::new(None),
        }
    }

    /// Changes after each commit made through this service (to its revision).
    pub fn commits(&self) -> watch::Receiver<i64> {
        self.committed.subscribe()
    }

    /// The state last read or committed, without asking the store: what is known while the
    /// store is down. `None` before the first read.
    pub async fn cached(&self) -> Option<Arc<State>> {
        self.cache.lock().await.clone()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The current state.
    ///
    /// # Errors
    /// The store failed.
    pub async fn state(&self) -> Result<Arc<State>> {
        let revision = self.store.revision().await.map_err(Error::Store)?;
        let mut cache = self.cache.lock().await;
        if let Some(state) = cache.as_ref().filter(|s| s.revision == revision) {
            return Ok(Arc::clone(state));
        }
        let state = Arc::new(self.store.load().await.map_err(Error::Store)?);
        *cache = Some(Arc::clone(&state));
        Ok(state)
    }

    /// Applies `command` and commits it.
    ///
    /// # Errors
    /// Refused by the core, the store failed, or other writers kept winning.
    pub async fn execute(&self, command: Command, ctx: &Ctx) -> Result<Outcome> {
        // One writer at a time in this process; other processes are caught by the revision.
        let _writer = self.writer.lock().await;
        for _ in 0..ATTEMPTS {
            let state = self.state().await?;
            let before = self.validated(state.revision);
            let outcome = core::apply_on(&state, before.as_deref(), command.clone(), ctx)?;
            let audit = [outcome.audit.clone()];
            // The cache stays locked until it holds the new state: a reader that hears of the
            // commit first (PostgreSQL's notification reaches the agents' side at once) would
            // otherwise find the store ahead of the cache and load the whole state again.
            let mut cache = self.cache.lock().await;
            match self
                .store
                .commit(state.revision, &outcome.changes, &audit)
                .await
            {
                Ok(()) => {
                    // An edit that left the definition alone leaves its network as it was.
                    if let Some(network) = outcome.network.clone().or(before) {
                        self.remember(outcome.next.revision, network);
                    }
                    *cache = Some(Arc::clone(&outcome.next));
                    drop(cache);
                    self.committed.send_replace(outcome.next.revision);
                    tracing::info!(
                        actor = %outcome.audit.actor,
                        action = %outcome.audit.action,
                        target = %outcome.audit.target,
                        revision = outcome.audit.revision,
                        "committed"
                    );
                    return Ok(outcome);
                }
                Err(store::Error::Conflict { base }) => {
                    tracing::debug!(base, "another writer committed first; recomputing");
                }
                Err(other) => return Err(Error::Store(other)),
            }
        }
        Err(Error::Busy)
    }

    /// The validated network of `revision`, if this process knows it.
    pub fn validated(&self, revision: i64) -> Option<Arc<Network>> {
        let validated = self
            .validated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        validated
            .as_ref()
            .filter(|(r, _)| *r == revision)
            .map(|(_, network)| Arc::clone(network))
    }

    /// Remembers that the definition at `revision` validated to `network`.
    pub fn remember(&self, revision: i64, network: Arc<Network>) {
        let mut validated = self
            .validated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if validated.as_ref().is_none_or(|(r, _)| *r <= revision) {
            *validated = Some((revision, network));
        }
    }

    /// Audit entries after `after`.
    ///
    /// # Errors
    /// The store failed.
    pub async fn audit(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        self.store.audit(after, limit).await.map_err(Error::Store)
    }
}
