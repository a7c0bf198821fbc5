//! The policy engine from the outside: load the guide's network definition, compile one
//! system's view, and ask why a connection is (not) allowed.
//!
//! ```text
//! cargo run -p enclave-policy --example compile_and_explain
//! ```
//!
//! The engine does no I/O, so this example is the "shell": it reads the file and picks the time,
//! then hands both to the engine as plain values. An agent does the same with its own file and
//! clock.

use std::error::Error;
use std::path::Path;

use enclave_policy::{Protocol, Query, Timestamp, Verdict};

/// The system whose view we compile: a user's laptop in the guide's example.
const SYSTEM: &str = "laptop";

fn main() -> Result<(), Box<dyn Error>> {
    // 1. Read the file. This is I/O, which the engine never does itself, hence the allow
    //    (clippy.toml forbids file access in this crate).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/network.toml");
    #[allow(clippy::disallowed_methods)]
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;

    // 2. Validate. An invalid file gives every error at once, each with line and column.
    let loaded = match enclave_policy::load("docs/examples/network.toml", &text) {
        Ok(loaded) => loaded,
        Err(enclave_policy::Error::Invalid { file, diagnostics }) => {
            for diagnostic in &diagnostics {
                eprintln!("{diagnostic}");
            }
            return Err(format!("{file} is not valid").into());
        }
        Err(other) => return Err(other.into()),
    };
    let network = loaded.network;
    println!(
        "== 1. docs/examples/network.toml is valid: {}, {}",
        enclave_policy::plural(network.systems.len(), "system"),
        enclave_policy::plural(loaded.warnings.len(), "warning")
    );
    for warning in &loaded.warnings {
        println!("  {warning}");
    }

    // 3. Compile one system's view: the peers it talks to, what each may send it, its routes.
    //    An agent turns this value into WireGuard peers, filter rules and routes.
    let view = enclave_policy::compile(&network, SYSTEM)?;
    println!("\n== 2. The view of {SYSTEM:?} (what its agent would configure)\n");
    println!("{view}");

    // 4. Explain decisions. The time is an argument: the office policy has active hours
    //    (weekdays 07:00-19:00 in Menlo Park), so the same question can get two answers.
    let workday: Timestamp = "2026-11-25T18:00:00Z".parse()?; // Wednesday 10:00 in Menlo Park
    let weekend: Timestamp = "2026-11-28T18:00:00Z".parse()?; // Saturday 10:00 in Menlo Park
                                                              // Each question with the answer this example expects (it exits with an error otherwise,
                                                              // so that CI notices when the engine or the guide's file drift).
    let questions = [
        (
            "SMB to a domain controller on a workday",
            445,
            workday,
            Verdict::Allowed,
        ),
        ("the same on a Saturday", 445, weekend, Verdict::Denied),
        (
            "HTTP to the same host, a port no policy grants",
            80,
            workday,
            Verdict::Denied,
        ),
    ];
    println!("== 3. Would {SYSTEM:?} reach 192.168.77.20 (a domain controller)?");
    for (title, port, at, expected) in questions {
        let answer = enclave_policy::explain(
            &network,
            &Query {
                from: SYSTEM.to_owned(),
                to: "192.168.77.20".parse()?,
                protocol: Some(Protocol::Tcp),
                port: Some(port),
                // The public address the sender connects from; trust requirements judge it.
                public_ip: Some("198.51.100.7".parse()?),
                at,
            },
        )?;
        // The explanation ends with a newline of its own.
        print!("\n-- {title} ({at}):\n{answer}");
        if answer.verdict != expected {
            return Err(format!(
                "{title}: expected {expected:?}, the engine says {:?}",
                answer.verdict
            )
            .into());
        }
    }
    Ok(())
}
