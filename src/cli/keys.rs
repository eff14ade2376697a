//! `portcullis keys`: generate API keys (shown once) and the digests the consumers file
//! stores, and add a new key's entry to a consumers file.

use clap::Subcommand;
use std::path::PathBuf;

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

/// Run a `portcullis keys` command.
pub fn run(command: KeysCommand) -> Result<(), String> {
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
