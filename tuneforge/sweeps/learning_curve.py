"""Would more data help? Train the default configuration on 25 %, 50 % and 100 % of the training
split, fit how the validation loss falls with the number of examples, and say what twice and four
times the data would give, next to what the hyperparameter search gained.

The runs. Each subset is a valid dataset file that the engine's own seeded 80:20 split divides
into exactly the chosen training examples (the first k of a seeded permutation of the training
split: nested subsets) and some of the full dataset's validation examples (for the run's
evaluation cycles and early stopping). Every run is then scored on the same whole validation split
(`python -m tuneforge.sweeps.score`: per-example losses). A subset needs at least 32 examples (OCI's
minimum); a dataset too small for that gets an answer saying so, and no run.
The 100 % run is the sweep's trial 0 when a sweep ran in the same folder (the same configuration).

The fit. L(n) = c + a * n^(-b), a saturating power law (Hestness et al. 2017; Kaplan et al. 2020),
least squares over the measured points with c >= 0, a >= 0 and b in [0.01, 2]. For each b on a
grid of 400 values, c and a are a two-variable linear least-squares problem solved in closed form
(variable projection), and the best b wins: a global optimum on the bounded domain where a local
optimiser (scipy's curve_fit) can stop at a bound or fail on a resample, and 1,000 resamples fit in
a few milliseconds with numpy alone.

The uncertainty. A paired bootstrap over validation examples: 1,000 resamples (with replacement)
of the examples, the same for every point; each gives every point's token-weighted mean loss, a
fit and the predictions. The 10th and 90th percentiles give an 80 % interval. The search's gain is
bootstrapped the same way from trial 0's and the best trial's per-example losses (its point value
is optimistic: the best of several trials was picked on this same validation split).

The verdict compares relative loss reductions against HELPS (5 %): twice the data (the median of
the bootstrap) against the search's gain. More data helps if its reduction is at least HELPS and
at least the search's; other settings help if the search's is at least HELPS and larger; else
neither is likely to help much.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge import data
from tuneforge.errors import TuneForgeError
from tuneforge.run_folder import ExitCode, RunFolder, write_json_atomic
from tuneforge.sweeps.report import write_report
from tuneforge.sweeps.spec import Setup, SweepSpec, prepare
from tuneforge.sweeps.trials import TrainJob, TrainProcess, make_slots, never, run_jobs, visible_gpus

FRACTIONS = (0.25, 0.5, 1.0)
SCALES = (2, 4)
HELPS = 0.05
BOOTSTRAP_SAMPLES = 1000
INTERVAL = (10, 90)  # percentiles: an 80 % interval
EXPONENTS = np.geomspace(0.01, 2.0, 400)
FORMULA = "L(n) = c + a * n^(-b)"


@dataclass(frozen=True)
class Point:
    fraction: float
    training_examples: int
    dataset: Path  # the subset file (the full dataset for 100 %)
    folder: RunFolder
    scores: Path


def subset_size(k: int) -> int:
    """The smallest dataset whose 80:20 split has k training examples."""
    n = k
    while data.split_sizes(n)[0] < k:
        n += 1
    return n


def smallest_dataset() -> int:
    """The fewest examples a dataset needs for every subset of the curve to be valid."""
    n = data.MIN_EXAMPLES
    while subset_size(_take(min(FRACTIONS), data.split_sizes(n)[0])) < data.MIN_EXAMPLES:
        n += 1
    return n


def _take(fraction: float, n_train: int) -> int:
    return max(1, int(fraction * n_train + 0.5))


def plan(setup: Setup) -> list[Point] | str:
    """The curve's points, or why the dataset is too small for them."""
    folder, n_train = setup.folder, setup.n_train
    points = []
    for fraction in FRACTIONS:
        k = _take(fraction, n_train)
        pct = round(100 * fraction)
        if fraction == 1.0:
            points.append(Point(1.0, k, setup.spec.dataset, _full_run(setup), folder.curve_dir / "scores-100.json"))
            continue
        if subset_size(k) < data.MIN_EXAMPLES:
            return (
                f"The dataset is too small for a learning curve: its {pct} % subset would hold {subset_size(k)} examples "
                f"and a dataset needs at least {data.MIN_EXAMPLES}; it takes at least {smallest_dataset()} examples. "
                f"With {setup.n_examples} examples, collect more data or compare settings with --trials."
            )
        path = folder.curve_dir / f"data-{pct}.jsonl"
        points.append(Point(fraction, k, path, RunFolder(folder.curve_dir / str(pct)), folder.curve_dir / f"scores-{pct}.json"))
    return points


