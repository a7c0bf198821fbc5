//! The order of [`NatManager`]'s steps, with a fake backend that notes what the sysctl (a plain
//! file here) held at each of its calls.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::*;

/// One call the manager made to the backend, with the forwarding value at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Apply {
        forwarding: String,
        others: OtherForwarding,
    },
    Reset {
        forwarding: String,
    },
}

#[derive(Debug)]
struct FakeBackend {
    sysctl: PathBuf,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Every apply fails (a rule the kernel refuses).
    refuse: bool,
}

impl FakeBackend {
    fn forwarding(&self) -> String {
        fs::read_to_string(&self.sysctl).unwrap().trim().to_owned()
    }
}

impl NatBackend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn apply(&mut self, _policy: &NatPolicy, others: OtherForwarding) -> Result<()> {
        let forwarding = self.forwarding();
        self.calls
            .lock()
            .unwrap()
            .push(Call::Apply { forwarding, others });
        if self.refuse {
            return Err(Error::ReadBack("refused by the test".into()));
        }
        Ok(())
    }

    fn reset_policy(&mut self) -> Result<()> {
        let forwarding = self.forwarding();
        self.calls.lock().unwrap().push(Call::Reset { forwarding });
        Ok(())
    }

    fn rules(&self) -> Result<Vec<RuleState>> {
        Ok(Vec::new())
    }
}

/// A scratch directory with a sysctl file holding `value`, removed on drop.
struct Scratch {
    dir: tempfile::TempDir,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Scratch {
    fn new(name: &str, value: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("enclave-nat-mgr-{name}-"))
            .tempdir()
            .unwrap();
        fs::write(dir.path().join("ip_forward"), value).unwrap();
        Scratch {
            dir,
            calls: Arc::default(),
        }
    }

