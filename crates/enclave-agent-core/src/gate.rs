//! Which views from the server the agent takes: only newer ones, and only its own.

use enclave_policy::View;

/// What to do with a view from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Newer than the one in force: apply it.
    Apply,
    /// Not newer than the one in force (a late or repeated message): ignore it.
    Stale {
        /// The serial in force.
        applied: u64,
    },
    /// Not this system's view: refuse it and keep the one in force.
    Foreign(String),
}

/// The serial in force and the key the views must be for.
#[derive(Debug, Clone)]
pub struct Gate {
    public_key: String,
    applied: Option<u64>,
}

impl Gate {
    /// A gate for the system with `public_key` (base64), no view in force yet.
    pub fn new(public_key: &str) -> Self {
        Self {
            public_key: public_key.to_owned(),
            applied: None,
        }
    }

    /// The serial of the view in force.
    pub fn applied(&self) -> Option<u64> {
        self.applied
    }

    /// Judges a view with `serial`; [`Verdict::Apply`] also records it as in force.
    pub fn judge(&mut self, serial: u64, view: &View) -> Verdict {
        // A view lists every peer of its system but never the system itself: one that lists
        // our key as a peer was compiled for someone else.
        if let Some((name, _)) = view
            .peers
            .iter()
            .find(|(_, peer)| peer.public_key == self.public_key)
        {
            return Verdict::Foreign(format!(
                "the server sent the view of {:?}, which has this system's key as its peer {name:?}",
                view.system
            ));
        }
        if let Some(applied) = self.applied.filter(|applied| serial <= *applied) {
            return Verdict::Stale { applied };
        }
        self.applied = Some(serial);
        Verdict::Apply
    }

    /// Records a view in force that did not come through [`Gate::judge`] (the last good view
    /// read from disk), or none (after a revocation).
    pub fn set_applied(&mut self, serial: Option<u64>) {
        self.applied = serial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    const THEIRS: &str = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";

    fn views() -> (View, View) {
        let text = format!(
            "[network]\noverlay = \"100.64.0.0/10\"\n\n\
             [[system]]\nname = \"laptop\"\npublic_key = \"{OURS}\"\naddress = \"100.64.0.11\"\ntags = [\"users\"]\n\n\
             [[system]]\nname = \"server\"\npublic_key = \"{THEIRS}\"\naddress = \"100.64.0.20\"\nendpoint = \"10.0.0.20:51820\"\ntags = [\"servers\"]\n\n\
             [[direct_policy]]\nname = \"ssh\"\nsenders = [\"users\"]\nreceivers = [\"servers\"]\nacl = [{{ protocol = \"tcp\", ports = 22 }}]\n"
        );
        let loaded = enclave_policy::load("net.toml", &text).unwrap();
        (
            enclave_policy::compile(&loaded.network, "laptop").unwrap(),
            enclave_policy::compile(&loaded.network, "server").unwrap(),
        )
    }

    #[test]
    fn only_newer_serials_are_applied() {
        let (ours, _) = views();
        let mut gate = Gate::new(OURS);
        assert_eq!(gate.judge(5, &ours), Verdict::Apply, "the first view");
        assert_eq!(
            gate.judge(5, &ours),
            Verdict::Stale { applied: 5 },
            "a repeat"
        );
        assert_eq!(
            gate.judge(3, &ours),
            Verdict::Stale { applied: 5 },
            "a late one"
        );
        assert_eq!(gate.applied(), Some(5));
        assert_eq!(gate.judge(6, &ours), Verdict::Apply);
        assert_eq!(gate.applied(), Some(6));
        // After a revocation anything the server sends is new again.
        gate.set_applied(None);
        assert_eq!(gate.judge(2, &ours), Verdict::Apply);
    }

    #[test]
    fn another_systems_view_is_refused_and_changes_nothing() {
        let (ours, theirs) = views();
        assert!(
            theirs.peers.values().any(|p| p.public_key == OURS),
            "the test needs the other view to list us"
        );
        let mut gate = Gate::new(OURS);
        assert_eq!(gate.judge(1, &ours), Verdict::Apply);
        let verdict = gate.judge(9, &theirs);
        assert!(
            matches!(&verdict, Verdict::Foreign(why) if why.contains("\"server\"")),
            "{verdict:?}"
        );
        assert_eq!(
            gate.applied(),
            Some(1),
            "the refused view's serial is not taken"
        );
        // The same view is fine for the system it was made for.
        assert_eq!(Gate::new(THEIRS).judge(9, &theirs), Verdict::Apply);
    }
}
