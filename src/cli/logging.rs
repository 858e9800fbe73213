//! Log output for the commands: `tracing` events go to stderr, at the level named by
//! `RUST_LOG` (`error`, `warn`, `info`, `debug` or `trace`), else at the command's default
//! raised by `-v` flags.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, Ordering};
use tracing::Level;

static VERBOSITY: AtomicU8 = AtomicU8::new(0);

/// Records how many `-v` flags were given (read by [`init`]).
pub fn set_verbosity(count: u8) {
    VERBOSITY.store(count, Ordering::Relaxed);
}

/// `default` raised by `verbosity` steps (`-v` info, `-vv` debug, `-vvv` trace).
fn raised(default: Level, verbosity: u8) -> Level {
    let wanted = match verbosity {
        0 => return default,
        1 => Level::INFO,
        2 => Level::DEBUG,
        _ => Level::TRACE,
    };
    // In `tracing`, a more verbose level compares greater.
    default.max(wanted)
}

/// Installs the stderr subscriber once; later calls do nothing.
pub fn init(default: Level) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<Level>().ok())
        .unwrap_or_else(|| raised(default, VERBOSITY.load(Ordering::Relaxed)));
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v_flags_only_raise_the_level() {
        assert_eq!(raised(Level::WARN, 0), Level::WARN);
        assert_eq!(raised(Level::WARN, 2), Level::DEBUG);
        assert_eq!(raised(Level::INFO, 1), Level::INFO);
        assert_eq!(raised(Level::WARN, 9), Level::TRACE);
    }
}
