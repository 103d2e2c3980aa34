//! The agreement figure renders to a real PNG of the announced size, with something drawn.

use labelfleet_eval::plot::{figure_size, render_png};
use labelfleet_eval::{labeler_report, BootstrapConfig, Judgment};
use rand::{Rng, SeedableRng};

/// A teacher right 70% of the time and a student right 60% of the time, with expected grades
/// near their grades, on 40 queries x 12 documents.
fn labelers() -> (Vec<Judgment>, Vec<Judgment>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let (mut teacher, mut student) = (vec![], vec![]);
    for q in 0..40 {
        for d in 0..12 {
            // fewer relevant documents than not, as in a judged pool
            let human = [0, 0, 0, 1, 1, 2, 3][rng.random_range(0..7)];
            for (p_right, out) in [(0.7, &mut teacher), (0.6, &mut student)] {
                let predicted = if rng.random_bool(p_right) {
                    human
                } else {
                    rng.random_range(0..4)
                };
                let score = (predicted as f64 + rng.random_range(-0.4..0.4)).clamp(0.0, 3.0);
                out.push(Judgment {
                    query: format!("q{q}"),
                    doc: format!("d{d}"),
                    human,
                    predicted,
                    score,
                });
            }
        }
    }
    (teacher, student)
}

#[test]
fn the_figure_is_a_png_of_the_announced_size_and_not_blank() {
    let (teacher, student) = labelers();
    let cfg = BootstrapConfig::default();
    let reports = vec![
        labeler_report("teacher", &teacher, 4, &cfg).unwrap(),
        labeler_report("student", &student, 4, &cfg).unwrap(),
    ];
    // kept under the target folder, so a person can look at it after the test
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("agreement_sample.png");
    render_png(
        &path,
        "Agreement with human judges: 480 pairs, 40 queries",
        &reports,
    )
    .unwrap();

    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8();
    assert_eq!(img.dimensions(), figure_size(2));
    let lum: Vec<f64> = img
        .pixels()
        .map(|p| (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0)
        .collect();
    let mean = lum.iter().sum::<f64>() / lum.len() as f64;
    let variance = lum.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / lum.len() as f64;
    assert!(
        variance > 200.0,
        "pixel variance {variance}: the figure looks blank"
    );
    let inked = lum.iter().filter(|&&l| l < 250.0).count() as f64 / lum.len() as f64;
    assert!(
        inked > 0.05 && inked < 0.8,
        "{:.1}% of the pixels are drawn",
        inked * 100.0
    );
    // both labelers' colours appear (bars, calibration lines)
    let has = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count() > 500;
    assert!(has([31, 119, 180]), "the first labeler's blue is missing");
    assert!(
        has([255, 127, 14]),
        "the second labeler's orange is missing"
    );
}

#[test]
fn one_labeler_and_many_labelers_render_too() {
    let (teacher, student) = labelers();
    let cfg = BootstrapConfig {
        resamples: 200,
        ..Default::default()
    };
    let dir = tempfile_dir();
    let one = [labeler_report("teacher", &teacher, 4, &cfg).unwrap()];
    let path = dir.join("one.png");
    render_png(&path, "one labeler", &one).unwrap();
    let img = image::open(&path).unwrap();
    assert_eq!((img.width(), img.height()), figure_size(1));

    let many: Vec<_> = (0..4)
        .map(|i| {
            let j = if i % 2 == 0 { &teacher } else { &student };
            labeler_report(&format!("labeler {i}"), j, 4, &cfg).unwrap()
        })
        .collect();
    let path = dir.join("many.png");
    render_png(&path, "four labelers", &many).unwrap();
    let img = image::open(&path).unwrap();
    assert_eq!((img.width(), img.height()), figure_size(4));
    std::fs::remove_dir_all(dir).ok();

    assert!(render_png(&path, "none", &[]).is_err());
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("lf-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
