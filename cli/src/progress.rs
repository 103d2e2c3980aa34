//! Progress bars (rate and ETA) and result tables.

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:32.cyan/blue}] {pos}/{len} {per_sec:>12} ETA {eta:>4} ({elapsed})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header(header.iter().map(|h| h.to_string()));
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}

/// The summary a grading command prints: the model, any `context` columns (device, queries),
/// how many pairs were graded and rejected, the rate, and the histogram of grades.
pub fn grading_summary(
    model: &str,
    context: &[(&str, String)],
    grades: &[usize],
    num_grades: usize,
    rejected: usize,
    secs: f64,
) -> String {
    let mut hist = vec![0usize; num_grades];
    for &g in grades {
        if let Some(n) = hist.get_mut(g) {
            *n += 1;
        }
    }
    let mut header = vec!["model"];
    let mut row = vec![model.to_string()];
    for (name, value) in context {
        header.push(name);
        row.push(value.clone());
    }
    header.extend(["pairs", "rejected", "pairs/s", "grade histogram"]);
    row.extend([
        grades.len().to_string(),
        rejected.to_string(),
        format!("{:.1}", grades.len() as f64 / secs.max(1e-9)),
        format!("{hist:?}"),
    ]);
    table(&header, vec![row])
}
