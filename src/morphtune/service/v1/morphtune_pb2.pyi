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
    __slots__ = ("sweep_id", "metric", "mode", "scope")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    metric: str
    mode: str
    scope: str
    def __init__(self, sweep_id: _Optional[str] = ..., metric: _Optional[str] = ..., mode: _Optional[str] = ..., scope: _Optional[str] = ...) -> None: ...

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
