//! Log output for the commands: `tracing` events go to stderr, at the level named by
//! `RUST_LOG` (`error`, `warn`, `info`, `debug` or `trace`), else at the command's default.

use std::io::IsTerminal;
use tracing::Level;

/// Installs the stderr subscriber once; later calls do nothing.
pub fn init(default: Level) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<Level>().ok())
        .unwrap_or(default);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
