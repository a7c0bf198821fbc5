//! `enclave-agent keygen` and `enclave-agent pubkey`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use enclave_wg::keys::generate_private_key;
use enclave_wg::PrivateKey;

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private key (mode 0600). It is never overwritten.
    pub private_key_file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct PubkeyArgs {
    /// The private key file.
    pub private_key_file: PathBuf,
}

/// Writes a new private key and prints its public key for the network definition.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    // The key goes into a directory of ours that nobody else may write to (an existing one
    // is judged, never chmod-ed; a missing one is made with mode 0700), as a new file (never
    // through a symbolic link, never over an existing key) created with mode 0600.
    let dir = match args.private_key_file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    enclave_statefile::ensure_private_dir(dir, 0o700)
        .with_context(|| format!("cannot keep a private key in {}", dir.display()))?;
    let key = generate_private_key(rand_core::UnwrapErr(getrandom::SysRng));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&args.private_key_file)
        .with_context(|| {
            format!(
                "cannot create {} (an existing key is never overwritten)",
                args.private_key_file.display()
            )
        })?;
    let text = zeroize::Zeroizing::new(key.to_base64());
    writeln!(file, "{}", text.as_str())
        .with_context(|| format!("cannot write {}", args.private_key_file.display()))?;
    println!("{}", key.public_key().to_base64());
    Ok(ExitCode::SUCCESS)
}

/// Prints the public key of a private key file.
pub fn pubkey(args: PubkeyArgs) -> anyhow::Result<ExitCode> {
    let text = enclave_runtime::config::read_private_key(&args.private_key_file)?;
    let key = enclave_runtime::config::decode_key(&text)
        .map(|bytes| PrivateKey::from_bytes(*bytes))
        .with_context(|| {
            format!(
                "{} does not hold a WireGuard private key (base64 of 32 bytes)",
                args.private_key_file.display()
            )
        })?;
    println!("{}", key.public_key().to_base64());
    Ok(ExitCode::SUCCESS)
}
