"""The search space of a sweep: which hyperparameters vary, over what, always inside the catalog's ranges.

`--param` syntax (NAME is the API's camelCase field, as `tuneforge models --json` lists them):

    NAME=LOW:HIGH        uniform from LOW to HIGH, both included (whole numbers for integer fields)
    NAME=LOW:HIGH:log    log-uniform (LOW above 0)
    NAME=A,B,C           one of these values

Without `--param`, `default_space` derives a sub-range from each tunable field's catalog default and
range by the rules of DEFAULT_RULES (docs/sweeps.md lists what they give per method). Every bound and
every choice is checked against the catalog (`hyperparams.check_value`), so a sampled value is always
one `tuneforge train` accepts. Trial 0 runs the defaults (`include_defaults`): a list of choices gains
the default; a range that excludes it is kept, trial 0 being a baseline outside it.

No Optuna import here: the CLI and the service validate a space without it; `suggest` only calls
the trial object's suggest_* methods.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from tuneforge import catalog, data
from tuneforge.catalog import BaseModelSpec, ParamSpec, format_number
from tuneforge.errors import InvalidParameter, TuneForgeError
from tuneforge.hyperparams import DPO_TRAINING_CONFIG, FIELD_TYPES, METHOD_NAMES, check_value

Number = int | float
SYNTAX = "NAME=LOW:HIGH, NAME=LOW:HIGH:log or NAME=V1,V2,..."
GRID_POINTS = 3  # a range in a grid search: its low end, its middle (geometric for log) and its high end


@dataclass(frozen=True)
class Range:
    name: str
    low: Number
    high: Number
    log: bool = False

    def contains(self, value: Number) -> bool:
        return self.low <= value <= self.high

    def describe(self) -> str:
        return f"{format_number(self.low)}:{format_number(self.high)}" + (":log" if self.log else "")

    def grid(self, kind: str) -> list[Number]:
        if self.log:
            mid = math.sqrt(self.low * self.high)
        else:
            mid = (self.low + self.high) / 2
        points = [self.low, round(mid) if kind == "int" else mid, self.high]
        return list(dict.fromkeys(points))


@dataclass(frozen=True)
class Choices:
    name: str
    values: tuple[Number, ...]

    def contains(self, value: Number) -> bool:
        return value in self.values

    def describe(self) -> str:
        return ",".join(format_number(v) for v in self.values)

    def grid(self, kind: str) -> list[Number]:
        return list(self.values)


Dimension = Range | Choices
SearchSpace = dict[str, Dimension]  # in the catalog's field order


# --- the default space ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LogAround:
    """Log-uniform from default / factor to default * factor, cut to the catalog's range."""

    factor: float


@dataclass(frozen=True)
class PowersOfTwo:
    """The powers of two from default / below to default * above (None: the catalog's bound) inside
    the catalog's range."""

    below: int | None = None
    above: int | None = None


@dataclass(frozen=True)
class UpTo:
    """Uniform from the catalog's minimum (0 when it has none) to default * factor."""

    factor: float


# Why these: the learning rate matters most and acts on a log scale (a decade either way of the
# seed's default covers the usual LoRA 1e-5..1e-3 and T-Few 1e-3..1e-1 practice); rank and alpha are
# searched in powers of two as the LoRA and QLoRA papers do (their ratio alpha / r is the update's
# scale); batch size over the catalog's whole range; dropout from none to twice the default.
# DPO's beta (a DPO sweep only) log-uniform from a fifth to five times its default, 0.02..0.5 around
# 0.1: the values the DPO paper (0.1, 0.5) and TRL's examples (0.01..0.5) use.
# Not searched unless asked: totalTrainingEpochs (it sets each trial's compute budget and is the
# pruner's unit of progress), early stopping (a stopping rule, not a model setting) and the metric
# logging interval (changes nothing learned).
DEFAULT_RULES: dict[str, LogAround | PowersOfTwo | UpTo] = {
    "learningRate": LogAround(10),
    "trainingBatchSize": PowersOfTwo(),
    "loraR": PowersOfTwo(below=2, above=4),
    "loraAlpha": PowersOfTwo(below=2, above=4),
    "loraDropout": UpTo(2),
    "beta": LogAround(5),
}


