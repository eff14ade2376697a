//! The thin main: the command line (`cli`) runs a tool or says which server to start, and
//! `gateway` starts it. Everything else is in the library.

// A per-thread caching allocator: the proxy allocates and frees many small buffers per
// request, and glibc's malloc showed up as ~15% of CPU in the load test profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    use portcullis::cli::Action;
    match portcullis::cli::main() {
        Action::Exit(code) => code,
        Action::Echo {
            listen,
            threads,
            log,
        } => match portcullis::gateway::echo::run(&listen, threads, log.as_deref()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::from(2)
            }
        },
        Action::Serve {
            app,
            daemon,
            upgrade,
        } => portcullis::gateway::serve(*app, portcullis::gateway::RunFlags { daemon, upgrade }),
    }
}
