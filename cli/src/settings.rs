//! Where a flag's value comes from: the command line, else its environment variable, else the
//! config file, else its default.
//!
//! Every flag has an environment variable: the one it declares, or `LABELFLEET_` and its long
//! name in upper snake case (`--task-size` reads `LABELFLEET_TASK_SIZE`). The config file
//! (`--config FILE` or `LABELFLEET_CONFIG`) is TOML: top-level keys are long flag names and
//! apply to whichever command runs; a table named after a command (`[worker]`) applies to that
//! command only and wins over the top level. A key that is not a flag of the command is an
//! error naming the key, so a typo never passes silently. Lists are written as arrays.

use anyhow::{bail, Context, Result};
use clap::{Arg, Command};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The config file's variable (the `--config` flag wins over it).
pub const CONFIG_ENV: &str = "LABELFLEET_CONFIG";

/// The variable of a flag that declares none.
pub fn env_name(long: &str) -> String {
    format!("LABELFLEET_{}", long.replace('-', "_").to_uppercase())
}

/// Flags that never come from the environment or a file.
fn is_meta_flag(arg: &Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version" | "config")
}

/// `cmd` with a variable on every flag of every subcommand that declares none.
pub fn with_env(cmd: Command) -> Command {
    cmd.mut_args(|arg| match (arg.get_long(), arg.get_env()) {
        (Some(long), None) if !arg.is_positional() && !is_meta_flag(&arg) => {
            let name = env_name(long);
            arg.env(name)
        }
        _ => arg,
    })
    .mut_subcommands(with_env)
}

/// The config file named by `--config` (or `--config=`) in `args`, else by `LABELFLEET_CONFIG`.
pub fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os(CONFIG_ENV).map(PathBuf::from)
}

/// The subcommand `args` runs (the first argument that names one).
fn invoked<'c>(cmd: &'c Command, args: &[OsString]) -> Option<&'c Command> {
    args.iter()
        .skip(1)
        .find_map(|a| cmd.find_subcommand(a.to_string_lossy().as_ref()))
}

/// Reads the config file and sets, for each of its keys, the variable of that flag of the
/// invoked command, unless the variable is already set (the environment wins over the file).
/// Call before any thread starts: it writes the process environment.
pub fn apply_config_file(cmd: &Command, args: &[OsString], path: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("config file {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
    let sub = invoked(cmd, args);
    let values = flatten_config(&table, sub.map(|s| s.get_name()), cmd)?;
    for (key, value) in values {
        let arg = find_flag(cmd, sub, &key).with_context(|| {
            let command = sub.map_or("labelfleet".to_string(), |s| {
                format!("labelfleet {}", s.get_name())
            });
            format!(
                "config file {}: `{key}` is not a flag of `{command}`",
                path.display()
            )
        })?;
        let env = arg
            .get_env()
            .expect("with_env gave every flag a variable")
            .to_os_string();
        if std::env::var_os(&env).is_none() {
            let text = value_text(&key, &value, arg)
                .with_context(|| format!("config file {}", path.display()))?;
            std::env::set_var(&env, text);
        }
    }
    Ok(())
}

/// The top-level keys, overridden by those of the invoked command's table. Tables of other
/// commands are skipped; a table that names no command is an error.
fn flatten_config(
    table: &toml::Table,
    command: Option<&str>,
    cmd: &Command,
) -> Result<BTreeMap<String, toml::Value>> {
    let mut out = BTreeMap::new();
    for (key, value) in table {
        if !value.is_table() {
            out.insert(key.clone(), value.clone());
        } else if cmd.find_subcommand(key).is_none() {
            bail!("`[{key}]` is not a labelfleet command");
        }
    }
    if let Some(own) = command
        .and_then(|c| table.get(c))
        .and_then(|t| t.as_table())
    {
        for (key, value) in own {
            out.insert(key.clone(), value.clone());
        }
    }
    Ok(out)
}

fn find_flag<'c>(cmd: &'c Command, sub: Option<&'c Command>, long: &str) -> Option<&'c Arg> {
    sub.into_iter()
        .flat_map(|s| s.get_arguments())
        .chain(cmd.get_arguments())
        .find(|a| a.get_long() == Some(long) && !is_meta_flag(a))
}

/// A config value as its variable's text: lists joined with the flag's delimiter.
fn value_text(key: &str, value: &toml::Value, arg: &Arg) -> Result<String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) => {
            let Some(delimiter) = arg.get_value_delimiter() else {
                if items.len() == 1 {
                    return value_text(key, &items[0], arg);
                }
                bail!("`{key}` takes one value, not a list");
            };
            let parts: Result<Vec<String>> =
                items.iter().map(|v| value_text(key, v, arg)).collect();
            Ok(parts?.join(&delimiter.to_string()))
        }
        other => bail!("`{key}`: a {} cannot be a flag's value", other.type_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Variables labelfleet reads that are not flags: no flag may take these names.
    const RESERVED_ENV: &[&str] = &[
        "LABELFLEET_HOME",
        "LABELFLEET_DATA",
        "LABELFLEET_PROGRESS_INTERVAL",
        CONFIG_ENV,
    ];

    /// Every flag of every command has a variable, no two flags of a command share one, and
    /// none takes a name labelfleet reads for something else.
    #[test]
    fn every_flag_has_its_own_variable() {
        let cmd = with_env(<crate::Cli as clap::CommandFactory>::command());
        let mut checked = 0;
        for sub in cmd.get_subcommands() {
            let mut seen: BTreeMap<String, String> = BTreeMap::new();
            for arg in sub.get_arguments().chain(cmd.get_arguments()) {
                if arg.is_positional() || is_meta_flag(arg) {
                    continue;
                }
                let env = arg
                    .get_env()
                    .unwrap_or_else(|| {
                        panic!("{} --{:?}: no variable", sub.get_name(), arg.get_long())
                    })
                    .to_string_lossy()
                    .into_owned();
                assert!(
                    !RESERVED_ENV.contains(&env.as_str()),
                    "{} {}: {env} is reserved",
                    sub.get_name(),
                    arg.get_id()
                );
                if let Some(other) = seen.insert(env.clone(), arg.get_id().to_string()) {
                    panic!(
                        "{}: {env} is the variable of both {other} and {}",
                        sub.get_name(),
                        arg.get_id()
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > 200, "{checked} flags checked");
    }

    #[test]
    fn config_tables_override_the_top_level_and_typos_are_refused() {
        let cmd = with_env(<crate::Cli as clap::CommandFactory>::command());
        let table: toml::Table = toml::from_str(
            "threads = 2\ncapacity = 3\n[worker]\ncapacity = 5\nwarm-model = [\"minilm\", \"smollm2\"]\n[serve]\nworkers = 4\n",
        )
        .unwrap();
        let values = flatten_config(&table, Some("worker"), &cmd).unwrap();
        assert_eq!(values["capacity"].as_integer(), Some(5));
        assert_eq!(values["threads"].as_integer(), Some(2));
        assert!(!values.contains_key("workers"));
        let worker = cmd.find_subcommand("worker").unwrap();
        let warm = find_flag(&cmd, Some(worker), "warm-model").unwrap();
        assert_eq!(
            value_text("warm-model", &values["warm-model"], warm).unwrap(),
            "minilm,smollm2"
        );
        let bad: toml::Table = toml::from_str("[wroker]\ncapacity = 1\n").unwrap();
        let err = flatten_config(&bad, Some("worker"), &cmd).unwrap_err();
        assert_eq!(err.to_string(), "`[wroker]` is not a labelfleet command");
    }
}
