//! BM25 retrieval with tantivy over title, body, author and path, and hard-negative mining from
//! its ranking: the documents a lexical engine confuses with the right answer.

use crate::ingest::Document;
use crate::Result;
use rand::seq::index::sample;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::{Index, IndexReader, TantivyDocument};

/// One retrieved document, with its 1-based BM25 rank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub id: String,
    pub score: f32,
    pub rank: usize,
}

/// Which of BM25's top `depth` ranks hard negatives are taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RankSampling {
    /// The highest-ranked non-positives.
    Top,
    /// Uniformly at random among the non-positives within the depth.
    Uniform,
    /// One from each of `count` equal slices of the ranking: hard and medium negatives both.
    Stratified,
}

pub struct Bm25Index {
    index: Index,
    reader: IndexReader,
    parser: QueryParser,
    id: Field,
}

fn text_field(tokenizer: &str) -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(tokenizer)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    )
}

impl Bm25Index {
    /// Indexes `docs` in memory, or in `dir` when given (created if missing, replaced if present).
    pub fn build(docs: &[Document], dir: Option<&Path>) -> Result<Self> {
        let mut sb = Schema::builder();
        let id = sb.add_text_field("id", STRING | STORED);
        let title = sb.add_text_field("title", text_field("en_stem"));
        let body = sb.add_text_field("body", text_field("en_stem"));
        let author = sb.add_text_field("author", text_field("default"));
        let path = sb.add_text_field("path", text_field("default"));
        let schema = sb.build();
        let index = match dir {
            Some(d) => {
                if d.exists() {
                    std::fs::remove_dir_all(d).map_err(|source| crate::CorpusError::Io {
                        path: d.into(),
                        source,
                    })?;
                }
                std::fs::create_dir_all(d).map_err(|source| crate::CorpusError::Io {
                    path: d.into(),
                    source,
                })?;
                Index::create_in_dir(d, schema)?
            }
            None => Index::create_in_ram(schema),
        };
        let mut writer: tantivy::IndexWriter =
            index.writer_with_num_threads(1, 64 * 1024 * 1024)?;
        for d in docs {
            let mut doc = TantivyDocument::default();
            doc.add_text(id, &d.id);
            if let Some(t) = &d.title {
                doc.add_text(title, t);
            }
            doc.add_text(body, &d.body);
            if let Some(a) = &d.author {
                doc.add_text(author, a);
            }
            if let Some(p) = &d.path {
                doc.add_text(path, p);
            }
            writer.add_document(doc)?;
        }
        writer.commit()?;
        let reader = index.reader()?;
        let mut parser = QueryParser::for_index(&index, vec![title, body, author, path]);
        parser.set_field_boost(title, 1.5);
        Ok(Bm25Index {
            index,
            reader,
            parser,
            id,
        })
    }

    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The top `k` documents for free text. Query syntax characters are taken as text
    /// (lenient parsing), so any user or model query is accepted.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>> {
        if k == 0 {
            return Ok(vec![]);
        }
        let (q, _ignored) = self.parser.parse_query_lenient(query);
        let searcher = self.reader.searcher();
        let top = searcher.search(&q, &TopDocs::with_limit(k).order_by_score())?;
        let mut hits = Vec::with_capacity(top.len());
        for (rank, (score, addr)) in top.into_iter().enumerate() {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let id = doc
                .get_first(self.id)
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            hits.push(Hit {
                id,
                score,
                rank: rank + 1,
            });
        }
        Ok(hits)
    }

    pub fn index(&self) -> &Index {
        &self.index
    }
}

