//! Logging for the binaries: `-v 0..5` picks how much is printed.
//!
//! 0 errors, 1 warnings, 2 what the agent does (the default), 3 details, 4 the protocol's
//! events, 5 every packet's decision (the data plane's per-packet TRACE events).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber for `verbosity` (0–5). `RUST_LOG`, when set, wins.
pub fn init(verbosity: u8) {
    let directives = match verbosity {
        0 => "error",
        1 => "warn",
        2 => "info",
        3 => "info,enclave_runtime=debug,enclave_dataplane=debug,enclave_nat=debug,enclave_route=debug",
        4 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    // Colours only on a terminal: journald and log files get plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