def for_method(model: BaseModelSpec, method: str) -> BaseModelSpec:
    """The model as a sweep of `method` (data.SUPERVISED or data.DPO) searches it: a DPO sweep's table is
    the model's own plus DPO's fields (catalog.dpo_params: beta), as a DPO_TRAINING_CONFIG takes them."""
    if method != data.DPO:
        return model
    return replace(model, params=model.params | catalog.dpo_params())


def _clip(spec: ParamSpec, value: float) -> float:
    """`value` moved inside the catalog's range (just inside an exclusive bound)."""
    if spec.minimum is not None and value <= spec.minimum:
        value = math.nextafter(spec.minimum, math.inf) if spec.min_exclusive else spec.minimum
    if spec.maximum is not None and value >= spec.maximum:
        value = math.nextafter(spec.maximum, -math.inf) if spec.max_exclusive else spec.maximum
    return value


def _rule_dimension(spec: ParamSpec, rule: LogAround | PowersOfTwo | UpTo) -> Dimension:
    default = spec.default
    if isinstance(rule, LogAround):
        return Range(spec.name, _clip(spec, default / rule.factor), _clip(spec, default * rule.factor), log=True)
    if isinstance(rule, UpTo):
        return Range(spec.name, spec.minimum if spec.minimum is not None else 0.0, _clip(spec, default * rule.factor))
    low = spec.minimum if rule.below is None else default / rule.below
    high = spec.maximum if rule.above is None else default * rule.above
    powers = [2**k for k in range(31) if low <= 2**k <= high and spec.in_range(2**k)]
    return Choices(spec.name, tuple(sorted({*powers, default})))


def default_space(model: BaseModelSpec, fixed: Mapping[str, Number] = {}) -> SearchSpace:
    """The space searched without --param: DEFAULT_RULES applied to the model's tunable fields, less
    the ones fixed by a flag. Checked against the catalog like a user's --param."""
    space: SearchSpace = {}
    for name, spec in model.params.items():
        if name in DEFAULT_RULES and spec.tunable and name not in fixed:
            space[name] = check_dimension(spec, _rule_dimension(spec, DEFAULT_RULES[name]))
    return space


# --- --param -------------------------------------------------------------------------------------


def _syntax_error(text: str, model: BaseModelSpec, why: str) -> TuneForgeError:
    names = ", ".join(n for n, s in model.params.items() if s.tunable)
    return TuneForgeError(f"--param {text!r}: {why}; expected {SYNTAX} with NAME one of: {names}")


def _number(text: str) -> Number:
    """An integer literal stays an int (so `loraR=8` is an integer and `learningRate=5` reads as 5)."""
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    return float(text)


def check_dimension(spec: ParamSpec, dim: Dimension) -> Dimension:
    """`dim` with every bound or choice checked and converted to the field's type (InvalidParameter
    naming the field and the catalog's range otherwise)."""
    if isinstance(dim, Choices):
        return Choices(dim.name, tuple(dict.fromkeys(check_value(spec, v) for v in dim.values)))
    low, high = check_value(spec, dim.low), check_value(spec, dim.high)
    return Range(dim.name, low, high, dim.log)


