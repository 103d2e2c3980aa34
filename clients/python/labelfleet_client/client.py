"""`Client`: a small typed wrapper over labelfleet's `JobService` (see the package README)."""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Tuple, TypeVar, Union

import grpc

from .models import (
    Job,
    JobCancelled,
    JobFailed,
    JobState,
    Label,
    Pair,
    RpcError,
    WaitTimeout,
)
from .v1 import labelfleet_pb2 as pb
from .v1 import labelfleet_pb2_grpc as pb_grpc

log = logging.getLogger("labelfleet_client")

#: The name in the coordinator's certificate made by `labelfleet certs`; TLS checks it.
COORDINATOR_TLS_NAME = "coordinator.labelfleet.internal"
#: Documents per message of a corpus upload, and pairs per message of a submit (as the CLI).
DOCUMENTS_PER_CHUNK = 500
PAIRS_PER_CHUNK = 10_000
#: Largest message sent or accepted (as the Rust client).
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

#: A corpus: a JSONL file, or records shaped like its lines.
CorpusSource = Union[str, "os.PathLike[str]", Iterable[Mapping[str, Any]]]
#: A pair: a `Pair`, or a mapping like a line of the CLI's pairs file
#: (`{"id", "query_id"?, "query", "doc_id"}`; `pair_id` is accepted for `id`).
PairLike = Union[Pair, Mapping[str, Any]]

T = TypeVar("T")
_KNOWN_FIELDS = ("id", "title", "body", "author", "path", "filename", "modified")


