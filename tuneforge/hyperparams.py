"""Training configs: OCI's `TrainingConfig` wire shape, defaults and validation from the catalog,
and the step-count rule that `plan` reports and the engine runs."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

from tuneforge.catalog import BaseModelSpec, ParamSpec
from tuneforge.errors import InvalidParameter

# OCI's TrainingConfig fields in wire order (SDK attribute_map; oci-api.md §1.3).
API_FIELDS = (
    "totalTrainingEpochs",
    "learningRate",
    "trainingBatchSize",
    "earlyStoppingPatience",
    "earlyStoppingThreshold",
    "logModelMetricsIntervalInSteps",
    "loraR",
    "loraAlpha",
    "loraDropout",
)
# The SDK's Python types for each field: the same for every model, so the CLI can parse its flags
# before it knows which model they are for.
FIELD_TYPES: dict[str, type] = {
    "totalTrainingEpochs": int,
    "learningRate": float,
    "trainingBatchSize": int,
    "earlyStoppingPatience": int,
    "earlyStoppingThreshold": float,
    "logModelMetricsIntervalInSteps": int,
    "loraR": int,
    "loraAlpha": int,
    "loraDropout": float,
}
SNAKE_NAMES: dict[str, str] = {
    "totalTrainingEpochs": "total_training_epochs",
    "learningRate": "learning_rate",
    "trainingBatchSize": "training_batch_size",
    "earlyStoppingPatience": "early_stopping_patience",
    "earlyStoppingThreshold": "early_stopping_threshold",
    "logModelMetricsIntervalInSteps": "log_model_metrics_interval_in_steps",
    "loraR": "lora_r",
    "loraAlpha": "lora_alpha",
    "loraDropout": "lora_dropout",
}
METHOD_NAMES = {"LORA": "LoRA", "TFEW": "T-Few"}


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


def resolve_training_config(model: BaseModelSpec, overrides: Mapping[str, Any] | None = None) -> TrainingConfig:
    """The model's defaults with `overrides` (camelCase keys; None = use the default) applied and checked."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    config_type = overrides.pop("trainingConfigType", model.training_config_type)
    if config_type != model.training_config_type:
        raise InvalidParameter(
            "trainingConfigType",
            config_type,
            f"{model.id} is fine-tuned with {METHOD_NAMES[model.method]}; "
            f"the only allowed value is {model.training_config_type}",
        )
    values = {name: spec.default for name, spec in model.params.items()}
    for name, value in overrides.items():
        if name not in FIELD_TYPES:
            allowed = ", ".join(["trainingConfigType", *model.params])
            raise InvalidParameter(name, value, f"not a field of {model.training_config_type}; allowed: {allowed}")
        if name not in model.params:
            method = METHOD_NAMES[model.method]
            raise InvalidParameter(
                name, value, f"does not apply to {method} models ({model.id} uses {model.training_config_type})"
            )
        values[name] = check_value(model.params[name], value)
    return TrainingConfig(
        training_config_type=model.training_config_type, **{SNAKE_NAMES[k]: v for k, v in values.items()}
    )


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
