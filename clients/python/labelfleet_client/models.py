"""What the client hands back: plain dataclasses built from the protobuf messages, and the
exceptions it raises."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional, Tuple

import grpc

from .v1 import labelfleet_pb2 as pb


class JobState(enum.IntEnum):
    """A job's state (`labelfleet.v1.JobState`); the last three are terminal."""

    UNSPECIFIED = pb.JOB_STATE_UNSPECIFIED
    PENDING = pb.JOB_STATE_PENDING
    RUNNING = pb.JOB_STATE_RUNNING
    SUCCEEDED = pb.JOB_STATE_SUCCEEDED
    FAILED = pb.JOB_STATE_FAILED
    CANCELLED = pb.JOB_STATE_CANCELLED

    def __str__(self) -> str:
        return self.name

    @property
    def terminal(self) -> bool:
        """True once the job has ended (succeeded, failed or cancelled)."""
        return self >= JobState.SUCCEEDED


@dataclass(frozen=True)
class Pair:
    """A (query, document) pair to grade; `doc_id` names a document of the uploaded corpus."""

    pair_id: str
    query: str
    doc_id: str
    query_id: str = ""


@dataclass(frozen=True)
class StageProgress:
    """Progress of one stage of a job (a labeling job has one, `label`)."""

    stage: str
    done: int
    total: int
    failed: int
    items_per_second: float
    eta_seconds: float

    @classmethod
    def from_proto(cls, m: pb.StageProgress) -> "StageProgress":
        return cls(m.stage, m.done, m.total, m.failed, m.items_per_second, m.eta_seconds)


@dataclass(frozen=True)
class Job:
    """A snapshot of a job. `raw` is the `labelfleet.v1.Job` message it was read from (spec
    included)."""

    job_id: str
    state: JobState
    name: str
    corpus_id: str
    stages: Tuple[StageProgress, ...]
    error: str
    checkpoint_id: str
    created_unix_ms: int
    updated_unix_ms: int
    raw: pb.Job = field(repr=False, compare=False)

    @property
    def done(self) -> bool:
        """True once the job has ended."""
        return self.state.terminal

    @classmethod
    def from_proto(cls, m: pb.Job) -> "Job":
        return cls(
            job_id=m.job_id,
            state=JobState(m.state),
            name=m.spec.name,
            corpus_id=m.spec.corpus_id,
            stages=tuple(StageProgress.from_proto(s) for s in m.stages),
            error=m.error,
            checkpoint_id=m.checkpoint_id,
            created_unix_ms=m.created_unix_ms,
            updated_unix_ms=m.updated_unix_ms,
            raw=m,
        )


@dataclass(frozen=True)
class Label:
    """The grade of one pair: `grade` (0..3) is the most likely class, `distribution` the
    probability of each class, `expected_grade` its mean; the rest is provenance."""

    pair_id: str
    query_id: str
    doc_id: str
    grade: int
    expected_grade: float
    distribution: Tuple[float, ...]
    model: str
    checkpoint_id: str
    prompt_version: str

    @classmethod
    def from_proto(cls, m: pb.Label) -> "Label":
        return cls(
            pair_id=m.pair_id,
            query_id=m.query_id,
            doc_id=m.doc_id,
            grade=m.grade,
            expected_grade=m.expected_grade,
            distribution=tuple(m.distribution),
            model=m.model,
            checkpoint_id=m.checkpoint_id,
            prompt_version=m.prompt_version,
        )


class LabelfleetError(Exception):
    """Base of every error this client raises."""


class RpcError(LabelfleetError):
    """The coordinator refused a call, or it could not be reached: `code` is the gRPC status
    code (e.g. `grpc.StatusCode.NOT_FOUND`), `message` the coordinator's explanation."""

    def __init__(self, method: str, code: grpc.StatusCode, message: str):
        super().__init__(f"{method}: {code.name}: {message}")
        self.method = method
        self.code = code
        self.message = message


class JobError(LabelfleetError):
    """A job ended without succeeding; `job` is its final snapshot."""

    def __init__(self, job: Job):
        detail = f": {job.error}" if job.error else ""
        super().__init__(f"job {job.job_id} ended {job.state.name}{detail}")
        self.job = job


class JobFailed(JobError):
    """The job ended FAILED (`job.error` says why)."""


class JobCancelled(JobError):
    """The job ended CANCELLED."""


class WaitTimeout(LabelfleetError, TimeoutError):
    """`Client.wait` gave up before the job ended; `job` is the last snapshot seen, if any."""

    def __init__(self, job_id: str, timeout: float, job: Optional[Job]):
        state = job.state.name if job else "unknown"
        super().__init__(f"job {job_id} still {state} after {timeout:g} s")
        self.job_id = job_id
        self.job = job
