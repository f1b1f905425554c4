//! The `gateway` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    match gateway::cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
