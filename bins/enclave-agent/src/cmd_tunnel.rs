//! `enclave-agent tunnel IFACE`: a bare userspace WireGuard interface configured only through
//! the UAPI socket, a drop-in for `wireguard-go -f IFACE`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use enclave_dataplane::DEFAULT_UAPI_DIR;
use enclave_runtime::tunnel::BareTunnel;

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
    enclave_runtime::logging::init(2);
    let tunnel = BareTunnel {
        interface: args.interface,
        uapi_dir: args.uapi_dir,
        fwmark: args.fwmark,
        mtu: args.mtu,
    };
    if args.background {
        let program = std::env::current_exe().context("cannot find this program's path")?;
        tunnel.start_background(&program)?;
    } else {
        tunnel
            .run()
            .with_context(|| format!("the tunnel {} failed", tunnel.interface))?;
    }
    Ok(ExitCode::SUCCESS)
}
