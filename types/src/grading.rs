//! What a grader says about a pair: a distribution over grades, and its summary.

use serde::{Deserialize, Serialize};

/// The grade a model gave one pair.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Grading {
    /// Probability of each grade, summing to 1.
    pub distribution: Vec<f32>,
    /// The most likely grade; for a grader calibrated with cutpoints, the bin its expected
    /// grade falls in (`from_expected_grade`).
    pub grade: usize,
    /// Sum of grade * probability.
    pub expected: f32,
    /// A committee's judges, each with its own distribution (empty for a single grader).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub judges: Vec<JudgeGrading>,
}

/// One judge's grading of a pair, kept in a committee's label.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JudgeGrading {
    /// The judge's name in its committee.
    pub judge: String,
    /// Its model, as the engine describes it.
    pub model: String,
    pub distribution: Vec<f32>,
}

impl Grading {
    /// The grading of a distribution: its most likely grade and its expected grade.
    pub fn from_distribution(distribution: Vec<f32>) -> Self {
        let grade = distribution
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0);
        let expected = distribution
            .iter()
            .enumerate()
            .map(|(i, p)| i as f32 * p)
            .sum();
        Grading {
            distribution,
            grade,
            expected,
            judges: Vec::new(),
        }
    }

    /// The grading of a distribution whose grade is the bin of its expected grade: grade k
    /// once the expected grade reaches `cutpoints[k - 1]` (ascending, one fewer than the
    /// grades). A calibrated student's grades, which keep its order of pairs.
    pub fn from_expected_grade(distribution: Vec<f32>, cutpoints: &[f32]) -> Self {
        let mut g = Self::from_distribution(distribution);
        g.grade = cutpoints.iter().take_while(|c| g.expected >= **c).count();
        g
    }
}

/// Default grade scale: "0".."3".
pub fn default_grade_labels() -> Vec<String> {
    (0..4).map(|g| g.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grading_summary_follows_distribution() {
        let g = Grading::from_distribution(vec![0.1, 0.2, 0.6, 0.1]);
        assert_eq!(g.grade, 2);
        assert!((g.expected - 1.7).abs() < 1e-6);
    }

    #[test]
    fn a_calibrated_grade_is_the_bin_of_the_expected_grade() {
        let d = vec![0.6, 0.2, 0.1, 0.1]; // expected 0.7, most likely 0
        let cut = [0.5, 0.65, 0.9];
        assert_eq!(Grading::from_expected_grade(d.clone(), &cut).grade, 2);
        assert_eq!(
            Grading::from_expected_grade(d.clone(), &[0.8, 0.9, 1.0]).grade,
            0
        );
        assert_eq!(
            Grading::from_expected_grade(d.clone(), &[0.1, 0.2, 0.3]).grade,
            3
        );
        let g = Grading::from_expected_grade(d.clone(), &cut);
        assert_eq!(
            (g.distribution, g.expected),
            (d.clone(), Grading::from_distribution(d).expected)
        );
    }

    #[test]
    fn default_scale_is_0_to_3() {
        assert_eq!(default_grade_labels(), ["0", "1", "2", "3"]);
    }
}