    fn sysctl(&self) -> PathBuf {
        self.dir.path().join("ip_forward")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A manager over a fake backend on these files, as a new run of the agent would make it.
    fn manager(&self, refuse: bool) -> NatManager {
        let backend = FakeBackend {
            sysctl: self.sysctl(),
            calls: Arc::clone(&self.calls),
            refuse,
        };
        let forwarding = Forwarding::at(self.sysctl(), Some(self.state()));
        NatManager::with_backend(Box::new(backend), forwarding)
    }

    /// A manager as [`Scratch::manager`] makes it (one that accepts rules), after it has applied
    /// the sample gateway.
    fn applied(&self) -> NatManager {
        let mut m = self.manager(false);
        m.apply_policy(&gateway()).unwrap();
        m
    }

    fn forwarding(&self) -> String {
        read(&self.sysctl())
    }

    fn calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap().trim().to_owned()
}

fn gateway() -> NatPolicy {
    NatPolicy::sample()
}

fn apply(forwarding: &str, others: OtherForwarding) -> Call {
    Call::Apply {
        forwarding: forwarding.into(),
        others,
    }
}

fn reset(forwarding: &str) -> Call {
    Call::Reset {
        forwarding: forwarding.into(),
    }
}

#[test]
fn rules_go_in_before_forwarding_is_turned_on_and_drop_other_forwarding() {
    let s = Scratch::new("order", "0\n");
    s.applied();
    assert_eq!(s.calls(), [apply("0", OtherForwarding::Dropped)]);
    assert_eq!(s.forwarding(), "1");
    assert_eq!(read(&s.state()), "0", "the value before us is kept");
}

#[test]
fn a_host_that_forwarded_keeps_its_other_forwarding() {
    let s = Scratch::new("forwarded", "1\n");
    let mut m = s.applied();
    assert_eq!(s.calls(), [apply("1", OtherForwarding::Untouched)]);
    m.reset_policy().unwrap();
    assert_eq!(s.calls(), [reset("1")]);
    assert_eq!(s.forwarding(), "1");
}

#[test]
fn refused_rules_leave_forwarding_off_and_say_so() {
    let s = Scratch::new("refused", "0\n");
    let mut m = s.manager(true);
    let err = m.apply_policy(&gateway()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the fake rules could not be put in place, so IPv4 forwarding was left as it was (off); \
         the rules applied before, if any, stay in force"
    );
    assert_eq!(s.forwarding(), "0");
    assert!(!s.state().exists(), "no state file for a change never made");
}

#[test]
fn refused_rules_after_a_good_apply_leave_forwarding_on_with_the_old_rules() {
    let s = Scratch::new("reapply", "0\n");
    drop(s.applied()); // a crash: nothing reset, forwarding on, rules in the kernel
    let mut refusing = s.manager(true);
    let err = refusing.apply_policy(&gateway()).unwrap_err();
    assert!(err.to_string().contains("(on)"), "{err}");
    assert_eq!(s.forwarding(), "1");
    // The refused run still knows the host did not forward: its rules would drop the rest.
    assert_eq!(
        s.calls(),
        [
            apply("0", OtherForwarding::Dropped),
            apply("1", OtherForwarding::Dropped)
        ]
    );
    assert_eq!(read(&s.state()), "0");
}

#[test]
fn reset_restores_forwarding_before_it_removes_the_rules() {
    let s = Scratch::new("reset", "0\n");
    let mut m = s.applied();
    s.calls();
    m.reset_policy().unwrap();
    assert_eq!(s.calls(), [reset("0")]);
    assert_eq!(s.forwarding(), "0");
    assert!(!s.state().exists());
}

#[test]
fn the_rules_stay_when_forwarding_cannot_be_restored() {
    let s = Scratch::new("stuck", "0\n");
    let mut m = s.applied();
    s.calls();
    fs::write(s.sysctl(), "7\n").unwrap(); // the sysctl can no longer be read as a value
    let err = m.reset_policy().unwrap_err();
    assert!(
        err.to_string().starts_with(
            "IPv4 forwarding could not be put back as it was, so the fake rules were left in place"
        ),
        "{err}"
    );
    assert_eq!(s.calls(), [], "no rule was removed");
}

#[test]
fn a_run_after_a_crash_still_drops_other_forwarding_and_restores_off() {
    let s = Scratch::new("crash", "0\n");
    drop(s.applied()); // kill -9: forwarding stays on, the state file says it was off
    assert_eq!(s.forwarding(), "1");
    let mut second = s.applied();
    second.reset_policy().unwrap();
    assert_eq!(
        s.calls(),
        [
            apply("0", OtherForwarding::Dropped),
            apply("1", OtherForwarding::Dropped),
            reset("0"),
        ]
    );
    assert_eq!(s.forwarding(), "0");
}

#[test]
fn a_policy_that_forwards_nothing_restores_forwarding_first() {
    let s = Scratch::new("host-only", "0\n");
    let mut m = s.applied();
    let mut host_only = gateway();
    host_only.snat.clear();
    host_only.grants.clear();
    host_only.host = Some(HostFilter::default());
    m.apply_policy(&host_only).unwrap();
    assert_eq!(
        s.calls(),
        [
            apply("0", OtherForwarding::Dropped),
            apply("0", OtherForwarding::Untouched)
        ]
    );
    assert_eq!(s.forwarding(), "0");
}

#[test]
fn an_external_data_plane_with_iptables_is_refused_before_forwarding_goes_on() {
    // Issue 9, finding 2: the iptables backend cannot build the host filter, so this apply is
    // always refused; it used to leave forwarding on with no filter at all. The refusal comes
    // before iptables is run, so the real backend is used here.
    let s = Scratch::new("external-iptables", "0\n");
    let forwarding = Forwarding::at(s.sysctl(), Some(s.state()));
    let mut m =
        NatManager::with_backend(Box::new(IptablesBackend::new(Flavor::Legacy)), forwarding);
    let mut policy = gateway();
    policy.host = Some(HostFilter::default());
    let err = m.apply_policy(&policy).unwrap_err();
    assert!(matches!(err, Error::RulesNotApplied { .. }), "{err}");
    assert!(err.to_string().contains("left as it was (off)"), "{err}");
    assert_eq!(s.forwarding(), "0");
}
