"""What a sweep is (`SweepSpec`, built by the CLI from its flags or by the service from a request) and
where it keeps things (`SweepFolder`, the output directory's layout):

    sweep.json          the spec's study-defining fields (what --resume checks) and the resolved space
    study.db            Optuna's storage (SQLite) unless `storage_url` names another (the service: PostgreSQL)
    trials/NNN/         trial NNN's run folder (`tuneforge train --output`, tuneforge.run_folder)
    logs/NAME.log       each training subprocess's stdout and stderr
    best -> trials/NNN  the best finished trial's run folder (a relative link)
    results.json        the ranked trials, what the search gained, the steps the pruner saved
    learning-curve/     the "would more data help?" runs: data-25.jsonl, 25/ (run folder), scores-25.json, ...
    learning-curve.json the fitted curve, its predictions and the verdict
    sweep.html          the report (self-contained)

`prepare` checks a spec once, before anything trains, the way `tuneforge plan` checks a request.
No torch, no Optuna.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge import data
from tuneforge.catalog import BaseModelSpec, find_base_model, get_model
from tuneforge.data import DEFAULT_SEED
from tuneforge.errors import TuneForgeError
from tuneforge.hyperparams import DPO_TRAINING_CONFIG, TrainingConfig, resolve_training_config
from tuneforge.run_folder import write_json_atomic
from tuneforge.sweeps.space import SearchSpace, default_space, for_method, include_defaults, space_to_json

Number = int | float
SEARCHES = ("tpe", "random", "grid")
PRUNERS = ("asha", "none")


@dataclass(frozen=True)
class SweepSpec:
    base_model_id: str
    dataset: Path
    output: Path
    trials: int = 0  # trials in the study, trial 0 (the defaults) included; 0: no search (learning curve only)
    search: str = "tpe"  # tpe | random | grid
    space: SearchSpace | None = None  # None: default_space (parse_params / space_from_json build one)
    fixed: dict[str, Number] = field(default_factory=dict)  # hyperparameters fixed like `train`'s flags (camelCase)
    pruner: str = "asha"  # asha | none
    weights: str | None = None  # the catalog ids' switch (`train --weights`); a `base_weights` base trains its own
    # An imported base model's folder, which the runs train (`train --base-model FOLDER --base-model-name
    # BASE_MODEL_ID`, as the service's jobs do); None: base_model_id is a catalog id.
    base_weights: Path | None = None
    seed: int = DEFAULT_SEED
    device: str = "auto"
    precision: str = "auto"
    micro_batch_size: int | None = None
    parallel: int = 1  # trials at a time
    threads: int | None = None  # CPU threads per trial; default: the cores split between the parallel trials
    storage_url: str | None = None  # Optuna RDB URL; default: sqlite:///OUTPUT/study.db
    study_name: str = "tuneforge-sweep"
    worker_id: str = "local"  # which process owns a running trial (several servers can share one study)
    mlflow_tracking_uri: str | None = None
    # data.SUPERVISED, or data.DPO: every run is preference tuning (DPO_TRAINING_CONFIG, `train --method
    # dpo`) on a preference file, and beta is searchable (space.for_method)
    method: str = data.SUPERVISED

    def storage(self) -> str:
        return self.storage_url or f"sqlite:///{SweepFolder(self.output).study_db.resolve()}"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class SweepFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    sweep_json = property(lambda self: self.path / "sweep.json")
    study_db = property(lambda self: self.path / "study.db")
    results_json = property(lambda self: self.path / "results.json")
    report_html = property(lambda self: self.path / "sweep.html")
    best = property(lambda self: self.path / "best")
    logs = property(lambda self: self.path / "logs")
    curve_dir = property(lambda self: self.path / "learning-curve")
    curve_json = property(lambda self: self.path / "learning-curve.json")

    def trial_dir(self, number: int) -> Path:
        return self.path / "trials" / f"{number:03d}"

    def log(self, name: str) -> Path:
        self.logs.mkdir(parents=True, exist_ok=True)
        return self.logs / f"{name}.log"

    def read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def pin(self, base: dict[str, Any], search: dict[str, Any] | None, resume: bool) -> None:
        """Record what defines this folder's runs, or check that they have not changed: `base` (model,
        data, fixed settings: shared by the search and the learning curve) and `search` (what is
        searched, once a search runs here). Continuing a sweep needs --resume; adding a learning curve
        to a folder's sweep, or a sweep to its learning curve, does not."""
        saved = self.read(self.sweep_json)
        if saved is None:
            if resume:
                raise TuneForgeError(f"--resume: {self.path} holds no sweep to resume (no sweep.json); run without --resume")
            self.path.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.sweep_json, {"base": base, "search": search})
            return
        changed = [(key, saved["base"].get(key), value) for key, value in base.items() if saved["base"].get(key) != value]
        if search is not None and saved.get("search") is not None:
            changed += [
                (key, saved["search"].get(key), value) for key, value in search.items() if saved["search"].get(key) != value
            ]
        if changed:
            what = "; ".join(f"{key} was {json.dumps(was)}, now {json.dumps(now)}" for key, was, now in changed)
            raise TuneForgeError(f"--output {self.path} holds another sweep: {what}. Give the same settings, or another --output")
        adds_something = (search is None) != (saved.get("search") is None)
        if not resume and not adds_something:
            raise TuneForgeError(
                f"--output {self.path} already holds this sweep: add --resume to continue it, or pick another folder"
            )
        if search is not None and saved.get("search") is None:
            write_json_atomic(self.sweep_json, {"base": base, "search": search})

    def link_best(self, number: int) -> None:
        """best -> trials/NNN, swapped in atomically (a reader sees the old link or the new one)."""
        tmp = self.path / f".best.tmp{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.trial_dir(number).relative_to(self.path), target_is_directory=True)
        os.replace(tmp, self.best)


