// A per-thread caching allocator: the proxy allocates and frees many small buffers per
// request, and glibc's malloc showed up as ~15% of CPU in the load test profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    use portcullis::cli::Action;
    match portcullis::cli::main() {
        Action::Exit(code) => code,
        Action::Serve {
            app,
            daemon,
            upgrade,
        } => portcullis::gateway::serve(*app, portcullis::gateway::RunFlags { daemon, upgrade }),
    }
}
