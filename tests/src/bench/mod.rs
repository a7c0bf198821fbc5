//! The registry of benchmarks that need namespaces (`cargo xtask bench NAME`). A module with
//! one benchmark names it in its `BENCH`; add the module here.

use crate::Bench;

mod control;
mod dataplane;
mod failover;
mod hostplumbing;
mod idle;
mod peers;
mod portal;
mod routes;
mod stats;

/// Every namespace benchmark, in the order `cargo xtask bench list` shows them.
pub fn all() -> Vec<Bench> {
    vec![
        dataplane::BENCH,
        hostplumbing::BENCH,
        routes::BENCH,
        failover::BENCH,
        control::BENCH,
        idle::BENCH,
        peers::BENCH,
        portal::BENCH,
    ]
}

/// Systems the control server and portal benches run with unless `ENCLAVE_BENCH_SYSTEMS`
/// says otherwise: the size the control server is built for.
const SYSTEMS: usize = 10_000;

/// The number of systems a bench runs with: `ENCLAVE_BENCH_SYSTEMS` when set, else
/// [`SYSTEMS`]. A value that is not a number, or is below `minimum` (the fewest the bench's
/// checks make sense with), is an error that says so.
fn systems(minimum: usize) -> anyhow::Result<usize> {
    systems_from(std::env::var(SYSTEMS_VAR).ok().as_deref(), SYSTEMS, minimum)
}

const SYSTEMS_VAR: &str = "ENCLAVE_BENCH_SYSTEMS";

/// [`systems`] with the variable's value given.
fn systems_from(value: Option<&str>, default: usize, minimum: usize) -> anyhow::Result<usize> {
    let Some(text) = value else {
        return Ok(default);
    };
    let n: usize = text
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{SYSTEMS_VAR}={text:?} is not a number of systems"))?;
    anyhow::ensure!(
        n >= minimum,
        "{SYSTEMS_VAR}={n}: this bench needs at least {minimum} systems"
    );
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::systems_from;

    #[test]
    fn bench_systems_from_the_environment() {
        assert_eq!(systems_from(None, 10_000, 200).unwrap(), 10_000);
        assert_eq!(systems_from(Some("200"), 10_000, 200).unwrap(), 200);
        let few = systems_from(Some("199"), 10_000, 200).unwrap_err();
        assert!(few.to_string().contains("at least 200"), "{few}");
        let word = systems_from(Some("many"), 10_000, 200).unwrap_err();
        assert!(word.to_string().contains("not a number"), "{word}");
    }
}
