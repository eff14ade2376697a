//! The command line: `run` (the default), `check`, `explain`, `stdio`, `keys`, `sign`,
//! `token` and `echo`. The tools live beside this file; none of them touches the Pingora glue
//! (`gateway`): serving is handed back to `main` as `Action::Serve`.

pub mod explain;
pub mod keys;
pub mod sign;
pub mod stdio;
pub mod summary;
pub mod token;

use crate::app::App;
use crate::config;
use clap::{Args, Parser, Subcommand};
use keys::KeysCommand;
use sign::SignArgs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use token::TokenArgs;

pub const DEFAULT_CONFIG: &str = "/etc/portcullis/portcullis.yaml";

/// `portcullis --version`: ours, and the Pingora this binary was built with (read from
/// Cargo.lock by build.rs), since most of the proxy's behaviour is Pingora's.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (pingora ",
    env!("PORTCULLIS_PINGORA_VERSION"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "portcullis",
    version = VERSION,
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
        /// The TLS server name the client connected for, as on an mTLS listener (where the
        /// `Host` must name it).
        #[arg(long)]
        sni: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        method: String,
        /// `/path?query` or `http://host/path?query`.
        url: String,
    },
    /// Answer the JSON-lines decision protocol on stdin/stdout (see `src/cli/stdio.rs`).
    Stdio {
        /// Take providers, routes and policies from this configuration instead of `init`.
        #[arg(short, long)]
        conf: Option<PathBuf>,
    },
    /// Create API keys and hash them. Only `keys new` ever shows a key, once.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Sign a request for an `hmac` route (RFC 9421, hmac-sha256) and print the headers to
    /// send with it: `Content-Digest` (with a body), `Signature-Input`, `Signature`.
    Sign(SignArgs),
    /// Mint a JWT for DEVELOPMENT and tests only (never production), signed with the key you
    /// name and printed on stdout.
    Token(TokenArgs),
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

/// What the command line asks for: a server (which `main` starts from `gateway`), or an
/// exit status once a tool has run.
pub enum Action {
    /// The echo origin (`portcullis echo`).
    Echo {
        listen: String,
        threads: usize,
        log: Option<PathBuf>,
    },
    Serve {
        app: Box<App>,
        /// Run in the background.
        daemon: bool,
        /// Take over the listening sockets of the running instance.
        upgrade: bool,
    },
    Exit(ExitCode),
}

/// Parse the command line and run the tool it names; a `run` comes back as `Action::Serve`.
pub fn main() -> Action {
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::Check { conf }) => check(&conf),
        Some(Command::Echo {
            listen,
            threads,
            log,
        }) => {
            init_tracing("warn");
            return Action::Echo {
                listen,
                threads: threads.max(1),
                log,
            };
        }
        Some(Command::Explain {
            conf,
            headers,
            peer,
            sni,
            json,
            method,
            url,
        }) => {
            init_tracing("error");
            let Some(app) = compose_or_report(&conf) else {
                return Action::Exit(ExitCode::from(1));
            };
            let req = explain::Request {
                method,
                url,
                headers,
                peer,
                sni,
            };
            match explain::explain(&app, &req) {
                Ok(v) => {
                    if json {
                        println!("{v:#}");
                    } else {
                        print!("{}", explain::render_text(&v));
                    }
                    let answered = |key: &str| v["decision"][key] == serde_json::json!(true);
                    if answered("forward") || answered("preflight") {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(3)
                    }
                }
                Err(e) => failed(&e, 2),
            }
        }
        Some(Command::Stdio { conf }) => {
            init_tracing("error");
            let source = match conf {
                None => stdio::Source::Key(None),
                Some(path) => {
                    let Some(app) = compose_or_report(&path) else {
                        return Action::Exit(ExitCode::from(1));
                    };
                    match stdio::source_from_app(app) {
                        Ok(s) => s,
                        Err(e) => return Action::Exit(failed(&e, 2)),
                    }
                }
            };
            match stdio::run(source) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failed(&e, 2),
            }
        }
        Some(Command::Sign(req)) => match sign::run(&req) {
            Ok(lines) => {
                print!("{lines}");
                ExitCode::SUCCESS
            }
            Err(e) => failed(&e, 2),
        },
        Some(Command::Token(args)) => match token::run(&args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => failed(&e, 2),
        },
        Some(Command::Keys { command }) => match keys::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed(&e, 1),
        },
        Some(Command::Run(args)) => return run(args),
        None => return run(cli.run),
    };
    Action::Exit(code)
}

/// `-H 'Name: value'` arguments as a header map (repeated names kept, in order).
fn parse_headers(lines: &[String]) -> Result<http::HeaderMap, String> {
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("-H \"{line}\": expected `Name: value`"))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("-H \"{line}\": not a header name"))?;
        let value = http::HeaderValue::from_str(value.trim())
            .map_err(|_| format!("-H \"{line}\": not a header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn failed(e: &dyn std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(code)
}

/// The configuration read, validated and composed; `None` after printing every problem.
fn compose_or_report(path: &Path) -> Option<App> {
    let composed = config::load(path).and_then(App::build);
    match composed {
        Ok(app) => Some(app),
        Err(problems) => {
            eprintln!("{}: invalid configuration", path.display());
            for p in &problems.0 {
                eprintln!("  {p}");
            }
            None
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match compose_or_report(path) {
        Some(app) => {
            println!(
                "{}: configuration OK ({} listener(s), {} upstream(s), {} route(s))",
                path.display(),
                app.listeners.len(),
                app.upstreams.len(),
                app.engine.routes().routes().len()
            );
            print!("{}", summary::render(&app));
            ExitCode::SUCCESS
        }
        None => ExitCode::from(1),
    }
}

fn run(args: RunArgs) -> Action {
    if args.test {
        return Action::Exit(check(&args.conf));
    }
    let Some(app) = compose_or_report(&args.conf) else {
        return Action::Exit(ExitCode::from(1));
    };
    init_tracing("info");
    tracing::info!(
        config = %args.conf.display(),
        listeners = ?app.listeners.iter().map(|l| l.address).collect::<Vec<_>>(),
        admin = %app.admin_address,
        "portcullis starting"
    );
    Action::Serve {
        app: Box::new(app),
        daemon: args.daemon,
        upgrade: args.upgrade,
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
