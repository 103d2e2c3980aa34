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
use tantivy::directory::RamDirectory;
use tantivy::query::QueryParser;
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::{Directory, Index, IndexReader, TantivyDocument};

/// The first bytes of an index archive ([`Bm25Index::archive`]), with the format's version.
const ARCHIVE_MAGIC: &[u8; 8] = b"LFBM25\x00\x01";

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

/// The fields BM25 indexes of one document (empty strings for absent fields).
#[derive(Debug, Clone, Copy)]
pub struct IndexedText<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    pub author: &'a str,
    pub path: &'a str,
}

impl Document {
    pub fn indexed_text(&self) -> IndexedText<'_> {
        IndexedText {
            id: &self.id,
            title: self.title.as_deref().unwrap_or_default(),
            body: &self.body,
            author: self.author.as_deref().unwrap_or_default(),
            path: self.path.as_deref().unwrap_or_default(),
        }
    }
}

fn schema() -> Schema {
    let mut sb = Schema::builder();
    sb.add_text_field("id", STRING | STORED);
    sb.add_text_field("title", text_field("en_stem"));
    sb.add_text_field("body", text_field("en_stem"));
    sb.add_text_field("author", text_field("default"));
    sb.add_text_field("path", text_field("default"));
    sb.build()
}

fn field(schema: &Schema, name: &str) -> Result<Field> {
    Ok(schema.get_field(name)?)
}

fn io_error(path: &Path, source: std::io::Error) -> crate::CorpusError {
    crate::CorpusError::Io {
        path: path.into(),
        source,
    }
}

