use std::process::ExitCode;

use clap::Parser;

// Small, short-lived allocations (heads, header values, futures) dominate the proxy path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match authgate::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage_error = e.use_stderr();
            let _ = e.print();
            return if usage_error {
                ExitCode::from(authgate::cli::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    authgate::cli::run(cli)
}
