//! The `lookmig` binary: everything lives in the library; see `lookmig::cli`.

/// mimalloc: the pipeline allocates and frees millions of small buffers (lines, keys, JSON
/// values) across worker threads; glibc's malloc spent a quarter of the cycles on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lookmig::cli::main()
}
