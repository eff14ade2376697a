//! The command line: `run` (the default), `check` and `echo`.

use crate::config;
use crate::gateway::{self, RunFlags};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

pub const DEFAULT_CONFIG: &str = "/etc/portcullis/portcullis.yaml";

#[derive(Parser, Debug)]
#[command(
    name = "portcullis",
    version,
    about = "An edge API gateway on Pingora",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `portcullis -c FILE` is `portcullis run -c FILE`.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve (the default).
    Run(RunArgs),
    /// Validate a configuration and exit: 0 when valid, 1 listing every problem.
    Check {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        conf: PathBuf,
    },
    /// Run a small origin that answers every request with a JSON description of it.
    Echo {
        #[arg(short, long, default_value = "127.0.0.1:9000")]
        listen: String,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Also append one JSON line per request received to this file.
        #[arg(long)]
        log: Option<PathBuf>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub conf: PathBuf,
    /// Run in the background (needs `server.pid_file`).
    #[arg(short, long)]
    pub daemon: bool,
    /// Graceful upgrade: take over the listening sockets of the running instance.
    #[arg(short, long)]
    pub upgrade: bool,
    /// Test the configuration and exit.
    #[arg(short, long)]
    pub test: bool,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { conf }) => check(&conf),
        Some(Command::Echo {
            listen,
            threads,
            log,
        }) => {
            init_tracing("warn");
            match crate::echo::run(&listen, threads.max(1), log.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
}

fn load_or_report(path: &std::path::Path) -> Option<config::Config> {
    match config::load(path) {
        Ok(c) => Some(c),
        Err(problems) => {
            eprintln!("{}: invalid configuration", path.display());
            for p in &problems.0 {
                eprintln!("  {p}");
            }
            None
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match load_or_report(path) {
        Some(c) => {
            println!(
                "{}: configuration OK ({} listener(s), {} upstream(s), {} route(s))",
                path.display(),
                c.listeners.len(),
                c.upstreams.len(),
                c.routes.len()
            );
            ExitCode::SUCCESS
        }
        None => ExitCode::from(1),
    }
}

fn run(args: RunArgs) -> ExitCode {
    if args.test {
        return check(&args.conf);
    }
    let Some(config) = load_or_report(&args.conf) else {
        return ExitCode::from(1);
    };
    init_tracing("info");
    let flags = RunFlags {
        daemon: args.daemon,
        upgrade: args.upgrade,
    };
    match gateway::build_server(&config, flags) {
        Ok(server) => {
            tracing::info!(
                config = %args.conf.display(),
                listeners = ?config.listeners.iter().map(|l| l.address).collect::<Vec<_>>(),
                admin = %config.admin_address,
                "portcullis starting"
            );
            server.run_forever()
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
