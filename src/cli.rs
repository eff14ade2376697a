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
    /// Create API keys and hash them. Only `keys new` ever shows a key, once.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Sign a request for an `hmac` route (RFC 9421, hmac-sha256) and print the headers to
    /// send with it: `Content-Digest` (with a body), `Signature-Input`, `Signature`.
    Sign(SignArgs),
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

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Generate a key for a consumer: print it once, with the consumers-file entry to add.
    New {
        #[arg(long)]
        consumer: String,
        #[arg(long, value_enum, default_value = "live")]
        env: KeyEnv,
        /// Lifetime, e.g. `90d`; the entry gets an `expires` date.
        #[arg(long)]
        expires: Option<humantime::Duration>,
        /// Add the entry to this consumers file (the consumer is created if missing). The file
        /// is rewritten, so comments in it are lost.
        #[arg(long)]
        write: Option<PathBuf>,
        /// The gateway's pepper file, when `api_keys.pepper_file` is configured.
        #[arg(long)]
        pepper_file: Option<PathBuf>,
    },
    /// Read a key from standard input and print its stored form (`sha256:...`).
    Hash {
        #[arg(long)]
        pepper_file: Option<PathBuf>,
    },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum KeyEnv {
    Live,
    Test,
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
        Some(Command::Sign(req)) => match sign(&req) {
            Ok(lines) => {
                print!("{lines}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Some(Command::Keys { command }) => match keys(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
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

fn keys(command: KeysCommand) -> Result<(), String> {
    use crate::auth::api_key::{generate, Environment};
    match command {
        KeysCommand::Hash { pepper_file } => {
            let mut key = String::new();
            std::io::stdin()
                .read_line(&mut key)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            let key = key.trim();
            if crate::auth::api_key::parse(key).is_none() {
                return Err("that is not a Portcullis key (ptc_<env>_<id>_<secret>)".into());
            }
            println!(
                "{}",
                crate::auth::api_key::Hasher::from_pepper_file(pepper_file.as_deref())?
                    .stored_form(key)
            );
            Ok(())
        }
        KeysCommand::New {
            consumer,
            env,
            expires,
            write,
            pepper_file,
        } => {
            let environment = match env {
                KeyEnv::Live => Environment::Live,
                KeyEnv::Test => Environment::Test,
            };
            let (key, id) = generate(environment)?;
            let now = std::time::SystemTime::now();
            let date = |t: std::time::SystemTime| {
                humantime::format_rfc3339_seconds(t).to_string()[..10].to_string()
            };
            let mut entry = serde_yaml::Mapping::new();
            entry.insert("id".into(), id.clone().into());
            entry.insert(
                "hash".into(),
                crate::auth::api_key::Hasher::from_pepper_file(pepper_file.as_deref())?
                    .stored_form(&key)
                    .into(),
            );
            entry.insert("created".into(), date(now).into());
            if let Some(d) = expires {
                entry.insert("expires".into(), date(now + *d).into());
            }
            let entry = serde_yaml::Value::Mapping(entry);
            match write {
                Some(path) => {
                    add_key_to_file(&path, &consumer, entry)?;
                    eprintln!(
                        "added key {id} of consumer {consumer} to {}",
                        path.display()
                    );
                }
                None => {
                    let yaml = serde_yaml::to_string(&vec![entry])
                        .map_err(|e| format!("cannot format the entry: {e}"))?;
                    eprintln!("add to consumer {consumer}'s `keys` in the consumers file:");
                    eprintln!("{yaml}");
                }
            }
            eprintln!("the key (shown once, store it now):");
            println!("{key}");
            Ok(())
        }
    }
}

/// Add `entry` to `consumer`'s keys in a consumers file, creating the consumer if missing.
fn add_key_to_file(
    path: &std::path::Path,
    consumer: &str,
    entry: serde_yaml::Value,
) -> Result<(), String> {
    use serde_yaml::Value;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut doc: Value = if text.trim().is_empty() {
        Value::Mapping(Default::default())
    } else {
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    };
    let root = doc
        .as_mapping_mut()
        .ok_or("the consumers file is not a mapping")?;
    let list = root
        .entry("consumers".into())
        .or_insert_with(|| Value::Sequence(Vec::new()))
        .as_sequence_mut()
        .ok_or("`consumers` is not a list")?;
    let existing = list
        .iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(consumer));
    match existing {
        Some(c) => {
            let c = c.as_mapping_mut().ok_or("a consumer is not a mapping")?;
            c.entry("keys".into())
                .or_insert_with(|| Value::Sequence(Vec::new()))
                .as_sequence_mut()
                .ok_or("`keys` is not a list")?
                .push(entry);
        }
        None => {
            let mut c = serde_yaml::Mapping::new();
            c.insert("name".into(), consumer.into());
            c.insert("keys".into(), Value::Sequence(vec![entry]));
            list.push(Value::Mapping(c));
        }
    }
    let out = serde_yaml::to_string(&doc).map_err(|e| format!("cannot write YAML: {e}"))?;
    // Write beside and rename, so a gateway reloading the file never reads half of it.
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, out).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The key id (`keyid`).
    #[arg(long)]
    pub key_id: String,
    /// A file holding the key's secret as the signing keys file writes it (`base64:...`).
    #[arg(long, conflicts_with = "keys_file")]
    pub secret_file: Option<PathBuf>,
    /// The gateway's signing keys file: use the secret of `--key-id` from it.
    #[arg(long)]
    pub keys_file: Option<PathBuf>,
    #[arg(short = 'X', long, default_value = "GET")]
    pub method: String,
    /// A request header, `Name: value` (repeatable); needed when a signed component names it.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The body: the exact bytes of this file (`-` for standard input).
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Components to cover, comma-separated (default: `@method,@authority,@path,@query`,
    /// and `content-digest` with a body).
    #[arg(long, value_delimiter = ',')]
    pub components: Vec<String>,
    /// Print this many signatures, each with its own nonce, one per line with the headers
    /// separated by tabs (for load tests).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// `https://host[:port]/path?query`, with the path in the gateway's canonical form.
    pub url: String,
}

/// `portcullis sign`: the signature headers for one request (or `count` of them).
fn sign(a: &SignArgs) -> Result<String, String> {
    use crate::auth::http_sig;
    let secret = match (&a.secret_file, &a.keys_file) {
        (Some(f), None) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            http_sig::decode_secret(&text)
                .map_err(|p| format!("{}: the secret {p}", f.display()))?
        }
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            let ring = http_sig::SigningKeyring::parse(&text, &|_| true)
                .map_err(|p| format!("{}: {}", f.display(), p.join("; ")))?;
            ring.secret(&a.key_id)
                .ok_or_else(|| format!("{} has no key \"{}\"", f.display(), a.key_id))?
                .to_vec()
        }
        _ => return Err("give --secret-file or --keys-file".into()),
    };
    let url = url::Url::parse(&a.url).map_err(|e| format!("{}: {e}", a.url))?;
    let host = url.host_str().ok_or("the URL has no host")?;
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let mut headers = http::HeaderMap::new();
    for h in &a.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("\"{h}\" is not `Name: value`"))?;
        headers.append(
            http::HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("\"{name}\" is not a header name"))?,
            http::HeaderValue::from_str(value.trim())
                .map_err(|_| format!("the value of {name} is not a header value"))?,
        );
    }
    let body = match &a.body_file {
        None => Vec::new(),
        Some(p) if p.as_os_str() == "-" => {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            b
        }
        Some(p) => std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
    };
    let components = if a.components.is_empty() {
        http_sig::SignatureRules::default().components
    } else {
        a.components.clone()
    };
    let request = http_sig::SignedRequest {
        method: &a.method,
        scheme: url.scheme(),
        authority: &authority,
        path: url.path(),
        query: url.query(),
        headers: &headers,
        body: &body,
    };
    let created = crate::unix_now();
    let mut out = String::new();
    for _ in 0..a.count.max(1) {
        let nonce = http_sig::new_nonce()?;
        let signed = http_sig::sign(
            &request,
            &a.key_id,
            &secret,
            &components,
            created,
            &nonce,
            "sig1",
        )?;
        let fields: Vec<String> = signed
            .iter()
            .map(|(name, value)| format!("{}: {value}", display_name(name)))
            .collect();
        if a.count > 1 {
            out.push_str(&fields.join("\t"));
            out.push('\n');
        } else {
            for f in fields {
                out.push_str(&f);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

fn display_name(name: &str) -> &str {
    match name {
        "content-digest" => "Content-Digest",
        "signature-input" => "Signature-Input",
        "signature" => "Signature",
        other => other,
    }
}
