//! The set-up the in-process HTTP tests share (the API's, `api_tests.rs`, and the portal's,
//! `portal/tests.rs`): a real SQLite store in a directory of its own, a service and a hub
//! over it, and the runtime that drives them. The directory goes when the bench does. Also
//! the policy the core's and the portal's tests start from.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use crate::agents::{self, Hub};
use crate::core::{Command, Ctx, Outcome};
use crate::model::{AclDoc, PolicyDoc, PolicyKind, Ports};
use crate::service::Service;
use crate::store::SqlStore;

/// A store, its service and hub, on a current-thread runtime.
pub(crate) struct Bench {
    pub runtime: tokio::runtime::Runtime,
    pub store: SqlStore,
    pub hub: Arc<Hub>,
    dir: PathBuf,
}

impl Bench {
    /// An empty store in `enclave-control-{suite}-{pid}-{name}` under the temporary directory.
    pub fn new(suite: &str, name: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "enclave-control-{suite}-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/control.db", dir.display());
        let store = runtime.block_on(SqlStore::open(&url)).unwrap();
        let service = Arc::new(Service::new(Arc::new(store.clone())));
        let hub = Arc::new(Hub::new(service, agents::Options::default()));
        Self {
            runtime,
            store,
            hub,
            dir,
        }
    }

    pub fn service(&self) -> &Arc<Service> {
        self.hub.service()
    }

    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Runs `command` as the command line does (actor `cli`, now); panics when refused.
    pub fn execute(&self, command: Command) -> Outcome {
        self.block_on(self.service().execute(command, &cli()))
            .unwrap()
    }
}

/// The command line's context: actor `cli`, now.
pub fn cli() -> Ctx {
    Ctx {
        actor: "cli".into(),
        now: agents::now(),
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A gateway access policy from tag `users` through `gateway` to `subnet` on TCP 445 (label
/// `SMB`), enabled, with no subnet filter, trust requirement or active hours.
pub fn smb_policy(name: &str, gateway: &str, subnet: &str) -> PolicyDoc {
    PolicyDoc {
        name: name.into(),
        kind: PolicyKind::Gateway,
        enabled: true,
        senders: vec!["users".into()],
        receivers: vec![],
        gateways: vec![gateway.into()],
        subnets: vec![subnet.into()],
        filter: None,
        acl: vec![AclDoc {
            protocol: "tcp".into(),
            ports: Some(Ports::One(445)),
            label: Some("SMB".into()),
        }],
        trust: vec![],
        active_hours: None,
        version: 0,
    }
}
