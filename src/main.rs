//! The `flowcraft-azure` command; all logic lives in [`flowcraft_azure::cli`].

fn main() -> std::process::ExitCode {
    flowcraft_azure::cli::main()
}
