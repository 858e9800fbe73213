//! `flowcraft-azure inspect`: prints a validated blueprint's shape (start and terminal nodes,
//! joins, fallbacks, loops), or with `--mermaid` only its Mermaid diagram.

use super::validate;
use crate::flow::blueprint::{Blueprint, JoinStrategy, quote};
use crate::flow::expr::EvaluatorKind;
use crate::flow::graph::LOOP_CONTROLLER;
use crate::flow::mermaid::to_mermaid;
use std::path::PathBuf;

/// Arguments of `inspect`.
#[derive(Debug, clap::Args)]
#[command(
    override_usage = "flowcraft-azure inspect <BLUEPRINT.json> [--mermaid] [--evaluator property|safe] [--allow-cycles]"
)]
pub struct Args {
    /// The blueprint JSON file.
    #[arg(value_name = "BLUEPRINT.json")]
    pub blueprint: PathBuf,
    /// Print only the Mermaid flowchart.
    #[arg(long)]
    pub mermaid: bool,
    /// Expression language; default property; metadata.evaluator wins.
    #[arg(long, value_name = "property|safe")]
    pub evaluator: Option<EvaluatorKind>,
    /// Accept cycles that do not pass through a loop-controller.
    #[arg(long)]
    pub allow_cycles: bool,
}

/// Runs the subcommand and returns the process exit code.
pub fn execute(args: Args) -> u8 {
    let opts = validate::options(args.evaluator, args.allow_cycles);
    match validate::load(&args.blueprint, &opts) {
        Ok(bp) => {
            if args.mermaid {
                print!("{}", to_mermaid(&bp));
            } else {
                print!("{}", summary(&bp));
            }
            super::EXIT_OK
        }
        Err(message) => {
            eprintln!("error: {message}");
            super::EXIT_BAD_INPUT
        }
    }
}

/// The human-readable summary; node ids are quoted as JSON strings so any id prints safely.
pub fn summary(bp: &Blueprint) -> String {
    let list = |ids: &[String]| {
        if ids.is_empty() {
            "none".to_owned()
        } else {
            ids.iter()
                .map(|id| quote(id))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let version = bp
        .version()
        .map_or_else(String::new, |v| format!("version {}, ", quote(v)));
    let mut joins = Vec::new();
    let mut fallbacks = Vec::new();
    let mut loops = Vec::new();
    for node in bp.nodes() {
        let preds: Vec<String> = bp
            .join_sources(&node.id)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let strategy = bp.join_strategy(&node.id);
        if preds.len() > 1 || strategy == JoinStrategy::Any {
            let rule = match strategy {
                JoinStrategy::All => "all",
                JoinStrategy::Any => "any",
            };
            joins.push(format!("{} ({rule} of {})", quote(&node.id), list(&preds)));
        }
        if let Some(fallback) = &node.config.fallback {
            fallbacks.push(format!("{} -> {}", quote(&node.id), quote(fallback)));
        }
        if node.uses == LOOP_CONTROLLER {
            loops.push(format!(
                "{} (body: {})",
                quote(&node.id),
                list(bp.loop_body(&node.id))
            ));
        }
    }
    let lines = |items: Vec<String>| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join("; ")
        }
    };
    format!(
        "blueprint {} ({version}evaluator {})\n\
         nodes: {}, edges: {}, {}\n\
         start nodes: {}\n\
         terminal nodes: {}\n\
         joins: {}\n\
         fallbacks: {}\n\
         loops: {}\n",
        quote(bp.id()),
        bp.evaluator(),
        bp.nodes().len(),
        bp.edges().len(),
        if bp.is_dag() { "acyclic" } else { "cyclic" },
        list(bp.start_nodes()),
        list(bp.terminal_nodes()),
        lines(joins),
        lines(fallbacks),
        lines(loops),
    )
}
