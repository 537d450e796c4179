//! The `crossroads` binary: see [`crossroads::cli`].

fn main() -> std::process::ExitCode {
    crossroads::cli::main()
}
