//! TREC qrels lines (`query_id 0 doc_id grade`): the one writer every labelfleet output uses.
//!
//! A qrels line is four fields split on whitespace, so an empty id, or an id with whitespace in
//! it, would write a line that readers split wrongly (` 0 d1 2` reads as query `0`). The writer
//! refuses such ids instead, naming the pair.

use std::fmt::Write as _;

/// Why a label cannot be a qrels line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QrelsError {
    #[error("label {pair}: `{field}` is empty; a qrels line needs a query id and a document id")]
    EmptyId { pair: String, field: &'static str },
    #[error("label {pair}: `{field}` {value:?} has whitespace, which would split the qrels line")]
    Whitespace {
        pair: String,
        field: &'static str,
        value: String,
    },
}

/// Checks one id of a qrels line.
fn check(pair: &str, field: &'static str, value: &str) -> Result<(), QrelsError> {
    if value.is_empty() {
        return Err(QrelsError::EmptyId {
            pair: pair.to_string(),
            field,
        });
    }
    if value.chars().any(char::is_whitespace) {
        return Err(QrelsError::Whitespace {
            pair: pair.to_string(),
            field,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// The qrels line of a label, with its newline. `pair` names the label in errors.
pub fn qrels_line(
    pair: &str,
    query_id: &str,
    doc_id: &str,
    grade: usize,
) -> Result<String, QrelsError> {
    let mut line = String::new();
    push_qrels_line(&mut line, pair, query_id, doc_id, grade)?;
    Ok(line)
}

/// Appends the qrels line of a label to `out`; nothing is appended on error.
pub fn push_qrels_line(
    out: &mut String,
    pair: &str,
    query_id: &str,
    doc_id: &str,
    grade: usize,
) -> Result<(), QrelsError> {
    check(pair, "query_id", query_id)?;
    check(pair, "doc_id", doc_id)?;
    writeln!(out, "{query_id} 0 {doc_id} {grade}").expect("writing to a String cannot fail");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_four_fields() {
        assert_eq!(qrels_line("p1", "q7", "d3", 2).unwrap(), "q7 0 d3 2\n");
    }

    #[test]
    fn refuses_ids_that_would_split_the_line() {
        assert_eq!(
            qrels_line("p1", "", "d1", 2),
            Err(QrelsError::EmptyId {
                pair: "p1".into(),
                field: "query_id"
            })
        );
        let err = qrels_line("p2", "q1", "my doc", 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "label p2: `doc_id` \"my doc\" has whitespace, which would split the qrels line"
        );
        let mut out = "q1 0 d1 1\n".to_string();
        assert!(push_qrels_line(&mut out, "p3", "q\t2", "d2", 0).is_err());
        assert_eq!(out, "q1 0 d1 1\n", "nothing appended on error");
    }
}
