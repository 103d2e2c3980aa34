//! Progress bars (rate and ETA) and result tables.

/// One progress bar and table style for the whole binary: the pipeline crate's.
pub use labelfleet_pipeline::progress::{bar, table, Progress};

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
