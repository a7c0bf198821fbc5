//! What a scenario gets from the runner.

use std::path::{Path, PathBuf};

use enclave_netns::{Topology, TopologySpec};

/// The context of one scenario run.
#[derive(Debug)]
pub struct Ctx {
    name: String,
    log_dir: PathBuf,
    bin_dir: PathBuf,
}

impl Ctx {
    /// A context for scenario `name`, whose logs go to `log_dir`; the project's binaries are
    /// looked up in `bin_dir`.
    pub fn new(name: &str, log_dir: PathBuf, bin_dir: PathBuf) -> Self {
        Self {
            name: name.to_owned(),
            log_dir,
            bin_dir,
        }
    }

    /// The scenario's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where this scenario's process logs go; the runner shows them when it fails.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Builds `spec`, with process logs in this scenario's log directory.
    pub fn topology(&self, spec: &TopologySpec) -> anyhow::Result<Topology> {
        Ok(spec.build(&self.log_dir)?)
    }

    /// The path of one of the project's binaries (`enclave-agent`, `enclave-gw`), built by
    /// `cargo xtask netns-test` before the scenarios run.
    pub fn bin(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.bin_dir.join(name);
        anyhow::ensure!(
            path.is_file(),
            "{} is not built; run the scenarios through `cargo xtask netns-test`",
            path.display()
        );
        Ok(path)
    }
}