fn archive_error(message: impl Into<String>) -> crate::CorpusError {
    crate::CorpusError::Archive(message.into())
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
        Self::build_texts(docs.iter().map(Document::indexed_text), dir)
    }

    /// Indexes documents given by their indexed fields, in memory or in `dir`.
    pub fn build_texts<'a>(
        texts: impl IntoIterator<Item = IndexedText<'a>>,
        dir: Option<&Path>,
    ) -> Result<Self> {
        let index = match dir {
            Some(d) => {
                if d.exists() {
                    std::fs::remove_dir_all(d).map_err(|e| io_error(d, e))?;
                }
                std::fs::create_dir_all(d).map_err(|e| io_error(d, e))?;
                Index::create_in_dir(d, schema())?
            }
            None => Index::create_in_ram(schema()),
        };
        Self::fill(&index, texts)?;
        Self::open(index)
    }

    fn fill<'a>(index: &Index, texts: impl IntoIterator<Item = IndexedText<'a>>) -> Result<()> {
        let schema = index.schema();
        let fields = ["id", "title", "body", "author", "path"].map(|n| field(&schema, n));
        let [id, title, body, author, path] = fields;
        let (id, title, body, author, path) = (id?, title?, body?, author?, path?);
        let mut writer: tantivy::IndexWriter =
            index.writer_with_num_threads(1, 64 * 1024 * 1024)?;
        for t in texts {
            let mut doc = TantivyDocument::default();
            doc.add_text(id, t.id);
            for (f, text) in [
                (title, t.title),
                (body, t.body),
                (author, t.author),
                (path, t.path),
            ] {
                if !text.is_empty() {
                    doc.add_text(f, text);
                }
            }
            writer.add_document(doc)?;
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        Ok(())
    }

    fn open(index: Index) -> Result<Self> {
        let schema = index.schema();
        let (id, title, body) = (
            field(&schema, "id")?,
            field(&schema, "title")?,
            field(&schema, "body")?,
        );
        let (author, path) = (field(&schema, "author")?, field(&schema, "path")?);
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

    /// Indexes documents and packs the index's files into one archive, the form in which a
    /// shard's index is kept in the object store ([`Bm25Index::from_archive`] opens it).
    pub fn archive<'a>(texts: impl IntoIterator<Item = IndexedText<'a>>) -> Result<Vec<u8>> {
        let dir = tempfile::tempdir().map_err(|e| io_error(Path::new("(temp dir)"), e))?;
        let index = Index::create_in_dir(dir.path(), schema())?;
        Self::fill(&index, texts)?;
        drop(index);
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir.path()).map_err(|e| io_error(dir.path(), e))? {
            let path = entry.map_err(|e| io_error(dir.path(), e))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| archive_error(format!("{}: not a UTF-8 name", path.display())))?
                .to_string();
            if name.starts_with(".tantivy-") && name.ends_with(".lock") {
                continue;
            }
            files.push((name, std::fs::read(&path).map_err(|e| io_error(&path, e))?));
        }
        files.sort();
        let mut out = ARCHIVE_MAGIC.to_vec();
        out.extend((files.len() as u32).to_le_bytes());
        for (name, data) in files {
            out.extend((name.len() as u32).to_le_bytes());
            out.extend(name.as_bytes());
            out.extend((data.len() as u64).to_le_bytes());
            out.extend(data);
        }
        Ok(out)
    }

    /// Opens an index from an archive written by [`Bm25Index::archive`], in memory.
    pub fn from_archive(bytes: &[u8]) -> Result<Self> {
        let mut rest = bytes
            .strip_prefix(ARCHIVE_MAGIC.as_slice())
            .ok_or_else(|| archive_error("not a labelfleet BM25 index archive (bad header)"))?;
        let files = take_u32(&mut rest)?;
        let dir = RamDirectory::create();
        for i in 0..files {
            let name_len = take_u32(&mut rest)? as usize;
            let name = std::str::from_utf8(take(&mut rest, name_len)?)
                .map_err(|_| archive_error(format!("file {i}: name is not UTF-8")))?
                .to_string();
            if name.is_empty() || name == ".." || name.contains(['/', '\\']) {
                return Err(archive_error(format!("file {i}: unexpected name `{name}`")));
            }
            let data_len = take_u64(&mut rest)?;
            let data_len = usize::try_from(data_len)
                .map_err(|_| archive_error(format!("file `{name}`: length {data_len}")))?;
            let data = take(&mut rest, data_len)?;
            dir.atomic_write(Path::new(&name), data)
                .map_err(|e| io_error(Path::new(&name), e))?;
        }
        if !rest.is_empty() {
            return Err(archive_error(format!(
                "{} bytes after the last file",
                rest.len()
            )));
        }
        Self::open(Index::open(dir)?)
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

fn take<'b>(rest: &mut &'b [u8], n: usize) -> Result<&'b [u8]> {
    if rest.len() < n {
        return Err(archive_error(format!(
            "truncated: {n} bytes expected, {} left",
            rest.len()
        )));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn take_u32(rest: &mut &[u8]) -> Result<u32> {
    let b = take(rest, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn take_u64(rest: &mut &[u8]) -> Result<u64> {
    let b = take(rest, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
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
    fn an_archived_index_ranks_and_scores_as_the_one_built_in_memory() {
        let docs = corpus();
        let built = Bm25Index::build(&docs, None).unwrap();
        let bytes = Bm25Index::archive(docs.iter().map(Document::indexed_text)).unwrap();
        let opened = Bm25Index::from_archive(&bytes).unwrap();
        assert_eq!(opened.num_docs(), docs.len() as u64);
        for q in [
            "parental leave",
            "expense report travel",
            "kim",
            "handbook.pdf",
            "",
        ] {
            assert_eq!(
                built.search(q, 10).unwrap(),
                opened.search(q, 10).unwrap(),
                "{q}"
            );
        }
    }

    #[test]
    fn a_damaged_archive_is_refused_with_the_reason() {
        let docs = corpus();
        let bytes = Bm25Index::archive(docs.iter().map(Document::indexed_text)).unwrap();
        let err = |b: &[u8]| Bm25Index::from_archive(b).err().unwrap().to_string();
        assert!(err(b"not an index").contains("bad header"));
        assert!(err(&bytes[..bytes.len() - 3]).contains("truncated"));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(err(&longer).contains("1 bytes after the last file"));
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