class Client:
    """A connection to a labelfleet coordinator (the leader, or a replica that forwards to it).

    `address` is `host:port` (an `http://` or `https://` prefix is accepted). With `ca_cert`
    (a PEM file path or its bytes) the connection is TLS, checking that the coordinator's
    certificate is signed by that CA and names `server_name` (the name `labelfleet certs` gives
    it); an `https://` address without `ca_cert` uses the system's roots. `token` is sent as
    `authorization: Bearer <token>` on every call. `timeout` bounds each unary call, in seconds.

    Use it as a context manager, or call `close()`.
    """

    def __init__(
        self,
        address: str,
        token: Optional[str] = None,
        ca_cert: Optional[Union[str, "os.PathLike[str]", bytes]] = None,
        *,
        server_name: Optional[str] = COORDINATOR_TLS_NAME,
        timeout: float = 60.0,
    ) -> None:
        secure = address.startswith("https://") or ca_cert is not None
        target = address.split("://", 1)[-1].rstrip("/")
        options: List[Tuple[str, Any]] = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        if secure:
            root = None
            if ca_cert is not None:
                root = ca_cert if isinstance(ca_cert, bytes) else Path(ca_cert).read_bytes()
                if server_name:
                    options.append(("grpc.ssl_target_name_override", server_name))
            creds = grpc.ssl_channel_credentials(root_certificates=root)
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self.address = target
        self.timeout = timeout
        #: Metadata sent with every call (the bearer token).
        self.metadata: Tuple[Tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        #: The raw `JobService` stub, for what the wrapper does not cover.
        self.stub = pb_grpc.JobServiceStub(self._channel)  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ calls

    def upload_corpus(self, source: CorpusSource, name: Optional[str] = None) -> str:
        """Uploads a corpus in chunks and returns its id.

        `source` is a JSONL file of `{"id", "title"?, "body", "author"?, "path"?, "modified"?,
        ...}` (other fields become metadata, as the CLI sends them) or an iterable of such
        records; it is read as it is sent. A line that is not a JSON object, or a record
        without an id or with a non-text title/body/author/path, raises ValueError. Records the
        coordinator rejects (empty body, repeated id, ...) are logged as warnings on the
        `labelfleet_client` logger; the rest are stored.
        """
        if isinstance(source, (str, os.PathLike)):
            records: Iterable[Mapping[str, Any]] = _read_jsonl(Path(source))
            name = name if name is not None else str(source)
        else:
            records = source
        documents = (_document(r) for r in records)
        first = [True]

        def chunks() -> Iterator[pb.CorpusChunk]:
            for batch in _batched(documents, DOCUMENTS_PER_CHUNK):
                yield pb.CorpusChunk(corpus_name=(name or "") if first[0] else "", documents=batch)
                first[0] = False
            if first[0]:  # nothing to send: still name the (empty) corpus
                yield pb.CorpusChunk(corpus_name=name or "")

        response: pb.UploadCorpusResponse = self._streaming_request(
            "UploadCorpus", self.stub.UploadCorpus, chunks()
        )
        for r in response.rejected:
            log.warning(
                "rejected by the coordinator: %s %s %s: %s", r.location, r.id, r.field, r.message
            )
        return response.corpus_id

    def submit_labeling(
        self,
        corpus_id: str,
        pairs: Iterable[PairLike],
        model: str = "minilm",
        *,
        task_size: int = 200,
        max_tokens: int = 512,
        name: str = "",
        checkpoint_id: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> str:
        """Submits a labeling job and returns its id.

        `pairs` name documents of `corpus_id` by id; they are streamed in chunks
        (`SubmitJobStream`), so a job of any size is sent in bounded memory. `model` is a
        bundled model name (`minilm`, `smollm2`) or a folder on the workers; `checkpoint_id`
        instead pins the job to a pushed checkpoint. `task_size` is pairs per worker task,
        `max_tokens` the longest model input. A retried submit with the same `idempotency_key`
        returns the first job instead of starting another.
        """
        student = (
            pb.ModelRef(checkpoint_id=checkpoint_id)
            if checkpoint_id
            else pb.ModelRef(local_path=model)
        )
        spec = pb.JobSpec(
            name=name,
            corpus_id=corpus_id,
            kind=pb.JOB_KIND_LABEL,
            student=student,
            task_size=task_size,
            max_tokens=max_tokens,
        )
        header = pb.SubmitJobChunk(
            request=pb.SubmitJobRequest(spec=spec, idempotency_key=idempotency_key or "")
        )
        body = (
            pb.SubmitJobChunk(pairs=batch)
            for batch in _batched((_pair(p) for p in pairs), PAIRS_PER_CHUNK)
        )
        job: pb.Job = self._streaming_request(
            "SubmitJobStream", self.stub.SubmitJobStream, itertools.chain([header], body)
        )
        return job.job_id

    def get(self, job_id: str) -> Job:
        """The job's current snapshot (NOT_FOUND for an unknown id)."""
        return Job.from_proto(
            self._unary("GetJob", self.stub.GetJob, pb.GetJobRequest(job_id=job_id))
        )

    def list(self, state: Optional[JobState] = None, page_size: int = 100) -> List[Job]:
        """Every job (optionally only those in `state`), following the pages."""
        jobs: List[Job] = []
        token = ""
        while True:
            request = pb.ListJobsRequest(
                page_size=page_size, page_token=token, state=pb.JobState.Name(state or 0)
            )
            page = self._unary("ListJobs", self.stub.ListJobs, request)
            jobs.extend(Job.from_proto(j) for j in page.jobs)
            token = page.next_page_token
            if not token:
                return jobs

    def cancel(self, job_id: str, reason: str = "") -> Job:
        """Cancels a job; returns its snapshot after the cancel."""
        request = pb.CancelJobRequest(job_id=job_id, reason=reason)
        return Job.from_proto(self._unary("CancelJob", self.stub.CancelJob, request))

    def watch(self, job_id: str, timeout: Optional[float] = None) -> Iterator[Job]:
        """Snapshots of the job as it progresses (about every half second), ending with the
        first terminal one. Closing the iterator early ends the server's stream."""
        call = self.stub.WatchJob(
            pb.WatchJobRequest(job_id=job_id), metadata=self.metadata, timeout=timeout
        )
        try:
            for message in _rpc_errors("WatchJob", call):
                job = Job.from_proto(message)
                yield job
                if job.done:
                    return
        finally:
            call.cancel()

    def wait(self, job_id: str, timeout: Optional[float] = None) -> Job:
        """Follows the job until it ends and returns its final snapshot if it SUCCEEDED.

        Raises `JobFailed` or `JobCancelled` (with the final snapshot) if it ended otherwise,
        and `WaitTimeout` if it has not ended after `timeout` seconds (None: no limit).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last: Optional[Job] = None
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(job_id, timeout or 0.0, last)
            try:
                for last in self.watch(job_id, timeout=remaining):
                    pass
            except RpcError as e:
                if e.code != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
                raise WaitTimeout(job_id, timeout or 0.0, last) from None
            if last is not None and last.done:
                break
            time.sleep(0.3)  # the stream ended early (a leader change): watch again
        if last.state == JobState.FAILED:
            raise JobFailed(last)
        if last.state == JobState.CANCELLED:
            raise JobCancelled(last)
        return last

    def fetch_labels(self, job_id: str) -> List[Label]:
        """Every label a labeling job has committed, in order (all of them once it has
        ended). A stream broken by UNAVAILABLE is resumed from the count received."""
        job = self.get(job_id)
        labels: List[Label] = []
        for attempt in itertools.count():
            request = pb.FetchResultsRequest(job_id=job_id, stage="labels", offset=len(labels))
            call = self.stub.FetchResults(request, metadata=self.metadata)
            try:
                for batch in _rpc_errors("FetchResults", call):
                    labels.extend(Label.from_proto(m) for m in batch.labels)
                break
            except RpcError as e:
                if e.code != grpc.StatusCode.UNAVAILABLE or attempt >= 5:
                    raise
                time.sleep(0.3)
        committed = next((s.done for s in job.stages if s.stage == "label"), 0)
        if job.done and len(labels) < committed:
            raise RpcError(
                "FetchResults",
                grpc.StatusCode.DATA_LOSS,
                f"received {len(labels)} labels of job {job_id}, it committed {committed}",
            )
        return labels

    # ------------------------------------------------------------------ plumbing

    def _unary(self, method: str, rpc: Callable[..., T], request: Any) -> T:
        try:
            return rpc(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as e:
            raise _typed(method, e) from None

    def _streaming_request(self, method: str, rpc: Callable[..., T], requests: Iterator[Any]) -> T:
        """A client-streaming call whose request iterator may raise (bad input): that error is
        raised, not the CANCELLED/UNKNOWN status gRPC reports for it."""
        raised: List[BaseException] = []

        def guarded() -> Iterator[Any]:
            try:
                yield from requests
            except Exception as e:
                raised.append(e)
                raise

        try:
            return rpc(guarded(), metadata=self.metadata)
        except grpc.RpcError as e:
            if raised:
                raise raised[0] from None
            raise _typed(method, e) from None


# ---------------------------------------------------------------------- helpers


def _typed(method: str, e: grpc.RpcError) -> RpcError:
    code = e.code() if isinstance(e, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = e.details() if isinstance(e, grpc.Call) else str(e)
    return RpcError(method, code, details or "")


def _rpc_errors(method: str, stream: Iterable[T]) -> Iterator[T]:
    try:
        yield from stream
    except grpc.RpcError as e:
        raise _typed(method, e) from None


def _batched(items: Iterable[T], size: int) -> Iterator[List[T]]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _read_jsonl(path: Path) -> Iterator[Mapping[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: malformed JSON: {e}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{n}: not a JSON object")
            yield record


def _json_text(value: Any) -> str:
    """A field value as the coordinator stores it: strings as they are, the rest as JSON."""
    return (
        value
        if isinstance(value, str)
        else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    )


def _document(record: Mapping[str, Any]) -> pb.Document:
    """A corpus record as the CLI sends it: known fields, `filename` as an alias of `path`, an
    integer id as text, and every other field as metadata."""
    raw_id = record.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int, float)):
        raise ValueError(f"corpus record {record!r:.80}: `id` must be a string or a number")

    def text(key: str) -> str:
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"corpus record {raw_id}: `{key}` must be a string")
        return value or ""

    modified = record.get("modified")
    return pb.Document(
        id=str(raw_id),
        title=text("title"),
        body=text("body"),
        author=text("author"),
        path=text("path") or text("filename"),
        modified="" if modified is None else _json_text(modified),
        metadata={k: _json_text(v) for k, v in record.items() if k not in _KNOWN_FIELDS},
    )


def _pair(p: PairLike) -> pb.PairInput:
    if isinstance(p, Pair):
        return pb.PairInput(pair_id=p.pair_id, query_id=p.query_id, query=p.query, doc_id=p.doc_id)
    pair_id = p.get("id", p.get("pair_id"))
    if pair_id is None:
        raise ValueError(f"pair {p!r:.80}: no `id`")
    return pb.PairInput(
        pair_id=str(pair_id),
        query_id=str(p.get("query_id", "")),
        query=p["query"],
        doc_id=str(p["doc_id"]),
    )
