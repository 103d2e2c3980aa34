//! The Python client (`clients/python`) against this build of the binary: runs its pytest suite
//! (a labeling job on `labelfleet serve`, the typed errors over TLS with tokens, the stubs
//! regenerated from the proto, the package as setuptools builds it) with the venv's Python.
//!
//! The package is put on PYTHONPATH rather than pip-installed: that needs nothing from a package
//! index (the suite builds the package with setuptools itself, offline).

use std::path::PathBuf;
use std::process::Command;

/// `$LABELFLEET_HOME/venv/bin/python`, `LABELFLEET_HOME` defaulting to `~/.cache/labelfleet`.
fn venv_python() -> PathBuf {
    let home = std::env::var_os("LABELFLEET_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/labelfleet")
        });
    home.join("venv/bin/python")
}

#[test]
fn python_client_suite_passes_against_this_binary() {
    let python = venv_python();
    assert!(
        python.is_file(),
        "no Python at {} (set LABELFLEET_HOME to the folder holding venv/)",
        python.display()
    );
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let client = repo.join("clients/python");
    let tmp = tempfile::tempdir().unwrap();

    let output = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "--basetemp",
        ])
        .arg(tmp.path().join("pytest"))
        .arg(client.join("tests"))
        .current_dir(&repo)
        .env("LABELFLEET_BIN", env!("CARGO_BIN_EXE_labelfleet"))
        .env("PYTHONPATH", &client)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("running pytest");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "pytest failed:\n{report}");
    // every test ran: a skip (grpcio-tools missing, say) would hide the stub-drift check
    let summary = report
        .lines()
        .rev()
        .find(|l| l.contains(" passed"))
        .unwrap_or_default();
    assert!(
        !summary.contains("skipped"),
        "pytest skipped tests:\n{report}"
    );
    println!("{summary}");
}
