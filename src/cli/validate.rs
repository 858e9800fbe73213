//! `flowcraft-azure validate`.

/// Arguments of `validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The blueprint JSON file.
    pub blueprint: std::path::PathBuf,
}

/// Runs the subcommand and returns the process exit code.
pub fn execute(_args: Args) -> u8 {
    eprintln!("error: `validate` is not implemented yet");
    super::EXIT_BAD_INPUT
}
