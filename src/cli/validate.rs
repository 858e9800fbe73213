//! `flowcraft-azure validate`: loads a blueprint file with full validation and reports the
//! first problem with its JSON path (exit 2), or prints nothing (exit 0).

use crate::flow::blueprint::{Blueprint, LoadOptions};
use crate::flow::expr::EvaluatorKind;
use std::path::{Path, PathBuf};

/// Arguments of `validate`.
#[derive(Debug, clap::Args)]
#[command(
    override_usage = "flowcraft-azure validate <BLUEPRINT.json> [--evaluator property|safe] [--allow-cycles]"
)]
pub struct Args {
    /// The blueprint JSON file.
    #[arg(value_name = "BLUEPRINT.json")]
    pub blueprint: PathBuf,
    /// Expression language; default property; metadata.evaluator wins.
    #[arg(long, value_name = "property|safe")]
    pub evaluator: Option<EvaluatorKind>,
    /// Accept cycles that do not pass through a loop-controller.
    #[arg(long)]
    pub allow_cycles: bool,
}

/// Runs the subcommand and returns the process exit code.
pub fn execute(args: Args) -> u8 {
    match load(&args.blueprint, &options(args.evaluator, args.allow_cycles)) {
        Ok(_) => super::EXIT_OK,
        Err(message) => {
            eprintln!("error: {message}");
            super::EXIT_BAD_INPUT
        }
    }
}

/// Load options from the common command-line flags.
pub fn options(evaluator: Option<EvaluatorKind>, allow_cycles: bool) -> LoadOptions {
    LoadOptions {
        evaluator: evaluator.unwrap_or_default(),
        allow_cycles,
    }
}

/// Reads and validates a blueprint file. The error says which file and, for invalid content,
/// the JSON path and what is wrong (`hello.json: edges[2].condition: ...`).
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Blueprint, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read blueprint file {}: {e}", path.display()))?;
    Blueprint::from_json_with(&text, opts).map_err(|e| format!("{}: {e}", path.display()))
}
