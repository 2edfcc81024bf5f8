//! The `weir` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    weir::cli::main()
}
