from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListSweepsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSweepsResponse(_message.Message):
    __slots__ = ("sweep_ids",)
    SWEEP_IDS_FIELD_NUMBER: _ClassVar[int]
    sweep_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sweep_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetSweepRequest(_message.Message):
    __slots__ = ("sweep_id",)
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    def __init__(self, sweep_id: _Optional[str] = ...) -> None: ...

class Objective(_message.Message):
    __slots__ = ("metric", "mode")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    metric: str
    mode: str
    def __init__(self, metric: _Optional[str] = ..., mode: _Optional[str] = ...) -> None: ...

class Sweep(_message.Message):
    __slots__ = ("sweep_id", "name", "status", "objective", "created", "manifest_json", "trial_counts")
    class TrialCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    TRIAL_COUNTS_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    name: str
    status: str
    objective: Objective
    created: str
    manifest_json: str
    trial_counts: _containers.ScalarMap[str, int]
    def __init__(self, sweep_id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[str] = ..., objective: _Optional[_Union[Objective, _Mapping]] = ..., created: _Optional[str] = ..., manifest_json: _Optional[str] = ..., trial_counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GetBestConfigRequest(_message.Message):
    __slots__ = ("sweep_id", "metric", "mode", "scope", "constraints")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    metric: str
    mode: str
    scope: str
    constraints: _containers.RepeatedCompositeFieldContainer[Condition]
    def __init__(self, sweep_id: _Optional[str] = ..., metric: _Optional[str] = ..., mode: _Optional[str] = ..., scope: _Optional[str] = ..., constraints: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ...) -> None: ...

class BestConfig(_message.Message):
    __slots__ = ("sweep_id", "trial_id", "iteration", "metric", "mode", "value", "config_json", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    trial_id: str
    iteration: int
    metric: str
    mode: str
    value: float
    config_json: str
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, sweep_id: _Optional[str] = ..., trial_id: _Optional[str] = ..., iteration: _Optional[int] = ..., metric: _Optional[str] = ..., mode: _Optional[str] = ..., value: _Optional[float] = ..., config_json: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("column", "op", "number", "text", "numbers", "texts")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    column: str
    op: str
    number: float
    text: str
    numbers: _containers.RepeatedScalarFieldContainer[float]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, column: _Optional[str] = ..., op: _Optional[str] = ..., number: _Optional[float] = ..., text: _Optional[str] = ..., numbers: _Optional[_Iterable[float]] = ..., texts: _Optional[_Iterable[str]] = ...) -> None: ...

class ResultRow(_message.Message):
    __slots__ = ("sweep_id", "trial_id", "iteration", "timestamp", "written_at", "status", "state", "config_json", "metrics_json", "numbers", "texts", "node_id")
    class NumbersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TextsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    trial_id: str
    iteration: int
    timestamp: float
    written_at: float
    status: str
    state: str
    config_json: str
    metrics_json: str
    numbers: _containers.ScalarMap[str, float]
    texts: _containers.ScalarMap[str, str]
    node_id: str
    def __init__(self, sweep_id: _Optional[str] = ..., trial_id: _Optional[str] = ..., iteration: _Optional[int] = ..., timestamp: _Optional[float] = ..., written_at: _Optional[float] = ..., status: _Optional[str] = ..., state: _Optional[str] = ..., config_json: _Optional[str] = ..., metrics_json: _Optional[str] = ..., numbers: _Optional[_Mapping[str, float]] = ..., texts: _Optional[_Mapping[str, str]] = ..., node_id: _Optional[str] = ...) -> None: ...

class ListTrialsRequest(_message.Message):
    __slots__ = ("sweep_id", "filter", "order_by", "descending", "page_size", "page_token", "scope")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    DESCENDING_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    filter: _containers.RepeatedCompositeFieldContainer[Condition]
    order_by: str
    descending: bool
    page_size: int
    page_token: str
    scope: str
    def __init__(self, sweep_id: _Optional[str] = ..., filter: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., order_by: _Optional[str] = ..., descending: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., scope: _Optional[str] = ...) -> None: ...

class ListTrialsResponse(_message.Message):
    __slots__ = ("rows", "next_page_token", "total_size")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[ResultRow]
    next_page_token: str
    total_size: int
    def __init__(self, rows: _Optional[_Iterable[_Union[ResultRow, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetParetoFrontRequest(_message.Message):
    __slots__ = ("sweep_id", "objectives", "scope", "constraints", "reference")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    objectives: _containers.RepeatedCompositeFieldContainer[Objective]
    scope: str
    constraints: _containers.RepeatedCompositeFieldContainer[Condition]
    reference: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, sweep_id: _Optional[str] = ..., objectives: _Optional[_Iterable[_Union[Objective, _Mapping]]] = ..., scope: _Optional[str] = ..., constraints: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., reference: _Optional[_Iterable[float]] = ...) -> None: ...

class ParetoPoint(_message.Message):
    __slots__ = ("trial_id", "iteration", "values", "config_json", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    iteration: int
    values: _containers.RepeatedScalarFieldContainer[float]
    config_json: str
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, trial_id: _Optional[str] = ..., iteration: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ..., config_json: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ParetoFront(_message.Message):
    __slots__ = ("sweep_id", "objectives", "points", "reference", "hypervolume", "candidates")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    HYPERVOLUME_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    objectives: _containers.RepeatedCompositeFieldContainer[Objective]
    points: _containers.RepeatedCompositeFieldContainer[ParetoPoint]
    reference: _containers.RepeatedScalarFieldContainer[float]
    hypervolume: float
    candidates: int
    def __init__(self, sweep_id: _Optional[str] = ..., objectives: _Optional[_Iterable[_Union[Objective, _Mapping]]] = ..., points: _Optional[_Iterable[_Union[ParetoPoint, _Mapping]]] = ..., reference: _Optional[_Iterable[float]] = ..., hypervolume: _Optional[float] = ..., candidates: _Optional[int] = ...) -> None: ...

class WatchSweepRequest(_message.Message):
    __slots__ = ("sweep_id", "resume_token", "trial_id", "from_end")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_END_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    resume_token: str
    trial_id: str
    from_end: bool
    def __init__(self, sweep_id: _Optional[str] = ..., resume_token: _Optional[str] = ..., trial_id: _Optional[str] = ..., from_end: _Optional[bool] = ...) -> None: ...

class WatchSweepResponse(_message.Message):
    __slots__ = ("row", "resume_token")
    ROW_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    row: ResultRow
    resume_token: str
    def __init__(self, row: _Optional[_Union[ResultRow, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class SubmitSweepRequest(_message.Message):
    __slots__ = ("spec_yaml", "sweep_id")
    SPEC_YAML_FIELD_NUMBER: _ClassVar[int]
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    spec_yaml: str
    sweep_id: str
    def __init__(self, spec_yaml: _Optional[str] = ..., sweep_id: _Optional[str] = ...) -> None: ...

class SubmitSweepResponse(_message.Message):
    __slots__ = ("job_id", "sweep_id", "status")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    sweep_id: str
    status: str
    def __init__(self, job_id: _Optional[str] = ..., sweep_id: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class CancelSweepRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelSweepResponse(_message.Message):
    __slots__ = ("job_id", "stopped", "status")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    stopped: bool
    status: str
    def __init__(self, job_id: _Optional[str] = ..., stopped: _Optional[bool] = ..., status: _Optional[str] = ...) -> None: ...
