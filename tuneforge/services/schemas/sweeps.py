"""Request and response bodies of /20231130/sweeps, TuneForge's own resource (OCI has no sweeps), in
OCI's style: camelCase, partial objects accepted, None fields omitted in responses.

A search space is {field: {"low": L, "high": H, "log": bool} | {"values": [V, ...]}}, the JSON form of
`tuneforge sweep --param` (tuneforge/sweeps/space.py checks it against the catalog exactly as it checks
a --param); the fixed hyperparameters are a trainingConfig, as in CreateModelDetails.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, model_validator
from pydantic.alias_generators import to_camel

from tuneforge.services.schemas.resources import Name, ObjectStorageDataset, OciModel, Tagged, Text, TrainingConfigIn

MAX_TRIALS = 200  # trials in one sweep, trial 0 (the defaults) included
MAX_CHOICES = 64
Number = StrictInt | StrictFloat
SweepState = Literal["ACCEPTED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "CANCELING", "CANCELED"]


class _Strict(OciModel):
    """A dimension takes exactly its own fields: {"low", "high", "values"} together is an error, not a guess."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class RangeDimension(_Strict):
    low: Number
    high: Number
    log: StrictBool = False


class ChoiceDimension(_Strict):
    values: Annotated[list[Number], Field(min_length=1, max_length=MAX_CHOICES)]


FieldName = Annotated[str, Field(min_length=1, max_length=64)]
SearchSpaceIn = Annotated[dict[FieldName, RangeDimension | ChoiceDimension], Field(max_length=32)]


class CreateSweepDetails(Tagged):
    compartment_id: Name
    base_model_id: Name
    dedicated_ai_cluster_id: Name
    training_dataset: ObjectStorageDataset
    training_config: TrainingConfigIn | None = None  # the hyperparameters every trial fixes (not searched)
    search_space: SearchSpaceIn | None = None  # None: the default space of docs/sweeps.md
    trial_count: Annotated[StrictInt, Field(ge=0, le=MAX_TRIALS)] = 8
    search_strategy: Literal["TPE", "RANDOM", "GRID"] = "TPE"
    pruner: Literal["ASHA", "NONE"] = "ASHA"
    is_learning_curve_enabled: StrictBool = False  # also answer "would more data help?"
    display_name: Name | None = None
    description: Text | None = None

    @model_validator(mode="after")
    def _something_to_do(self):
        if self.trial_count == 0 and not self.is_learning_curve_enabled:
            raise ValueError(
                "trialCount is 0 and isLearningCurveEnabled is false: give trialCount 1 or more, or ask for the learning curve"
            )
        return self


class KeepBestDetails(_Strict):  # its own fields only: a misspelt isDeleteOthersEnabled must not quietly keep every model
    display_name: Name | None = None  # the best model's new name (default: the sweep's)
    is_delete_others_enabled: StrictBool = False  # delete every other trial's model


# ---- responses ------------------------------------------------------------------------------


class SweepTrial(OciModel):
    number: int
    model_id: str | None = None
    is_defaults: bool  # trial 0: the catalog's defaults with the fixed hyperparameters
    state: str  # COMPLETE | PRUNED | RUNNING (training) | QUEUED (its job waits for a unit) | WAITING | FAILED
    params: dict[str, Any]  # the searched hyperparameters
    validation_loss: float | None = None  # COMPLETE: the model's finalLoss; PRUNED: its last evaluation cycle's
    validation_accuracy: float | None = None
    steps_run: int
    steps_planned: int
    is_early_stopped: bool = False
    seconds: float = 0.0
    error: str | None = None


class SweepSteps(OciModel):
    planned: int
    run: int
    saved_by_pruning: int
    saved_by_early_stopping: int
    pruned_share: float


class LearningCurve(OciModel):
    """ "Would more data help?": the default configuration on 25 %, 50 % and 100 % of the training split,
    the fitted curve and the sentence (docs/sweeps.md); the fields past `status` once it has run."""

    status: Literal["ACCEPTED", "IN_PROGRESS", "SUCCEEDED", "FAILED"]
    details: str | None = None  # what it is doing, or why it failed
    model_ids: dict[str, str] | None = None  # "25", "50", "100" (percent of the training split) -> the run's model
    verdict: str | None = None
    fitted: bool | None = None
    formula: str | None = None
    fit: dict[str, float] | None = None
    points: list[dict[str, Any]] | None = None
    predictions: list[dict[str, Any]] | None = None
    search: dict[str, Any] | None = None


class SweepSummary(OciModel):
    id: str
    compartment_id: str
    display_name: str
    lifecycle_state: str
    lifecycle_details: str | None = None
    time_created: str
    time_updated: str | None = None
    base_model_id: str
    dedicated_ai_cluster_id: str
    trial_count: int
    trials_finished: int = 0
    best_model_id: str | None = None
    best_validation_loss: float | None = None
    gain_over_defaults: float | None = None  # relative validation-loss reduction of the best trial over trial 0
    freeform_tags: dict[str, str] | None = None
    defined_tags: dict[str, dict[str, Any]] | None = None


class Sweep(SweepSummary):
    description: str | None = None
    training_dataset: dict[str, Any]
    training_config: dict[str, Any] | None = None  # the fixed hyperparameters, as given
    search_space: dict[str, Any]  # as searched: checked against the catalog, with trial 0's defaults recordable in it
    search_strategy: str
    pruner: str
    is_learning_curve_enabled: bool = False
    notes: list[str] | None = None
    best_trial_number: int | None = None
    defaults_validation_loss: float | None = None
    trials: list[SweepTrial] = Field(default_factory=list)  # ranked: COMPLETE by validation loss, then PRUNED, RUNNING, FAILED
    steps: SweepSteps | None = None
    learning_curve: LearningCurve | None = None
    kept_model_id: str | None = None  # set by keepBest


class SweepCollection(OciModel):
    items: list[SweepSummary]


class KeepBestResult(OciModel):
    model_id: str  # the best trial's model, renamed
    deleted_model_ids: list[str]
    not_deleted: list[dict[str, str]]  # {"modelId", "reason"}: e.g. hosted by an endpoint