def _full_run(setup: Setup) -> RunFolder:
    """The sweep's trial 0 when it finished here (the same run), else a run of the curve's own."""
    trial0 = RunFolder(setup.folder.trial_dir(0))
    if trial0.is_finished():
        return trial0
    return RunFolder(setup.folder.curve_dir / "100")


def write_subset(setup: Setup, point: Point) -> None:
    """A dataset file whose seeded 80:20 split is exactly the chosen training examples plus some
    of the full dataset's validation examples."""
    if point.dataset.is_file():
        return
    seed = setup.spec.seed
    train, val = data.split_examples(data.read_examples(setup.spec.dataset), seed)
    chosen_train = _first(train, point.training_examples, seed)
    n = subset_size(point.training_examples)
    chosen_val = _first(val, n - point.training_examples, seed)
    train_pos, val_pos = data.split_indices(n, seed)
    lines: list[str] = [""] * n
    for pos, example in [*zip(train_pos, chosen_train), *zip(val_pos, chosen_val)]:
        lines[pos] = jsonl_line(example)
    point.dataset.parent.mkdir(parents=True, exist_ok=True)
    tmp = point.dataset.with_name(point.dataset.name + ".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(point.dataset)


def _first(examples: list[data.DatasetItem], k: int, seed: int) -> list[data.DatasetItem]:
    """The first k of a seeded permutation, in file order: the 25 % subset is inside the 50 % one."""
    order = list(range(len(examples)))
    random.Random(seed + 1).shuffle(order)
    return [examples[i] for i in sorted(order[:k])]


def jsonl_line(example: data.DatasetItem) -> str:
    if isinstance(example, data.Conversation):  # as checked: a line the same checks accept again
        line = {"messages": list(example.messages)} | ({"tools": list(example.tools)} if example.tools else {})
        return json.dumps(line) + "\n"
    return json.dumps({"prompt": example.prompt, "completion": example.completion}) + "\n"


# --- running and scoring -------------------------------------------------------------------------


def run_learning_curve(
    spec: SweepSpec,
    *,
    resume: bool = False,
    should_stop: Callable[[], bool] = never,
    on_event: Callable[[dict], None] = lambda e: None,
) -> dict[str, Any] | None:
    """Train, score and fit the curve (continuing what an earlier call left); its JSON (also written
    to learning-curve.json and shown in sweep.html), or None when `should_stop()` stopped it."""
    setup = prepare(spec)
    setup.folder.pin(setup.base_identity(), None, resume=resume)
    points = plan(setup)
    if isinstance(points, str):
        return _save(setup, {"fitted": False, "verdict": points, "formula": FORMULA})
    for point in points:
        if point.fraction < 1.0:
            write_subset(setup, point)
    todo = iter([_job(setup, p, on_event) for p in points if not p.folder.is_finished()])
    slots = make_slots(spec.parallel, spec.threads, visible_gpus(spec.device))
    failures: list[str] = []
    untracked = dataclasses.replace(spec, mlflow_tracking_uri=None)  # the curve's runs are not logged to MLflow
    stopped = run_jobs(
        untracked,
        slots,
        todo,
        on_records=lambda proc, records: None,
        on_exit=lambda proc: _check_exit(proc, failures, on_event),
        should_stop=should_stop,
        log_path=lambda job: setup.folder.log(job.name),
    )
    if failures:
        raise TuneForgeError("; ".join(failures))
    if stopped:
        return None
    best = _best_trial(setup)
    extra = [(RunFolder(setup.folder.trial_dir(best)), best_scores(setup, best))] if best else []
    score_runs(setup, [(p.folder, p.scores) for p in points] + extra, on_event)
    return _save(setup, analyse(setup, points))


def _best_trial(setup: Setup) -> int | None:
    """The best trial of the sweep in this folder, when it is not trial 0."""
    results = setup.folder.read(setup.folder.results_json)
    best = results.get("bestTrial") if results and results.get("gainOverDefaults") is not None else None
    return best or None


def best_scores(setup: Setup, number: int) -> Path:
    return setup.folder.curve_dir / f"scores-trial-{number:03d}.json"


def _job(setup: Setup, point: Point, on_event: Callable[[dict], None]) -> TrainJob:
    on_event({"event": "curve-started", "fraction": point.fraction, "trainingExamples": point.training_examples})
    return TrainJob(f"curve-{round(100 * point.fraction)}", point.folder, point.dataset, setup.config({}))


def _check_exit(proc: TrainProcess, failures: list[str], on_event: Callable[[dict], None]) -> None:
    code = proc.proc.returncode
    if code == ExitCode.OK or code == ExitCode.STOPPED:
        on_event({"event": "curve-finished" if code == ExitCode.OK else "curve-stopped", "run": proc.job.name})
        return
    error = proc.job.folder.read_error()
    failures.append(f"learning-curve run {proc.job.name}: " + (error.message if error else f"exited with status {code}"))


def score_runs(setup: Setup, runs: list[tuple[RunFolder, Path]], on_event: Callable[[dict], None]) -> None:
    """Per-example validation losses of each finished run, in one subprocess; runs scored since
    they last finished are skipped."""
    todo = [
        (folder, out) for folder, out in runs if not (out.is_file() and out.stat().st_mtime >= folder.model_json.stat().st_mtime)
    ]
    if not todo:
        return
    on_event({"event": "curve-scoring", "runs": len(todo)})
    spec = setup.spec
    cmd = [
        sys.executable,
        "-m",
        "tuneforge.sweeps.score",
        "--dataset",
        str(spec.dataset),
        "--seed",
        str(spec.seed),
        "--device",
        spec.device,
        "--precision",
        spec.precision,
        "--threads",
        str(make_slots(1, spec.threads, [])[0].threads),
    ]
    for folder, out in todo:
        cmd += ["--model", str(folder.path), "--output", str(out)]
    log = setup.folder.log("score")
    with open(log, "ab") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    if code != 0:
        raise TuneForgeError(f"scoring the learning curve's runs failed (status {code}); see {log}")


def _losses(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(loss sums, token counts) per validation example, from a scores file."""
    rows = json.loads(path.read_text())["examples"]
    return np.array([r["lossSum"] for r in rows]), np.array([r["tokens"] for r in rows], dtype=float)


# --- the fit -------------------------------------------------------------------------------------


def fit(ns: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares c, a, b of L(n) = c + a n^-b for each row of `losses` (shape (rows, points)),
    with c >= 0, a >= 0, b on EXPONENTS."""
    losses = np.atleast_2d(losses)
    x = ns[None, :] ** -EXPONENTS[:, None]  # (exponents, points)
    xm, ym = x.mean(1)[:, None], losses.mean(1)[None, :]  # (exponents, 1), (1, rows)
    xc = x - x.mean(1, keepdims=True)
    a = (xc @ (losses - losses.mean(1, keepdims=True)).T) / (xc**2).sum(1, keepdims=True)  # (exponents, rows)
    c = ym - a * xm
    # The constraints: a < 0 -> a flat line at the mean; c < 0 -> through the origin, a = <x, y> / <x, x>.
    flat = a < 0
    a, c = np.where(flat, 0.0, a), np.where(flat, ym, c)
    origin = c < 0
    a = np.where(origin, (x @ losses.T) / (x**2).sum(1, keepdims=True), a)
    c = np.where(origin, 0.0, c)
    sse = ((c[:, :, None] + a[:, :, None] * x[:, None, :] - losses[None, :, :]) ** 2).sum(2)  # (exponents, rows)
    best = sse.argmin(0)
    rows = np.arange(losses.shape[0])
    return c[best, rows], a[best, rows], EXPONENTS[best]


def _predict(c, a, b, n):
    return c + a * np.power(float(n), -b)


def analyse(setup: Setup, points: list[Point]) -> dict[str, Any]:
    """The fit, the predictions at SCALES x the data with bootstrap intervals, and the verdict."""
    per_point = [_losses(p.scores) for p in points]
    tokens = per_point[0][1]
    sums = np.stack([s for s, _ in per_point])  # (points, examples)
    ns = np.array([p.training_examples for p in points], dtype=float)
    rng = np.random.default_rng(setup.spec.seed)
    picks = rng.integers(0, len(tokens), size=(BOOTSTRAP_SAMPLES, len(tokens)))
    measured = sums.sum(1) / tokens.sum()
    boot = np.stack([sums[:, idx].sum(1) / tokens[idx].sum() for idx in picks])  # (samples, points)
    c, a, b = fit(ns, measured)
    bc, ba, bb = fit(ns, boot)
    n_full = ns[-1]

    def interval(values: np.ndarray) -> tuple[float, float]:
        lo, hi = np.percentile(values, INTERVAL)
        return float(lo), float(hi)

    result: dict[str, Any] = {
        "fitted": True,
        "formula": FORMULA,
        "fit": {"c": float(c[0]), "a": float(a[0]), "b": float(b[0])},
        "points": [
            {
                "fraction": p.fraction,
                "trainingExamples": p.training_examples,
                "loss": float(measured[i]),
                **dict(zip(("low", "high"), interval(boot[:, i]))),
                "runFolder": os.path.relpath(p.folder.path, setup.folder.path),  # the service's runs live outside the folder
            }
            for i, p in enumerate(points)
        ],
        "predictions": [],
        "bootstrapSamples": BOOTSTRAP_SAMPLES,
        "interval": f"{INTERVAL[1] - INTERVAL[0]} %",
        "helpsThreshold": HELPS,
    }
    full_fit, boot_full = _predict(c, a, b, n_full)[0], _predict(bc, ba, bb, n_full)
    for scale in SCALES:
        loss, boot_loss = _predict(c, a, b, scale * n_full)[0], _predict(bc, ba, bb, scale * n_full)
        gains = (boot_full - boot_loss) / boot_full
        result["predictions"].append(
            {
                "scale": scale,
                "trainingExamples": int(scale * n_full),
                "loss": float(loss),
                **dict(zip(("low", "high"), interval(boot_loss))),
                "reduction": float((full_fit - loss) / full_fit),
                "reductionMedian": float(np.median(gains)),
                "reductionInterval": interval(gains),
            }
        )
    result["search"] = search_gain(setup, points[-1], picks)
    result["verdict"] = verdict(result["predictions"][0], result["search"])
    return result


def search_gain(setup: Setup, full: Point, picks: np.ndarray) -> dict[str, Any] | None:
    """What the sweep in this folder gained over the defaults, with a bootstrap interval from the
    per-example losses of the defaults' run and the best trial's; None without a sweep."""
    results = setup.folder.read(setup.folder.results_json)
    if not results or results.get("gainOverDefaults") is None:
        return None
    out = {"bestTrial": results["bestTrial"], "gain": results["gainOverDefaults"], "gainInterval": (0.0, 0.0)}
    best = _best_trial(setup)
    if best is None:
        return out
    base, tuned = _losses(full.scores)[0], _losses(best_scores(setup, best))[0]
    gains = np.array([(base[idx].sum() - tuned[idx].sum()) / base[idx].sum() for idx in picks])
    lo, hi = np.percentile(gains, INTERVAL)
    return {**out, "gainInterval": (float(lo), float(hi))}


def verdict(twice: dict[str, Any], search: dict[str, Any] | None) -> str:
    data_gain = twice["reductionMedian"]
    lo, hi = twice["reductionInterval"]
    more = f"twice the data is expected to lower the validation loss by {100 * data_gain:.1f} % (80 % interval {100 * lo:.1f} to {100 * hi:.1f} %)"
    if search is None:
        tuned = "no hyperparameter search ran in this folder (add --trials N to compare)"
        hp_gain = None
    else:
        hp_gain = search["gain"]
        slo, shi = search["gainInterval"]
        tuned = f"the search's best settings (trial {search['bestTrial']}) lowered it by {100 * hp_gain:.1f} % (80 % interval {100 * slo:.1f} to {100 * shi:.1f} %)"
    if data_gain >= HELPS and (hp_gain is None or data_gain >= hp_gain):
        return f"More data is likely to help: {more}; {tuned}."
    if hp_gain is not None and hp_gain >= HELPS:
        return f"Other settings are likely to help more than more data: {tuned}; {more}."
    return f"Neither more data nor other settings is likely to help much (each below {100 * HELPS:.0f} %): {more}; {tuned}."


def _save(setup: Setup, curve: dict[str, Any]) -> dict[str, Any]:
    write_json_atomic(setup.folder.curve_json, curve)
    write_report(setup.folder)
    return curve
