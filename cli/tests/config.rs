//! Every flag from three places: the command line wins over its environment variable, which
//! wins over the config file (`--config` or `LABELFLEET_CONFIG`). A key that is not a flag of
//! the command is refused with its name.

use std::path::Path;
use std::process::{Command, Output};

fn write_pairs(dir: &Path) {
    let pairs = [
        r#"{"id":"a","query":"boundary layer transition","body":"transition of the laminar boundary layer on a flat plate"}"#,
        r#"{"id":"b","query":"buckling of shells","body":"buckling of thin cylindrical shells under axial load"}"#,
    ];
    std::fs::write(dir.join("pairs.jsonl"), pairs.join("\n")).unwrap();
}

/// `labelfleet score` in `dir`, with `args` and `env`, and no labelfleet variable inherited.
fn score(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labelfleet"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LABELFLEET_") && k != "LABELFLEET_HOME" {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir)
        .arg("score")
        .args(args)
        .envs(env.iter().copied());
    cmd.output().expect("labelfleet score")
}

fn graded(dir: &Path, file: &str) -> usize {
    std::fs::read_to_string(dir.join(file))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn flags_beat_variables_beat_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pairs(d);
    std::fs::write(
        d.join("labelfleet.toml"),
        "# every flag by its long name\nmodel = \"minilm\"\ninput = \"pairs.jsonl\"\n\n[score]\noutput = \"from-file.jsonl\"\n",
    )
    .unwrap();
    // the file alone
    let out = score(d, &["--config", "labelfleet.toml"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(graded(d, "from-file.jsonl"), 2);
    // the variable wins over the file (and LABELFLEET_CONFIG names the file)
    let out = score(
        d,
        &[],
        &[
            ("LABELFLEET_CONFIG", "labelfleet.toml"),
            ("LABELFLEET_OUTPUT", "from-env.jsonl"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(graded(d, "from-env.jsonl"), 2);
    // the flag wins over both
    let out = score(
        d,
        &["--config", "labelfleet.toml", "--output", "from-flag.jsonl"],
        &[("LABELFLEET_OUTPUT", "from-env-2.jsonl")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(graded(d, "from-flag.jsonl"), 2);
    assert_eq!(graded(d, "from-env-2.jsonl"), 0);
}

#[test]
fn a_key_that_is_no_flag_of_the_command_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pairs(d);
    std::fs::write(
        d.join("bad.toml"),
        "model = \"minilm\"\nmodle = \"smollm2\"\n",
    )
    .unwrap();
    let out = score(
        d,
        &[
            "--config",
            "bad.toml",
            "--input",
            "pairs.jsonl",
            "--output",
            "x.jsonl",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`modle` is not a flag of `labelfleet score`"),
        "{stderr}"
    );
    assert_eq!(graded(d, "x.jsonl"), 0);
}