@dataclass(frozen=True)
class Setup:
    """A checked spec and what follows from it."""

    spec: SweepSpec
    model: BaseModelSpec
    defaults: TrainingConfig  # trial 0: the catalog's defaults with the fixed flags applied
    space: SearchSpace  # what the search varies (it contains the defaults)
    notes: tuple[str, ...]  # what the user should know (e.g. a range widened to reach the defaults)
    n_examples: int
    n_train: int
    folder: SweepFolder

    def config(self, params: dict[str, Number]) -> dict[str, Number]:
        """Every hyperparameter of a trial (camelCase), checked against the catalog; a DPO sweep's keep
        trainingConfigType DPO_TRAINING_CONFIG, which train_args turns into `--method dpo`."""
        api = resolve_training_config(self.model, {**self.method_config(), **self.spec.fixed, **params}).to_api()
        if api["trainingConfigType"] != DPO_TRAINING_CONFIG:
            api.pop("trainingConfigType")
        return api

    def method_config(self) -> dict[str, str]:
        return {"trainingConfigType": DPO_TRAINING_CONFIG} if self.spec.method == data.DPO else {}

    def base_identity(self) -> dict[str, Any]:
        s = self.spec
        return {
            "baseModelId": s.base_model_id,
            "dataset": str(Path(s.dataset).resolve()),
            "datasetSha256": file_digest(s.dataset),
            "fixed": dict(sorted(s.fixed.items())),
            "weights": s.weights,
            "baseWeights": str(s.base_weights) if s.base_weights is not None else None,
            "seed": s.seed,
            # only a DPO sweep's: the identity of a supervised sweep's folder stays what it was
            **({"method": s.method} if s.method != data.SUPERVISED else {}),
        }

    def search_identity(self) -> dict[str, Any]:
        return {"search": self.spec.search, "searchSpace": space_to_json(self.space), "pruner": self.spec.pruner}


def prepare(spec: SweepSpec) -> Setup:
    """Check everything a sweep needs before the first trial starts; errors name the field and what is allowed."""
    from tuneforge.engine.weights import resolve_weights  # no torch unless a GGUF file needs converting (once)
    from tuneforge.tracking import check_server  # imports mlflow only when a tracking URI is given

    if spec.search not in SEARCHES:
        raise TuneForgeError(f"--search: {spec.search!r} is not allowed; one of: {', '.join(SEARCHES)}")
    if spec.pruner not in PRUNERS:
        raise TuneForgeError(f"--pruner: {spec.pruner!r} is not allowed; one of: {', '.join(PRUNERS)}")
    if spec.trials < 0 or spec.parallel < 1:
        raise TuneForgeError("--trials must be 0 or more and --parallel 1 or more")
    if spec.base_weights is not None:
        if spec.weights is not None:
            raise TuneForgeError("--weights: only a catalog base model takes --weights; an imported base trains its own")
        # What the runs' `train --base-model FOLDER --base-model-name ID` resolves, so trials and the sweep agree.
        model = find_base_model(str(spec.base_weights), spec.base_model_id)[0]
    else:
        model = get_model(spec.base_model_id)
    if spec.method not in (data.SUPERVISED, data.DPO):
        raise TuneForgeError(f"--method: {spec.method!r} is not allowed; one of: {data.SUPERVISED}, {data.DPO}")
    model = for_method(model, spec.method)
    method_config = {"trainingConfigType": DPO_TRAINING_CONFIG} if spec.method == data.DPO else {}
    defaults = resolve_training_config(model, {**method_config, **spec.fixed})
    space = default_space(model, spec.fixed) if spec.space is None else spec.space
    for name in space:
        if name in spec.fixed:
            raise TuneForgeError(f"{name} is both searched and fixed to {spec.fixed[name]}; give one of the two")
    if spec.trials and not space:
        raise TuneForgeError("nothing to search: every searchable hyperparameter is fixed by a flag; give --param NAME=...")
    space, notes = include_defaults(space, defaults.to_api())
    n = data.scan_dataset(spec.dataset, method=spec.method)
    # Fail before any trial on weights that cannot be found; this also converts a GGUF stand-in once,
    # so that parallel trials never race to convert it.
    if spec.base_weights is None:
        resolve_weights(spec.weights, model_id=model.id, weights_repo=model.weights_repo)
    check_server(spec.mlflow_tracking_uri)
    return Setup(spec, model, defaults, space, tuple(notes), n, data.split_sizes(n)[0], SweepFolder(spec.output))
