//! Progress bars (rate and ETA) and result tables.
//!
//! On a terminal a bar redraws in place. When stderr is not a terminal (`kubectl logs`, a CI
//! log, a file), a bar draws nothing; instead a line with done/total, rate and ETA is printed
//! every [`line_interval`] (`LABELFLEET_PROGRESS_INTERVAL` seconds, default 10) and once at
//! the end, so a log shows the work moving.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, WeakProgressBar};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Seconds between progress lines when stderr is not a terminal.
pub const PROGRESS_INTERVAL_ENV: &str = "LABELFLEET_PROGRESS_INTERVAL";
const DEFAULT_LINE_INTERVAL: Duration = Duration::from_secs(10);

/// A progress bar. On a terminal it is indicatif's bar; otherwise it also owns the line logger,
/// and prints the last line (the final count) when dropped, so a log always shows where the work
/// ended, even when the process exits right after.
pub struct Progress {
    bar: ProgressBar,
    lines: Option<Arc<LineLogger>>,
}

impl std::ops::Deref for Progress {
    type Target = ProgressBar;
    fn deref(&self) -> &ProgressBar {
        &self.bar
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(lines) = &self.lines {
            lines.last_line(&self.bar);
        }
    }
}

/// What the progress lines of one bar share between its logger thread and the bar's owner.
struct LineLogger {
    what: String,
    /// Set once the last line is printed: nothing is printed after it.
    closed: Mutex<bool>,
}

impl LineLogger {
    fn last_line(&self, bar: &ProgressBar) {
        let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        if !*closed {
            eprintln!("{}", progress_line(&self.what, bar));
            *closed = true;
        }
    }
}

pub fn bar(len: u64, what: &str) -> Progress {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:32.cyan/blue}] {pos}/{len} {per_sec:>12} ETA {eta:>4} ({elapsed})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    if std::io::stderr().is_terminal() {
        return Progress {
            bar: pb,
            lines: None,
        };
    }
    pb.set_draw_target(ProgressDrawTarget::hidden());
    let lines = Arc::new(LineLogger {
        what: what.to_string(),
        closed: Mutex::new(false),
    });
    spawn_line_logger(pb.downgrade(), lines.clone(), line_interval());
    Progress {
        bar: pb,
        lines: Some(lines),
    }
}

/// The interval of progress lines: `LABELFLEET_PROGRESS_INTERVAL` seconds (fractions allowed),
/// else 10 s. A value that is not a positive number is ignored, with a warning.
pub fn line_interval() -> Duration {
    match std::env::var(PROGRESS_INTERVAL_ENV) {
        Err(_) => DEFAULT_LINE_INTERVAL,
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
            _ => {
                tracing::warn!(
                    "{PROGRESS_INTERVAL_ENV}={v:?} is not a positive number of seconds; using {}s",
                    DEFAULT_LINE_INTERVAL.as_secs()
                );
                DEFAULT_LINE_INTERVAL
            }
        },
    }
}

/// Prints a progress line every `interval` while the bar lives, and the last one as soon as
/// the bar is finished (its state is polled more often than lines are printed).
fn spawn_line_logger(bar: WeakProgressBar, lines: Arc<LineLogger>, interval: Duration) {
    let poll = interval.min(Duration::from_millis(200));
    let what = lines.what.clone();
    let spawned = std::thread::Builder::new()
        .name("progress-lines".into())
        .spawn(move || {
            let mut last = Instant::now();
            loop {
                std::thread::sleep(poll);
                let Some(pb) = bar.upgrade() else { return };
                if pb.is_finished() {
                    lines.last_line(&pb);
                    return;
                }
                if last.elapsed() >= interval {
                    let closed = lines.closed.lock().unwrap_or_else(|p| p.into_inner());
                    if *closed {
                        return;
                    }
                    eprintln!("{}", progress_line(&lines.what, &pb));
                    last = Instant::now();
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("no progress lines for {what}: {e}");
    }
}

/// `progress grading: 120/300 (40.0%) 21.3/s ETA 8s elapsed 5s`
pub fn progress_line(what: &str, pb: &ProgressBar) -> String {
    let done = pb.position();
    let elapsed = pb.elapsed().as_secs_f64();
    let rate = if elapsed > 0.0 {
        done as f64 / elapsed
    } else {
        0.0
    };
    let total = match pb.length() {
        Some(len) if len > 0 => format!("{done}/{len} ({:.1}%)", 100.0 * done as f64 / len as f64),
        _ => done.to_string(),
    };
    let eta = match pb.length() {
        Some(len) if rate > 0.0 && len > done => {
            format!(" ETA {:.0}s", (len - done) as f64 / rate)
        }
        _ => String::new(),
    };
    let state = if pb.is_finished() { " done" } else { "" };
    format!("progress {what}: {total} {rate:.1}/s{eta} elapsed {elapsed:.0}s{state}")
}

pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    // on a terminal, cells wrap to keep each row within its width; elsewhere rows stay whole
    t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    t.set_header(header.iter().map(|h| h.to_string()));
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}
