//! The `lookmig` binary: everything lives in the library; see `lookmig::cli`.

fn main() -> std::process::ExitCode {
    lookmig::cli::main()
}
