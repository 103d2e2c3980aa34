from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RankSampling(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RANK_SAMPLING_UNSPECIFIED: _ClassVar[RankSampling]
    RANK_SAMPLING_TOP: _ClassVar[RankSampling]
    RANK_SAMPLING_UNIFORM: _ClassVar[RankSampling]
    RANK_SAMPLING_STRATIFIED: _ClassVar[RankSampling]

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_KIND_UNSPECIFIED: _ClassVar[JobKind]
    JOB_KIND_LABEL: _ClassVar[JobKind]
    JOB_KIND_SYNTHESIZE: _ClassVar[JobKind]
    JOB_KIND_CORPUS: _ClassVar[JobKind]
    JOB_KIND_SEARCH: _ClassVar[JobKind]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_PENDING: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class TaskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_KIND_UNSPECIFIED: _ClassVar[TaskKind]
    TASK_KIND_SYNTHESIZE_QUERIES: _ClassVar[TaskKind]
    TASK_KIND_GRADE: _ClassVar[TaskKind]
    TASK_KIND_SEARCH: _ClassVar[TaskKind]
RANK_SAMPLING_UNSPECIFIED: RankSampling
RANK_SAMPLING_TOP: RankSampling
RANK_SAMPLING_UNIFORM: RankSampling
RANK_SAMPLING_STRATIFIED: RankSampling
JOB_KIND_UNSPECIFIED: JobKind
JOB_KIND_LABEL: JobKind
JOB_KIND_SYNTHESIZE: JobKind
JOB_KIND_CORPUS: JobKind
JOB_KIND_SEARCH: JobKind
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_PENDING: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
TASK_KIND_UNSPECIFIED: TaskKind
TASK_KIND_SYNTHESIZE_QUERIES: TaskKind
TASK_KIND_GRADE: TaskKind
TASK_KIND_SEARCH: TaskKind

class ModelRef(_message.Message):
    __slots__ = ("local_path", "checkpoint_id", "openai", "committee")
    LOCAL_PATH_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    OPENAI_FIELD_NUMBER: _ClassVar[int]
    COMMITTEE_FIELD_NUMBER: _ClassVar[int]
    local_path: str
    checkpoint_id: str
    openai: OpenAiEndpoint
    committee: Committee
    def __init__(self, local_path: _Optional[str] = ..., checkpoint_id: _Optional[str] = ..., openai: _Optional[_Union[OpenAiEndpoint, _Mapping]] = ..., committee: _Optional[_Union[Committee, _Mapping]] = ...) -> None: ...

class Committee(_message.Message):
    __slots__ = ("judges",)
    JUDGES_FIELD_NUMBER: _ClassVar[int]
    judges: _containers.RepeatedCompositeFieldContainer[Judge]
    def __init__(self, judges: _Optional[_Iterable[_Union[Judge, _Mapping]]] = ...) -> None: ...

class Judge(_message.Message):
    __slots__ = ("name", "weight", "similarity", "local_path")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PATH_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    similarity: SimilarityJudge
    local_path: str
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ..., similarity: _Optional[_Union[SimilarityJudge, _Mapping]] = ..., local_path: _Optional[str] = ...) -> None: ...

class SimilarityJudge(_message.Message):
    __slots__ = ("encoder", "corpus_id", "feedback_depth", "feedback_weight")
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    CORPUS_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_DEPTH_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    encoder: str
    corpus_id: str
    feedback_depth: int
    feedback_weight: float
    def __init__(self, encoder: _Optional[str] = ..., corpus_id: _Optional[str] = ..., feedback_depth: _Optional[int] = ..., feedback_weight: _Optional[float] = ...) -> None: ...