/// Picks up to `count` hard negatives from `hits` (a BM25 ranking), skipping `positives`.
pub fn hard_negatives(
    hits: &[Hit],
    positives: &HashSet<&str>,
    count: usize,
    sampling: RankSampling,
    rng: &mut impl Rng,
) -> Vec<Hit> {
    let pool: Vec<&Hit> = hits
        .iter()
        .filter(|h| !positives.contains(h.id.as_str()))
        .collect();
    if pool.len() <= count {
        return pool.into_iter().cloned().collect();
    }
    let mut picked: Vec<&Hit> = match sampling {
        RankSampling::Top => pool[..count].to_vec(),
        RankSampling::Uniform => sample(rng, pool.len(), count)
            .into_iter()
            .map(|i| pool[i])
            .collect(),
        RankSampling::Stratified => (0..count)
            .map(|s| {
                let lo = s * pool.len() / count;
                let hi = ((s + 1) * pool.len() / count).max(lo + 1);
                pool[rng.random_range(lo..hi)]
            })
            .collect(),
    };
    picked.sort_by_key(|h| h.rank);
    picked.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    fn doc(
        id: &str,
        title: &str,
        body: &str,
        author: Option<&str>,
        path: Option<&str>,
    ) -> Document {
        Document {
            id: id.into(),
            title: Some(title.into()),
            body: body.into(),
            author: author.map(String::from),
            path: path.map(String::from),
            modified: None,
            metadata: BTreeMap::new(),
        }
    }

    fn corpus() -> Vec<Document> {
        vec![
            doc(
                "exp",
                "Expense policy",
                "Meals are reimbursed up to 50 EUR per day.",
                Some("Jane Doe"),
                Some("finance/expenses.md"),
            ),
            doc(
                "vpn",
                "VPN setup",
                "Install the client and sign in with SSO.",
                Some("IT desk"),
                Some("it/vpn.md"),
            ),
            doc(
                "travel",
                "Travel booking",
                "Book flights through the portal; expenses follow the expense policy.",
                None,
                None,
            ),
            doc(
                "leave",
                "Parental leave",
                "Sixteen weeks of paid leave.",
                Some("People team"),
                Some("hr/leave.md"),
            ),
        ]
    }

    #[test]
    fn ranks_by_bm25_over_all_fields() {
        let idx = Bm25Index::build(&corpus(), None).unwrap();
        assert_eq!(idx.num_docs(), 4);
        let hits = idx.search("expense policy", 10).unwrap();
        assert_eq!(hits[0].id, "exp");
        assert_eq!(hits[1].id, "travel");
        assert!(hits[0].score > hits[1].score);
        assert_eq!(
            hits.iter().map(|h| h.rank).collect::<Vec<_>>(),
            (1..=hits.len()).collect::<Vec<_>>()
        );
        // stemming: "reimbursement" finds "reimbursed"
        assert_eq!(idx.search("meal reimbursement", 1).unwrap()[0].id, "exp");
        // metadata queries: author and path
        assert_eq!(idx.search("jane doe", 1).unwrap()[0].id, "exp");
        assert_eq!(idx.search("vpn.md", 1).unwrap()[0].id, "vpn");
        // query syntax is taken as text, not an error
        assert!(idx.search("title:(unbalanced AND", 5).is_ok());
    }

    #[test]
    fn on_disk_index_searches_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Bm25Index::build(&corpus(), Some(&dir.path().join("bm25"))).unwrap();
        assert_eq!(idx.search("parental leave", 1).unwrap()[0].id, "leave");
    }

    #[test]
    fn hard_negatives_skip_positives_and_follow_the_sampling() {
        let hits: Vec<Hit> = (1..=20)
            .map(|r| Hit {
                id: format!("d{r}"),
                score: 100.0 - r as f32,
                rank: r,
            })
            .collect();
        let pos: HashSet<&str> = ["d1", "d3"].into();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let top = hard_negatives(&hits, &pos, 3, RankSampling::Top, &mut rng);
        assert_eq!(
            top.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            vec!["d2", "d4", "d5"]
        );
        let strat = hard_negatives(&hits, &pos, 3, RankSampling::Stratified, &mut rng);
        assert_eq!(strat.len(), 3);
        // one from each third of the 18 non-positive ranks
        assert!(
            strat[0].rank <= 8 && strat[1].rank > 8 && strat[1].rank <= 14 && strat[2].rank > 14,
            "{strat:?}"
        );
        let uni = hard_negatives(&hits, &pos, 5, RankSampling::Uniform, &mut rng);
        assert_eq!(uni.len(), 5);
        assert!(uni.iter().all(|h| !pos.contains(h.id.as_str())));
        assert!(uni.windows(2).all(|w| w[0].rank < w[1].rank));
        assert_eq!(
            hard_negatives(&hits[..3], &pos, 5, RankSampling::Uniform, &mut rng).len(),
            1
        );
    }
}
