"""labelfleet_client: a Python client of labelfleet's gRPC API (`labelfleet.v1.JobService`).

    from labelfleet_client import Client

    with Client("127.0.0.1:7070") as c:
        corpus = c.upload_corpus("corpus.jsonl")
        job_id = c.submit_labeling(corpus, [{"id": "p1", "query": "wing flutter", "doc_id": "12"}])
        c.wait(job_id, timeout=600)
        labels = c.fetch_labels(job_id)

The raw generated stubs are in `labelfleet_client.v1`.
"""

from .client import COORDINATOR_TLS_NAME, Client
from .models import (
    Job,
    JobCancelled,
    JobError,
    JobFailed,
    JobState,
    Label,
    LabelfleetError,
    Pair,
    RpcError,
    StageProgress,
    WaitTimeout,
)

__version__ = "0.1.0"

__all__ = [
    "COORDINATOR_TLS_NAME",
    "Client",
    "Job",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobState",
    "Label",
    "LabelfleetError",
    "Pair",
    "RpcError",
    "StageProgress",
    "WaitTimeout",
]