class OpenAiEndpoint(_message.Message):
    __slots__ = ("base_url", "model", "api_key_env", "requests_per_second", "usd_per_million_input_tokens", "usd_per_million_output_tokens", "tokens_per_minute")
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ENV_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    USD_PER_MILLION_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    USD_PER_MILLION_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    base_url: str
    model: str
    api_key_env: str
    requests_per_second: float
    usd_per_million_input_tokens: float
    usd_per_million_output_tokens: float
    tokens_per_minute: float
    def __init__(self, base_url: _Optional[str] = ..., model: _Optional[str] = ..., api_key_env: _Optional[str] = ..., requests_per_second: _Optional[float] = ..., usd_per_million_input_tokens: _Optional[float] = ..., usd_per_million_output_tokens: _Optional[float] = ..., tokens_per_minute: _Optional[float] = ...) -> None: ...

class ApiUsage(_message.Message):
    __slots__ = ("requests", "retries", "failures", "prompt_tokens", "completion_tokens", "cost_usd")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    requests: int
    retries: int
    failures: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    def __init__(self, requests: _Optional[int] = ..., retries: _Optional[int] = ..., failures: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("id", "title", "body", "author", "path", "modified", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    body: str
    author: str
    path: str
    modified: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., body: _Optional[str] = ..., author: _Optional[str] = ..., path: _Optional[str] = ..., modified: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PairInput(_message.Message):
    __slots__ = ("pair_id", "query_id", "query", "doc_id", "inline")
    PAIR_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    pair_id: str
    query_id: str
    query: str
    doc_id: str
    inline: Document
    def __init__(self, pair_id: _Optional[str] = ..., query_id: _Optional[str] = ..., query: _Optional[str] = ..., doc_id: _Optional[str] = ..., inline: _Optional[_Union[Document, _Mapping]] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("pair_id", "query_id", "doc_id", "grade", "expected_grade", "distribution", "model", "checkpoint_id", "prompt_version", "judges")
    PAIR_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    GRADE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_GRADE_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    JUDGES_FIELD_NUMBER: _ClassVar[int]
    pair_id: str
    query_id: str
    doc_id: str
    grade: int
    expected_grade: float
    distribution: _containers.RepeatedScalarFieldContainer[float]
    model: str
    checkpoint_id: str
    prompt_version: str
    judges: _containers.RepeatedCompositeFieldContainer[JudgeGrade]
    def __init__(self, pair_id: _Optional[str] = ..., query_id: _Optional[str] = ..., doc_id: _Optional[str] = ..., grade: _Optional[int] = ..., expected_grade: _Optional[float] = ..., distribution: _Optional[_Iterable[float]] = ..., model: _Optional[str] = ..., checkpoint_id: _Optional[str] = ..., prompt_version: _Optional[str] = ..., judges: _Optional[_Iterable[_Union[JudgeGrade, _Mapping]]] = ...) -> None: ...

class JudgeGrade(_message.Message):
    __slots__ = ("judge", "model", "distribution")
    JUDGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    judge: str
    model: str
    distribution: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, judge: _Optional[str] = ..., model: _Optional[str] = ..., distribution: _Optional[_Iterable[float]] = ...) -> None: ...

class SyntheticQuery(_message.Message):
    __slots__ = ("query_id", "doc_id", "text", "prompt_version", "metadata_field")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    doc_id: str
    text: str
    prompt_version: str
    metadata_field: str
    def __init__(self, query_id: _Optional[str] = ..., doc_id: _Optional[str] = ..., text: _Optional[str] = ..., prompt_version: _Optional[str] = ..., metadata_field: _Optional[str] = ...) -> None: ...

class QueryHits(_message.Message):
    __slots__ = ("query_id", "shard", "hits")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    shard: int
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    def __init__(self, query_id: _Optional[str] = ..., shard: _Optional[int] = ..., hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("doc_id", "score")
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    doc_id: str
    score: float
    def __init__(self, doc_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class QueryInput(_message.Message):
    __slots__ = ("query_id", "text")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    text: str
    def __init__(self, query_id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class HumanJudgment(_message.Message):
    __slots__ = ("query_id", "doc_id", "grade")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    GRADE_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    doc_id: str
    grade: int
    def __init__(self, query_id: _Optional[str] = ..., doc_id: _Optional[str] = ..., grade: _Optional[int] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("name", "corpus_id", "seed_documents", "queries_per_document", "query_prompt_version", "bm25_depth", "negatives_per_query", "rank_sampling", "teacher", "grade_prompt_version", "grade_labels", "student", "epochs", "learning_rate", "heldout_fraction", "label_pairs", "label_candidates_per_query", "task_size", "max_task_attempts", "seed", "max_tokens", "metadata_queries_per_document", "kind", "consistency_depth", "student_layers", "student_max_tokens", "label_queries", "label_queries_sample", "human_judgments", "committee")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CORPUS_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    QUERIES_PER_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    QUERY_PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    BM25_DEPTH_FIELD_NUMBER: _ClassVar[int]
    NEGATIVES_PER_QUERY_FIELD_NUMBER: _ClassVar[int]
    RANK_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    GRADE_PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    GRADE_LABELS_FIELD_NUMBER: _ClassVar[int]
    STUDENT_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    LABEL_PAIRS_FIELD_NUMBER: _ClassVar[int]
    LABEL_CANDIDATES_PER_QUERY_FIELD_NUMBER: _ClassVar[int]
    TASK_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_TASK_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    METADATA_QUERIES_PER_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_DEPTH_FIELD_NUMBER: _ClassVar[int]
    STUDENT_LAYERS_FIELD_NUMBER: _ClassVar[int]
    STUDENT_MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LABEL_QUERIES_FIELD_NUMBER: _ClassVar[int]
    LABEL_QUERIES_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    HUMAN_JUDGMENTS_FIELD_NUMBER: _ClassVar[int]
    COMMITTEE_FIELD_NUMBER: _ClassVar[int]
    name: str
    corpus_id: str
    seed_documents: int
    queries_per_document: int
    query_prompt_version: str
    bm25_depth: int
    negatives_per_query: int
    rank_sampling: RankSampling
    teacher: ModelRef
    grade_prompt_version: str
    grade_labels: _containers.RepeatedScalarFieldContainer[str]
    student: ModelRef
    epochs: int
    learning_rate: float
    heldout_fraction: float
    label_pairs: _containers.RepeatedCompositeFieldContainer[PairInput]
    label_candidates_per_query: int
    task_size: int
    max_task_attempts: int
    seed: int
    max_tokens: int
    metadata_queries_per_document: int
    kind: JobKind
    consistency_depth: int
    student_layers: int
    student_max_tokens: int
    label_queries: _containers.RepeatedCompositeFieldContainer[QueryInput]
    label_queries_sample: int
    human_judgments: _containers.RepeatedCompositeFieldContainer[HumanJudgment]
    committee: Committee
    def __init__(self, name: _Optional[str] = ..., corpus_id: _Optional[str] = ..., seed_documents: _Optional[int] = ..., queries_per_document: _Optional[int] = ..., query_prompt_version: _Optional[str] = ..., bm25_depth: _Optional[int] = ..., negatives_per_query: _Optional[int] = ..., rank_sampling: _Optional[_Union[RankSampling, str]] = ..., teacher: _Optional[_Union[ModelRef, _Mapping]] = ..., grade_prompt_version: _Optional[str] = ..., grade_labels: _Optional[_Iterable[str]] = ..., student: _Optional[_Union[ModelRef, _Mapping]] = ..., epochs: _Optional[int] = ..., learning_rate: _Optional[float] = ..., heldout_fraction: _Optional[float] = ..., label_pairs: _Optional[_Iterable[_Union[PairInput, _Mapping]]] = ..., label_candidates_per_query: _Optional[int] = ..., task_size: _Optional[int] = ..., max_task_attempts: _Optional[int] = ..., seed: _Optional[int] = ..., max_tokens: _Optional[int] = ..., metadata_queries_per_document: _Optional[int] = ..., kind: _Optional[_Union[JobKind, str]] = ..., consistency_depth: _Optional[int] = ..., student_layers: _Optional[int] = ..., student_max_tokens: _Optional[int] = ..., label_queries: _Optional[_Iterable[_Union[QueryInput, _Mapping]]] = ..., label_queries_sample: _Optional[int] = ..., human_judgments: _Optional[_Iterable[_Union[HumanJudgment, _Mapping]]] = ..., committee: _Optional[_Union[Committee, _Mapping]] = ...) -> None: ...

class StageProgress(_message.Message):
    __slots__ = ("stage", "done", "total", "failed", "items_per_second", "eta_seconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    done: int
    total: int
    failed: int
    items_per_second: float
    eta_seconds: float
    def __init__(self, stage: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., failed: _Optional[int] = ..., items_per_second: _Optional[float] = ..., eta_seconds: _Optional[float] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "spec", "state", "stages", "checkpoint_id", "error", "created_unix_ms", "updated_unix_ms", "stage", "artifacts")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    spec: JobSpec
    state: JobState
    stages: _containers.RepeatedCompositeFieldContainer[StageProgress]
    checkpoint_id: str
    error: str
    created_unix_ms: int
    updated_unix_ms: int
    stage: str
    artifacts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., stages: _Optional[_Iterable[_Union[StageProgress, _Mapping]]] = ..., checkpoint_id: _Optional[str] = ..., error: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., updated_unix_ms: _Optional[int] = ..., stage: _Optional[str] = ..., artifacts: _Optional[_Iterable[str]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec", "idempotency_key")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    idempotency_key: str
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SubmitJobChunk(_message.Message):
    __slots__ = ("request", "pairs")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    request: SubmitJobRequest
    pairs: _containers.RepeatedCompositeFieldContainer[PairInput]
    def __init__(self, request: _Optional[_Union[SubmitJobRequest, _Mapping]] = ..., pairs: _Optional[_Iterable[_Union[PairInput, _Mapping]]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: JobState
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class FetchResultsRequest(_message.Message):
    __slots__ = ("job_id", "stage", "offset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    stage: str
    offset: int
    def __init__(self, job_id: _Optional[str] = ..., stage: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class ResultBatch(_message.Message):
    __slots__ = ("labels", "queries", "offset", "hits", "api_usage")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    API_USAGE_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    queries: _containers.RepeatedCompositeFieldContainer[SyntheticQuery]
    offset: int
    hits: _containers.RepeatedCompositeFieldContainer[QueryHits]
    api_usage: ApiUsage
    def __init__(self, labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., queries: _Optional[_Iterable[_Union[SyntheticQuery, _Mapping]]] = ..., offset: _Optional[int] = ..., hits: _Optional[_Iterable[_Union[QueryHits, _Mapping]]] = ..., api_usage: _Optional[_Union[ApiUsage, _Mapping]] = ...) -> None: ...

class FetchArtifactRequest(_message.Message):
    __slots__ = ("job_id", "name")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class CorpusChunk(_message.Message):
    __slots__ = ("corpus_name", "documents")
    CORPUS_NAME_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    corpus_name: str
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    def __init__(self, corpus_name: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("location", "id", "field", "message")
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    location: str
    id: str
    field: str
    message: str
    def __init__(self, location: _Optional[str] = ..., id: _Optional[str] = ..., field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class UploadCorpusResponse(_message.Message):
    __slots__ = ("corpus_id", "accepted", "rejected")
    CORPUS_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    corpus_id: str
    accepted: int
    rejected: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, corpus_id: _Optional[str] = ..., accepted: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "attempt", "job_id", "kind", "model", "prompt_version", "grade_labels", "documents", "pairs", "queries_per_document", "seed", "lease_deadline_unix_ms", "fencing_token", "max_tokens", "metadata_queries_per_document", "corpus_id", "shard", "queries", "depth", "lease_token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    GRADE_LABELS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    QUERIES_PER_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LEASE_DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    METADATA_QUERIES_PER_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    CORPUS_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    job_id: str
    kind: TaskKind
    model: ModelRef
    prompt_version: str
    grade_labels: _containers.RepeatedScalarFieldContainer[str]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    pairs: _containers.RepeatedCompositeFieldContainer[PairInput]
    queries_per_document: int
    seed: int
    lease_deadline_unix_ms: int
    fencing_token: int
    max_tokens: int
    metadata_queries_per_document: int
    corpus_id: str
    shard: int
    queries: _containers.RepeatedCompositeFieldContainer[QueryInput]
    depth: int
    lease_token: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., job_id: _Optional[str] = ..., kind: _Optional[_Union[TaskKind, str]] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ..., prompt_version: _Optional[str] = ..., grade_labels: _Optional[_Iterable[str]] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., pairs: _Optional[_Iterable[_Union[PairInput, _Mapping]]] = ..., queries_per_document: _Optional[int] = ..., seed: _Optional[int] = ..., lease_deadline_unix_ms: _Optional[int] = ..., fencing_token: _Optional[int] = ..., max_tokens: _Optional[int] = ..., metadata_queries_per_document: _Optional[int] = ..., corpus_id: _Optional[str] = ..., shard: _Optional[int] = ..., queries: _Optional[_Iterable[_Union[QueryInput, _Mapping]]] = ..., depth: _Optional[int] = ..., lease_token: _Optional[str] = ...) -> None: ...

class RegisterWorkerRequest(_message.Message):
    __slots__ = ("worker_id", "control_address", "device", "capacity", "checkpoints")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    control_address: str
    device: str
    capacity: int
    checkpoints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, worker_id: _Optional[str] = ..., control_address: _Optional[str] = ..., device: _Optional[str] = ..., capacity: _Optional[int] = ..., checkpoints: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterWorkerResponse(_message.Message):
    __slots__ = ("heartbeat_interval_ms", "lease_ttl_ms")
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_MS_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_ms: int
    lease_ttl_ms: int
    def __init__(self, heartbeat_interval_ms: _Optional[int] = ..., lease_ttl_ms: _Optional[int] = ...) -> None: ...

class LeaseTasksRequest(_message.Message):
    __slots__ = ("worker_id", "max_tasks", "kinds")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_TASKS_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    max_tasks: int
    kinds: _containers.RepeatedScalarFieldContainer[TaskKind]
    def __init__(self, worker_id: _Optional[str] = ..., max_tasks: _Optional[int] = ..., kinds: _Optional[_Iterable[_Union[TaskKind, str]]] = ...) -> None: ...

class LeaseTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ...) -> None: ...

class TaskLease(_message.Message):
    __slots__ = ("task_id", "attempt", "lease_token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    lease_token: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., lease_token: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("worker_id", "leases", "pairs_per_second")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    PAIRS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    leases: _containers.RepeatedCompositeFieldContainer[TaskLease]
    pairs_per_second: float
    def __init__(self, worker_id: _Optional[str] = ..., leases: _Optional[_Iterable[_Union[TaskLease, _Mapping]]] = ..., pairs_per_second: _Optional[float] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("extended", "revoked", "drain")
    EXTENDED_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    extended: _containers.RepeatedCompositeFieldContainer[TaskLease]
    revoked: _containers.RepeatedCompositeFieldContainer[TaskLease]
    drain: bool
    def __init__(self, extended: _Optional[_Iterable[_Union[TaskLease, _Mapping]]] = ..., revoked: _Optional[_Iterable[_Union[TaskLease, _Mapping]]] = ..., drain: bool = ...) -> None: ...

class CompleteTaskRequest(_message.Message):
    __slots__ = ("worker_id", "task_id", "attempt", "fencing_token", "labels", "queries", "seconds", "hits", "lease_token", "api_usage")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    API_USAGE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    task_id: str
    attempt: int
    fencing_token: int
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    queries: _containers.RepeatedCompositeFieldContainer[SyntheticQuery]
    seconds: float
    hits: _containers.RepeatedCompositeFieldContainer[QueryHits]
    lease_token: str
    api_usage: ApiUsage
    def __init__(self, worker_id: _Optional[str] = ..., task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., fencing_token: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., queries: _Optional[_Iterable[_Union[SyntheticQuery, _Mapping]]] = ..., seconds: _Optional[float] = ..., hits: _Optional[_Iterable[_Union[QueryHits, _Mapping]]] = ..., lease_token: _Optional[str] = ..., api_usage: _Optional[_Union[ApiUsage, _Mapping]] = ...) -> None: ...

class CompleteTaskResponse(_message.Message):
    __slots__ = ("committed", "duplicate")
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    committed: bool
    duplicate: bool
    def __init__(self, committed: bool = ..., duplicate: bool = ...) -> None: ...

class FailTaskRequest(_message.Message):
    __slots__ = ("worker_id", "task_id", "attempt", "reason", "retryable", "lease_token")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    task_id: str
    attempt: int
    reason: str
    retryable: bool
    lease_token: str
    def __init__(self, worker_id: _Optional[str] = ..., task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ..., retryable: bool = ..., lease_token: _Optional[str] = ...) -> None: ...

class FailTaskResponse(_message.Message):
    __slots__ = ("will_retry",)
    WILL_RETRY_FIELD_NUMBER: _ClassVar[int]
    will_retry: bool
    def __init__(self, will_retry: bool = ...) -> None: ...

class CheckpointChunk(_message.Message):
    __slots__ = ("checkpoint_id", "file", "offset", "data", "sha256", "last")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    file: str
    offset: int
    data: bytes
    sha256: str
    last: bool
    def __init__(self, checkpoint_id: _Optional[str] = ..., file: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., sha256: _Optional[str] = ..., last: bool = ...) -> None: ...

class PushCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint_id", "bytes", "verified")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    bytes: int
    verified: bool
    def __init__(self, checkpoint_id: _Optional[str] = ..., bytes: _Optional[int] = ..., verified: bool = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("grace_ms",)
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    grace_ms: int
    def __init__(self, grace_ms: _Optional[int] = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("tasks_in_flight",)
    TASKS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    tasks_in_flight: int
    def __init__(self, tasks_in_flight: _Optional[int] = ...) -> None: ...

class DistillRequest(_message.Message):
    __slots__ = ("job_id", "base", "dataset", "epochs", "learning_rate", "heldout_fraction", "seed", "keep_layers", "batch_size", "max_tokens")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    KEEP_LAYERS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    base: ModelRef
    dataset: str
    epochs: int
    learning_rate: float
    heldout_fraction: float
    seed: int
    keep_layers: int
    batch_size: int
    max_tokens: int
    def __init__(self, job_id: _Optional[str] = ..., base: _Optional[_Union[ModelRef, _Mapping]] = ..., dataset: _Optional[str] = ..., epochs: _Optional[int] = ..., learning_rate: _Optional[float] = ..., heldout_fraction: _Optional[float] = ..., seed: _Optional[int] = ..., keep_layers: _Optional[int] = ..., batch_size: _Optional[int] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class TrainingRun(_message.Message):
    __slots__ = ("run_id", "job_id", "state", "checkpoint_id", "heldout_agreement_with_teacher", "majority_baseline", "error", "heldout_expected_grade_mae", "majority_expected_grade_mae")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_AGREEMENT_WITH_TEACHER_FIELD_NUMBER: _ClassVar[int]
    MAJORITY_BASELINE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_EXPECTED_GRADE_MAE_FIELD_NUMBER: _ClassVar[int]
    MAJORITY_EXPECTED_GRADE_MAE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    job_id: str
    state: str
    checkpoint_id: str
    heldout_agreement_with_teacher: float
    majority_baseline: float
    error: str
    heldout_expected_grade_mae: float
    majority_expected_grade_mae: float
    def __init__(self, run_id: _Optional[str] = ..., job_id: _Optional[str] = ..., state: _Optional[str] = ..., checkpoint_id: _Optional[str] = ..., heldout_agreement_with_teacher: _Optional[float] = ..., majority_baseline: _Optional[float] = ..., error: _Optional[str] = ..., heldout_expected_grade_mae: _Optional[float] = ..., majority_expected_grade_mae: _Optional[float] = ...) -> None: ...

class TrainingMetrics(_message.Message):
    __slots__ = ("run_id", "step", "total_steps", "loss", "learning_rate")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    total_steps: int
    loss: float
    learning_rate: float
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., learning_rate: _Optional[float] = ...) -> None: ...

class GetTrainingRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...