def parse_param(text: str, model: BaseModelSpec) -> Dimension:
    """One --param: its dimension, checked against `model`'s catalog entry."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise _syntax_error(text, model, "not of the form NAME=VALUES")
    if (problem := field_problem(name, model)) is not None:
        raise _syntax_error(text, model, problem)
    spec = model.params[name]
    try:
        if ":" in value:
            parts = value.split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].strip() != "log"):
                raise _syntax_error(text, model, "a range is LOW:HIGH or LOW:HIGH:log")
            dim: Dimension = Range(name, _number(parts[0]), _number(parts[1]), log=len(parts) == 3)
        else:
            dim = Choices(name, tuple(_number(v) for v in value.split(",")))
    except ValueError:
        raise _syntax_error(text, model, "the values must be numbers") from None
    dim = check_dimension(spec, dim)
    if (problem := range_problem(dim)) is not None:
        raise _syntax_error(text, model, problem)
    return dim


def field_problem(name: str, model: BaseModelSpec) -> str | None:
    """Why `name` cannot be searched on `model`, or None when it can."""
    if name in model.params:
        return None
    if name in catalog.dpo_params():
        return f"{name} applies to {DPO_TRAINING_CONFIG} only (a preference-tuning sweep)"
    if name in FIELD_TYPES:
        return f"{name} does not apply to {METHOD_NAMES[model.method]} models ({model.id})"
    return f"{name} is not a hyperparameter of {model.id}"


def range_problem(dim: Dimension, low: str = "LOW", high: str = "HIGH", one_value: str = "NAME=VALUE") -> str | None:
    if isinstance(dim, Range):
        if dim.low >= dim.high:
            return f"{low} must be below {high} (one value: {one_value})"
        if dim.log and dim.low <= 0:
            return f"a log range needs {low} above 0"
    return None


def parse_params(texts: list[str] | tuple[str, ...], model: BaseModelSpec, fixed: Mapping[str, Number] = {}) -> SearchSpace:
    """Every --param, in the catalog's field order. A field searched twice, or both searched and
    fixed by its train flag, is an error."""
    space: SearchSpace = {}
    for text in texts:
        dim = parse_param(text, model)
        if dim.name in space:
            raise TuneForgeError(
                f"--param {text!r}: {dim.name} is already searched by --param {dim.name}={space[dim.name].describe()}"
            )
        if dim.name in fixed:
            raise TuneForgeError(
                f"--param {text!r}: {dim.name} is also fixed to {format_number(fixed[dim.name])} by its flag; give one of the two"
            )
        space[dim.name] = dim
    return {name: space[name] for name in model.params if name in space}


def include_defaults(space: SearchSpace, defaults: Mapping[str, Number]) -> tuple[SearchSpace, list[str]]:
    """The space with trial 0 (`defaults`) recordable in it, and a note per case the user should know:
    a list of choices gains the default (Optuna records a categorical value only if it is a choice);
    a range is kept as given, and trial 0 is then a baseline outside it (samples stay inside)."""
    out: SearchSpace = {}
    notes: list[str] = []
    for name, dim in space.items():
        value = defaults[name]
        out[name] = dim
        if dim.contains(value):
            continue
        if isinstance(dim, Choices):
            out[name] = Choices(name, tuple(sorted({*dim.values, value})))
            notes.append(
                f"{name}: the default {format_number(value)} is added to the choices {dim.describe()} (trial 0 runs the defaults)"
            )
        else:
            notes.append(
                f"{name}: trial 0 runs the default {format_number(value)}, outside the range {dim.describe()}; "
                "the other trials sample inside it"
            )
    return out, notes


def grid_points(space: SearchSpace, model: BaseModelSpec) -> list[dict[str, Number]]:
    """Every combination of a grid search, in order (ranges give GRID_POINTS values each)."""
    axes = [dim.grid(model.params[name].type) for name, dim in space.items()]
    return [dict(zip(space, values)) for values in itertools.product(*axes)]


def suggest(trial: Any, space: SearchSpace, model: BaseModelSpec) -> dict[str, Number]:
    """Sample one point of `space` through an Optuna trial."""
    values: dict[str, Number] = {}
    for name, dim in space.items():
        if isinstance(dim, Choices):
            values[name] = trial.suggest_categorical(name, list(dim.values))
        elif model.params[name].type == "int":
            values[name] = trial.suggest_int(name, dim.low, dim.high, log=dim.log)
        else:
            values[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
    return values


def space_to_json(space: SearchSpace) -> dict[str, Any]:
    return {
        name: {"values": list(dim.values)} if isinstance(dim, Choices) else {"low": dim.low, "high": dim.high, "log": dim.log}
        for name, dim in space.items()
    }


def space_from_json(data: Mapping[str, Any], model: BaseModelSpec, where: str = "searchSpace") -> SearchSpace:
    """The inverse of `space_to_json`, checked against the catalog exactly as `--param` is (the service
    builds a space this way); errors name the field as `where`.NAME. Each dimension is {"values": [...]}
    or {"low", "high", "log"}; the shapes themselves are the caller's to check (the service's schema does)."""
    space: SearchSpace = {}
    for name, d in data.items():
        if (problem := field_problem(name, model)) is not None:
            raise TuneForgeError(f"{where}.{name}: {problem}")
        dim = Choices(name, tuple(d["values"])) if "values" in d else Range(name, d["low"], d["high"], bool(d.get("log")))
        try:
            dim = check_dimension(model.params[name], dim)
        except InvalidParameter as err:
            raise InvalidParameter(f"{where}.{name}", err.value, err.allowed) from None
        if (problem := range_problem(dim, "low", "high", '{"values": [VALUE]}')) is not None:
            raise TuneForgeError(f"{where}.{name}: {problem}")
        space[name] = dim
    return {name: space[name] for name in model.params if name in space}
