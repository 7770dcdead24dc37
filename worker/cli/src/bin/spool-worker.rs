//! `spool-worker`: runs Spool workers. A supervisor process with prefork
//! children; see `spool-worker --help` and the `spool_worker_cli::supervisor`
//! module for the model.

// mimalloc, as every Spool binary (see `spool_cli_common::Allocator`).
#[global_allocator]
static ALLOCATOR: spool_cli_common::Allocator = spool_cli_common::Allocator;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: spool_worker_cli::cli::Args = spool_cli_common::parse_args();
    let invocation = match args.resolve() {
        Ok(invocation) => invocation,
        Err(e) => {
            eprintln!("spool-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = invocation.settings();
    // Held to the end: dropping it sends the spans still batched.
    let _telemetry = spool_worker_cli::cli::init_logging(settings.log_format, &settings.log_level);
    match spool_worker_cli::supervisor::run(invocation) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("spool-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
