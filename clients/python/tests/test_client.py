"""The client against the real binary: a labeling job end to end on the embedded cluster, and
the typed errors (unknown job, bad token, failed and cancelled jobs)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import grpc
import pytest

from conftest import Secured, Server, data_dir
from labelfleet_client import (
    Client,
    JobCancelled,
    JobFailed,
    JobState,
    Label,
    LabelfleetError,
    Pair,
    RpcError,
    WaitTimeout,
)
from labelfleet_client.client import _document

DOCUMENTS = 60
QUERIES = 5
DOCS_PER_QUERY = 20  # 5 x 20 = 100 pairs


def cranfield_slice(tmp_path: Path) -> Path:
    """The first DOCUMENTS Cranfield documents, as a JSONL file."""
    with (data_dir() / "cranfield" / "corpus.jsonl").open(encoding="utf-8") as f:
        lines = list(itertools.islice(f, DOCUMENTS))
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def cranfield_pairs(corpus: Path) -> list[Pair]:
    """The first QUERIES Cranfield queries, each with the first DOCS_PER_QUERY documents."""
    doc_ids = [json.loads(line)["id"] for line in corpus.read_text().splitlines()][:DOCS_PER_QUERY]
    queries_tsv = (data_dir() / "cranfield" / "queries.tsv").read_text().splitlines()[:QUERIES]
    queries = [line.split("\t", 1) for line in queries_tsv]
    return [
        Pair(f"q{qid}-d{doc}", text, doc, query_id=qid) for qid, text in queries for doc in doc_ids
    ]


def test_labeling_job_labels_every_pair_once(served: Server, tmp_path: Path) -> None:
    corpus = cranfield_slice(tmp_path)
    pairs = cranfield_pairs(corpus)
    assert len(pairs) == QUERIES * DOCS_PER_QUERY
    with Client(served.address) as c:
        corpus_id = c.upload_corpus(corpus)
        assert corpus_id
        job_id = c.submit_labeling(
            corpus_id, pairs, model="minilm", task_size=25, idempotency_key="py-1"
        )
        # a retried submit with the same key is the same job
        assert c.submit_labeling(corpus_id, pairs, task_size=25, idempotency_key="py-1") == job_id

        job = c.wait(job_id, timeout=600)
        assert job.state == JobState.SUCCEEDED and job.done
        assert job.corpus_id == corpus_id
        assert [(s.stage, s.done, s.total) for s in job.stages] == [
            ("label", len(pairs), len(pairs))
        ]
        # watching an ended job gives its final snapshot and stops
        assert [j.state for j in c.watch(job_id)] == [JobState.SUCCEEDED]
        assert job_id in {j.job_id for j in c.list()}
        assert job_id in {j.job_id for j in c.list(state=JobState.SUCCEEDED, page_size=1)}
        assert c.get(job_id).state == JobState.SUCCEEDED

        labels = c.fetch_labels(job_id)

    assert all(isinstance(label, Label) for label in labels)
    ids = [label.pair_id for label in labels]
    assert sorted(ids) == sorted(p.pair_id for p in pairs), "every pair labeled exactly once"
    by_id = {p.pair_id: p for p in pairs}
    for label in labels:
        pair = by_id[label.pair_id]
        assert (label.query_id, label.doc_id) == (pair.query_id, pair.doc_id)
        assert label.grade in range(4)
        assert len(label.distribution) == 4
        assert all(0.0 <= p <= 1.0 for p in label.distribution)
        assert math.isclose(sum(label.distribution), 1.0, abs_tol=1e-3)
        assert label.distribution[label.grade] == max(label.distribution)
        expected = sum(i * p for i, p in enumerate(label.distribution))
        assert math.isclose(label.expected_grade, expected, abs_tol=1e-3)
        assert "minilm" in label.model


def test_unknown_job_is_not_found(served: Server) -> None:
    with Client(served.address) as c:
        for call in (c.get, c.cancel, c.fetch_labels, c.wait):
            with pytest.raises(RpcError) as e:
                call("job-that-does-not-exist")
            assert e.value.code == grpc.StatusCode.NOT_FOUND, call.__name__
            assert "job-that-does-not-exist" in e.value.message
            assert isinstance(e.value, LabelfleetError)


def test_bad_input_is_refused(served: Server, tmp_path: Path) -> None:
    with Client(served.address) as c:
        corpus_id = c.upload_corpus(
            [{"id": "d1", "body": "wing flutter at supersonic speed"}], name="one"
        )
        # a pair naming a document the corpus does not hold
        with pytest.raises(RpcError) as e:
            c.submit_labeling(corpus_id, [Pair("p1", "flutter", "no-such-doc")])
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "no-such-doc" in e.value.message
        # a malformed corpus line is the caller's error, named by line
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"id": "a", "body": "fine"}\n{not json\n')
        with pytest.raises(ValueError, match="bad.jsonl:2"):
            c.upload_corpus(bad)


def test_a_failed_job_raises_job_failed(served: Server) -> None:
    with Client(served.address) as c:
        corpus_id = c.upload_corpus([{"id": "d1", "body": "wing flutter at supersonic speed"}])
        job_id = c.submit_labeling(
            corpus_id, [{"id": "p1", "query": "flutter", "doc_id": "d1"}], model="no-such-model"
        )
        with pytest.raises(JobFailed) as e:
            c.wait(job_id, timeout=120)
    assert e.value.job.state == JobState.FAILED
    assert "no-such-model" in e.value.job.error


def test_tokens_and_tls(secured: Secured) -> None:
    def code(token: str | None) -> grpc.StatusCode:
        with Client(secured.address, token=token, ca_cert=secured.ca_cert) as c:
            with pytest.raises(RpcError) as e:
                c.get("job-that-does-not-exist")
            return e.value.code

    assert code(None) == grpc.StatusCode.UNAUTHENTICATED
    assert code("lft_not-a-token") == grpc.StatusCode.UNAUTHENTICATED
    assert code(secured.reader) == grpc.StatusCode.NOT_FOUND
    assert code(secured.full) == grpc.StatusCode.NOT_FOUND
    # the CA as bytes works as well as its path
    with Client(secured.address, token=secured.full, ca_cert=secured.ca_cert.read_bytes()) as c:
        assert isinstance(c.list(), list)
    # a read-only token may not upload
    with Client(secured.address, token=secured.reader, ca_cert=secured.ca_cert) as c:
        with pytest.raises(RpcError) as e:
            c.upload_corpus([{"id": "d1", "body": "text"}])
        assert e.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_wait_times_out_then_raises_job_cancelled(secured: Secured) -> None:
    # this coordinator has no workers: a job stays unfinished until it is cancelled
    with Client(secured.address, token=secured.full, ca_cert=secured.ca_cert) as c:
        corpus_id = c.upload_corpus([{"id": "d1", "body": "wing flutter at supersonic speed"}])
        job_id = c.submit_labeling(corpus_id, [Pair("p1", "flutter", "d1")])
        with pytest.raises(WaitTimeout) as timeout:
            c.wait(job_id, timeout=1.5)
        assert timeout.value.job is not None and not timeout.value.job.done
        assert c.cancel(job_id, reason="test").state == JobState.CANCELLED
        with pytest.raises(JobCancelled) as cancelled:
            c.wait(job_id, timeout=30)
    assert cancelled.value.job.job_id == job_id


def test_corpus_records_are_sent_as_the_cli_sends_them() -> None:
    d = _document(
        {
            "id": 42,
            "body": "b",
            "filename": "a/b.txt",
            "modified": 1700000000,
            "team": "fin",
            "n": [1, 2],
        }
    )
    assert (d.id, d.body, d.path, d.modified) == ("42", "b", "a/b.txt", "1700000000")
    assert dict(d.metadata) == {"team": "fin", "n": "[1,2]"}
    with pytest.raises(ValueError):
        _document({"body": "no id"})
    with pytest.raises(ValueError):
        _document({"id": "x", "body": 3})
