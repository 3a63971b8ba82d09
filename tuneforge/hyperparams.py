"""Training configs: OCI's `TrainingConfig` wire shape, defaults and validation from the catalog,
and the step-count rule that `plan` reports and the engine runs."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuneforge import catalog, data
from tuneforge.catalog import BaseModelSpec, ParamSpec
from tuneforge.engine.eval_plan import EvalPlan
from tuneforge.errors import InvalidParameter

# OCI's TrainingConfig fields in wire order, their Python types and snake_case names: all derived
# from the catalog (models.toml), the one place that names them.
API_FIELDS: tuple[str, ...] = tuple(catalog.fields())
FIELD_TYPES: dict[str, type] = {name: f.python_type for name, f in catalog.fields().items()}
SNAKE_NAMES: dict[str, str] = {name: re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() for name in API_FIELDS}
# OCI's integer fields are 32-bit (the SDK's int, Java's Integer): anything larger is refused.
INT32_MAX = 2**31 - 1
# A plan longer than this is refused: at a second per step it would train for 11 days, and a
# typo such as totalTrainingEpochs=10000000 should fail at once, not after a week.
MAX_TOTAL_TRAINING_STEPS = 1_000_000
METHOD_NAMES = {"LORA": "LoRA", "TFEW": "T-Few"}
DPO_TRAINING_CONFIG = catalog.DPO_TRAINING_CONFIG


def config_type_of(method: str) -> str | None:
    """The trainingConfigType a training method asks for: DPO_TRAINING_CONFIG for data.DPO, None (the base
    model's own) for data.SUPERVISED; as `trainingConfigType` of resolve_training_config's overrides."""
    return DPO_TRAINING_CONFIG if method == data.DPO else None


@dataclass(frozen=True)
class TrainingConfig:
    training_config_type: str
    total_training_epochs: int
    learning_rate: float
    training_batch_size: int
    early_stopping_patience: int
    early_stopping_threshold: float
    log_model_metrics_interval_in_steps: int
    lora_r: int | None = None  # LoRA only
    lora_alpha: int | None = None  # LoRA only
    lora_dropout: float | None = None  # LoRA only
    beta: float | None = None  # DPO only

    @property
    def is_dpo(self) -> bool:
        """Preference tuning (DPO) of the base model's own adapter, rather than supervised fine-tuning."""
        return self.training_config_type == DPO_TRAINING_CONFIG

    def to_api(self) -> dict[str, Any]:
        """OCI's wire shape: camelCase, discriminator first, fields that do not apply left out."""
        out: dict[str, Any] = {"trainingConfigType": self.training_config_type}
        for name in API_FIELDS:
            value = getattr(self, SNAKE_NAMES[name])
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> TrainingConfig:
        """Inverse of `to_api`, for configs already validated (e.g. read back from the store)."""
        fields = {SNAKE_NAMES[name]: d[name] for name in API_FIELDS if d.get(name) is not None}
        return cls(training_config_type=d["trainingConfigType"], **fields)


def check_value(spec: ParamSpec, value: Any) -> int | float:
    """`value` as the field's type if it is allowed, else InvalidParameter naming field and range."""
    allowed = spec.allowed()
    # bool is an int subclass in Python, but `true` is never a sensible epoch count.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = "an integer" if spec.type == "int" else "a number"
        raise InvalidParameter(spec.name, value, f"must be {kind}, not {type(value).__name__}; allowed: {allowed}")
    if spec.type == "int":
        # 3.0 is rejected too: OCI's field is an int, and silently truncating 3.5 would be worse.
        if not isinstance(value, numbers.Integral):
            raise InvalidParameter(spec.name, value, f"must be an integer; allowed: {allowed}")
        value = int(value)
        if not -INT32_MAX - 1 <= value <= INT32_MAX:
            shown = value if len(str(value)) <= 40 else f"{str(value)[:12]}...({len(str(abs(value)))} digits)"
            raise InvalidParameter(spec.name, shown, f"must fit in a 32-bit integer (at most {INT32_MAX:,}); allowed: {allowed}")
    else:
        try:
            value = float(value)
        except OverflowError:  # an int too large for a float
            value = math.inf
        if not math.isfinite(value):
            raise InvalidParameter(spec.name, value, f"must be a finite number; allowed: {allowed}")
    if not spec.in_range(value):
        raise InvalidParameter(spec.name, value, f"allowed: {allowed}")
    return value


def parse_text(name: str, text: str, spec: ParamSpec | None = None) -> int | float:
    """A hyperparameter typed as text (a CLI flag, a form field) as its field's type. The one text
    parser of the CLI and the console: "3.5" for an integer field is an InvalidParameter naming the
    field (and, given the model's ParamSpec, its range); range checks are `check_value`'s."""
    kind = FIELD_TYPES[name]
    text = text.strip()
    try:
        return kind(text)
    except (TypeError, ValueError):
        noun = "an integer" if kind is int else "a number"
        allowed = f"; allowed: {spec.allowed()}" if spec is not None else ""
        raise InvalidParameter(name, text, f"must be {noun}{allowed}") from None


def resolve_training_config(model: BaseModelSpec, overrides: Mapping[str, Any] | None = None) -> TrainingConfig:
    """The model's defaults with `overrides` (camelCase keys; None = use the default) applied and checked."""
    """`trainingConfigType` DPO_TRAINING_CONFIG (a TuneForge extension, docs/dpo.md) asks for preference
    tuning of the model's own adapter: the model's table plus DPO's fields (beta)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    config_type = overrides.pop("trainingConfigType", model.training_config_type)
    if config_type not in (model.training_config_type, DPO_TRAINING_CONFIG):
        raise InvalidParameter(
            "trainingConfigType",
            config_type,
            f"{model.id} is fine-tuned with {METHOD_NAMES[model.method]}; allowed values: {model.training_config_type}, "
            f"or {DPO_TRAINING_CONFIG} for preference tuning (DPO) of its {METHOD_NAMES[model.method]} adapter",
        )
    params = model.params | (catalog.dpo_params() if config_type == DPO_TRAINING_CONFIG else {})
    values = {name: spec.default for name, spec in params.items()}
    for name, value in overrides.items():
        if name not in FIELD_TYPES:
            allowed = ", ".join(["trainingConfigType", *params])
            raise InvalidParameter(name, value, f"not a field of {config_type}; allowed: {allowed}")
        if name not in params:
            if name in catalog.dpo_params():
                why = f"applies to {DPO_TRAINING_CONFIG} only (preference tuning: --method dpo)"
            else:
                why = f"does not apply to {METHOD_NAMES[model.method]} models ({model.id} uses {model.training_config_type})"
            raise InvalidParameter(name, value, why)
        values[name] = check_value(params[name], value)
    return TrainingConfig(training_config_type=config_type, **{SNAKE_NAMES[k]: v for k, v in values.items()})


# The seed gives totalTrainingSteps = totalTrainingEpochs * size(trainingDataset) / trainingBatchSize
# and says it "ignores some rounding". Our rule: every epoch visits each training example once, in
# batches of trainingBatchSize, and the last batch of an epoch is smaller when the size does not
# divide evenly (it is not dropped and not carried into the next epoch). One batch = one optimizer step.
def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """ceil(n_train / batch_size): optimizer steps in one epoch."""
    return -(-n_train // batch_size)


def total_training_steps(n_train: int, batch_size: int, epochs: int) -> int:
    """epochs * ceil(n_train / batch_size): steps of a run that early stopping does not cut short."""
    return epochs * steps_per_epoch(n_train, batch_size)


@dataclass(frozen=True)
class Plan:
    """What a fine-tune of `examples` examples with a config will do: the one summary that `plan`,
    the API's work-request log and the console's form all show."""

    examples: int
    training_examples: int
    validation_examples: int
    steps_per_epoch: int
    total_training_steps: int
    evaluation: EvalPlan

    RULE = "totalTrainingEpochs * ceil(trainingExamples / trainingBatchSize)"

    def to_json(self) -> dict[str, Any]:
        return {
            "datasetExamples": self.examples,
            "trainingExamples": self.training_examples,
            "validationExamples": self.validation_examples,
            "stepsPerEpoch": self.steps_per_epoch,
            "totalTrainingSteps": self.total_training_steps,
            "totalTrainingStepsRule": self.RULE,
            "evaluationCycles": self.evaluation.cycles,
            "evaluationCycleExamples": self.evaluation.examples,
            "evaluationPlan": self.evaluation.describe(),
        }

    def describe(self) -> str:
        return (
            f"{self.examples} examples ({self.training_examples} training, {self.validation_examples} validation), "
            f"totalTrainingSteps = {self.total_training_steps:,}, {self.evaluation.describe()}"
        )


def make_plan(n_examples: int, config: TrainingConfig, validation_examples: int | None = None) -> Plan:
    """The split, the step count and the evaluation schedule (the engine's own) for `n_examples`;
    InvalidParameter when the run would be longer than MAX_TOTAL_TRAINING_STEPS. `validation_examples`:
    those of a separate validation dataset (`train --validation-dataset`); then all `n_examples` train."""
    from tuneforge.data import split_sizes

    n_train, n_val = split_sizes(n_examples) if validation_examples is None else (n_examples, validation_examples)
    batch, epochs = config.training_batch_size, config.total_training_epochs
    total = total_training_steps(n_train, batch, epochs)
    if total > MAX_TOTAL_TRAINING_STEPS:
        raise InvalidParameter(
            "totalTrainingEpochs",
            epochs,
            f"with {n_train:,} training examples in batches of {batch} it makes totalTrainingSteps = {total:,}, "
            f"above the maximum of {MAX_TOTAL_TRAINING_STEPS:,} steps per fine-tune; lower totalTrainingEpochs",
        )
    evaluation = EvalPlan.make(total, config.early_stopping_patience, n_train, epochs, n_val)
    return Plan(n_examples, n_train, n_val, steps_per_epoch(n_train, batch), total, evaluation)
