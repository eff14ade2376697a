//! The command line: `run` (the default), `check`, `explain`, `stdio` and `echo`.

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
    /// Show what the gateway would do with one request: canonical path, route, each
    /// credential and requirement checked, the decision, and the exact upstream request.
    /// Exit status 0 when it would be forwarded, 3 when refused.
    Explain {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        conf: PathBuf,
        /// A request header, `Name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The client address the request comes from.
        #[arg(long, default_value = "127.0.0.1")]
        peer: std::net::IpAddr,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        method: String,
        /// `/path?query` or `http://host/path?query`.
        url: String,
    },
    /// Answer the JSON-lines decision protocol on stdin/stdout (see `src/stdio.rs`).
    Stdio {
        /// Take providers, routes and policies from this configuration instead of `init`.
        #[arg(short, long)]
        conf: Option<PathBuf>,
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
        Some(Command::Explain {
            conf,
            headers,
            peer,
            json,
            method,
            url,
        }) => {
            init_tracing("error");
            let Some(config) = load_or_report(&conf) else {
                return ExitCode::from(1);
            };
            let req = crate::explain::Request {
                method,
                url,
                headers,
                peer,
            };
            match crate::explain::explain(&config, &req) {
                Ok(v) => {
                    if json {
                        println!("{v:#}");
                    } else {
                        print!("{}", crate::explain::render_text(&v));
                    }
                    if v["decision"]["forward"] == serde_json::json!(true) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(3)
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::Stdio { conf }) => {
            init_tracing("error");
            let source = match conf {
                None => crate::stdio::Source::Key(None),
                Some(path) => {
                    let Some(config) = load_or_report(&path) else {
                        return ExitCode::from(1);
                    };
                    match crate::stdio::source_from_config(&config) {
                        Ok(s) => s,
                        Err(e) => {
                            eprintln!("error: {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
            };
            match crate::stdio::run(source) {
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
