//! A small fixed relevance task for training tests: enterprise-style documents about topics in
//! departments, and queries about a topic. Grade 3 = the document is about the query's topic,
//! 1 = it is about another topic and only points to the query's ("see also"), 0 = unrelated. Train and held-out splits use disjoint topics, so a rise
//! in held-out agreement means the grader learned to match, not to memorise.

use labelfleet_slm::Pair;

pub const TOPICS: &[(&str, &str)] = &[
    ("payroll calendar", "finance"),
    ("invoice approval", "finance"),
    ("expense reimbursement", "finance"),
    ("travel budget", "finance"),
    ("vacation policy", "people"),
    ("parental leave", "people"),
    ("onboarding checklist", "people"),
    ("performance review", "people"),
    ("vpn access", "it"),
    ("password reset", "it"),
    ("laptop replacement", "it"),
    ("printer drivers", "it"),
    ("kubernetes upgrade", "engineering"),
    ("code review guidelines", "engineering"),
    ("incident postmortem", "engineering"),
    ("release checklist", "engineering"),
    ("sales forecast", "sales"),
    ("customer churn", "sales"),
    ("pricing tiers", "sales"),
    ("partner discounts", "sales"),
    ("office relocation", "facilities"),
    ("parking permits", "facilities"),
    ("fire drill", "facilities"),
    ("meeting room booking", "facilities"),
];

const QUERY_FORMS: &[&str] = &[
    "{t}",
    "how does {t} work",
    "{t} policy document",
    "latest {t} update",
];

fn doc(topic: &str, dept: &str, see_also: Option<&str>) -> (String, String) {
    let mut body = format!(
        "This page from the {dept} team explains {topic}. It covers who is responsible for {topic}, \
         the steps to follow, deadlines, and whom to contact with questions about {topic}."
    );
    if let Some(other) = see_also {
        body.push_str(&format!(" See also: {other}."));
    }
    (format!("{} guide", capitalize(topic)), body)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// The teacher distribution behind each grade (soft labels, as a teacher LLM would give).
pub fn target(grade: usize) -> Vec<f32> {
    match grade {
        3 => vec![0.02, 0.03, 0.15, 0.80],
        1 => vec![0.20, 0.60, 0.15, 0.05],
        _ => vec![0.85, 0.10, 0.04, 0.01],
    }
}

/// Pairs over the topics `topic_ids`: for each topic and query form, its own document (3), a
/// document on a neighbouring topic that points to it (1) and two unrelated documents (0).
pub fn pairs(topic_ids: &[usize]) -> Vec<(Pair, usize)> {
    let mut out = vec![];
    for (k, &ti) in topic_ids.iter().enumerate() {
        let topic = TOPICS[ti].0;
        let neighbour = topic_ids[(k + 1) % topic_ids.len()];
        let others: Vec<usize> = topic_ids
            .iter()
            .copied()
            .filter(|&j| j != ti && j != neighbour)
            .collect();
        for (f, form) in QUERY_FORMS.iter().enumerate() {
            let query = form.replace("{t}", topic);
            let mut cands = vec![(ti, 3), (neighbour, 1)];
            for n in 0..2 {
                cands.push((others[(k * 7 + f * 3 + n * 5) % others.len()], 0));
            }
            for (j, grade) in cands {
                let see_also = (grade == 1).then_some(topic);
                let (title, body) = doc(TOPICS[j].0, TOPICS[j].1, see_also);
                out.push((
                    Pair {
                        id: format!("q{ti}f{f}-d{j}"),
                        query: query.clone(),
                        title: Some(title),
                        body,
                        metadata: [("author".to_string(), format!("{} team", TOPICS[j].1))].into(),
                    },
                    grade,
                ));
            }
        }
    }
    out
}

/// Topics used for training and for held-out evaluation: disjoint, with two topics of every
/// department in each, so both splits hold all three grades.
pub fn split() -> (Vec<usize>, Vec<usize>) {
    let train = (0..TOPICS.len()).filter(|i| i % 4 < 2).collect();
    let heldout = (0..TOPICS.len()).filter(|i| i % 4 >= 2).collect();
    (train, heldout)
}
