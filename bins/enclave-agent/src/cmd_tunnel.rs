//! `enclave-agent tunnel IFACE`: a bare userspace WireGuard interface configured only through
//! the UAPI socket, a drop-in for `wireguard-go -f IFACE`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use enclave_dataplane::{Tunnel, TunnelConfig, DEFAULT_UAPI_DIR};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

#[derive(Debug, clap::Args)]
pub struct TunnelArgs {
    /// The name of the TUN interface to create.
    pub interface: String,
    /// Where to create the UAPI socket `<DIR>/<IFACE>.sock`.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_UAPI_DIR)]
    pub uapi_dir: PathBuf,
    /// Mark the tunnel's UDP packets with this fwmark (0: none).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub fwmark: u32,
    /// The MTU of the interface.
    #[arg(long, default_value_t = enclave_dataplane::DEFAULT_MTU)]
    pub mtu: u16,
    /// Stay in the foreground (the default; accepted for wireguard-go compatibility).
    #[arg(short = 'f', long, conflicts_with = "background")]
    pub foreground: bool,
    /// Start the tunnel as a detached process and return once its UAPI socket answers,
    /// as `wireguard-go IFACE` does (what wg-quick expects).
    #[arg(long)]
    pub background: bool,
}

pub fn run(args: TunnelArgs) -> anyhow::Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    if args.background {
        return background(&args);
    }
    // Block the stop signals before any thread starts, so that only the signalfd sees them.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals
        .thread_block()
        .context("cannot block the stop signals")?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("cannot create a signalfd")?;

    let mut config = TunnelConfig::bare(&args.interface);
    config.uapi_dir = Some(args.uapi_dir.clone());
    config.fwmark = args.fwmark;
    config.mtu = args.mtu;
    let tunnel = Tunnel::start(config)
        .with_context(|| format!("cannot start the tunnel {}", args.interface))?;
    tracing::info!(
        interface = tunnel.interface(),
        uapi = %tunnel.uapi_socket().map(|p| p.display().to_string()).unwrap_or_default(),
        "tunnel up; configure it with wg(8)"
    );
    loop {
        if let Ok(Some(info)) = signal_fd.read_signal() {
            tracing::info!(signal = info.ssi_signo, "stopping");
            break;
        }
        if !tunnel.is_running() {
            tracing::info!("the tunnel stopped (socket removed or interface gone)");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    tunnel.stop().context("the tunnel stopped with an error")?;
    Ok(ExitCode::SUCCESS)
}

/// Re-runs this command detached (own session, output to nowhere) and waits until its UAPI
/// socket accepts connections.
fn background(args: &TunnelArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let socket = args.uapi_dir.join(format!("{}.sock", args.interface));
    let mut child = std::process::Command::new(exe)
        .arg("tunnel")
        .arg(&args.interface)
        .arg("--uapi-dir")
        .arg(&args.uapi_dir)
        .arg("--fwmark")
        .arg(args.fwmark.to_string())
        .arg("--mtu")
        .arg(args.mtu.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the background tunnel")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child
            .try_wait()
            .context("cannot watch the background tunnel")?
        {
            anyhow::bail!(
                "the background tunnel {} exited with {status}; run it with -f to see why",
                args.interface
            );
        }
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!(
        "the background tunnel {} did not open {} within 10 s",
        args.interface,
        socket.display()
    )
}
