"""Real sweeps on the tiny Llama through `tuneforge sweep`: parallel trials, Ctrl-C then --resume (no
finished trial redone, the interrupted one continued from its checkpoint), the ranked table, best/,
sweep.html, and the learning curve (reusing trial 0); a dataset too small for a learning curve."""

import signal
import subprocess

from helpers.sweeps import read_json, run, sweep_args, write_threshold_dataset
from helpers.waiting import wait_for

from tuneforge.sweeps.learning_curve import smallest_dataset

VERDICTS = ("More data is likely to help", "Other settings are likely to help more", "Neither more data nor other settings")


def _trial_dirs(out):
    return sorted((out / "trials").glob("*")) if (out / "trials").is_dir() else []


def test_ctrl_c_then_resume_finishes_the_sweep_and_its_learning_curve(tiny_llama, tmp_path):
    data = write_threshold_dataset(tmp_path / "above50.jsonl", 160)  # 128 training examples: 25 % is a valid dataset
    out = tmp_path / "sweep"
    flags = "--trials 3 --parallel 2 --pruner none --param learningRate=0.01:0.1:log --total-training-epochs 6 --learning-curve"
    args = sweep_args(tiny_llama, data, out, flags + " --early-stopping-patience 0")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def one_finished_one_training():
        finished = [d for d in _trial_dirs(out) if (d / "model.json").is_file()]
        early = [d for d in _trial_dirs(out) if 2 <= (read_json(d / "progress.json") or {}).get("step", 0) <= 40]  # of 96
        return finished and early

    wait_for(one_finished_one_training, what="a finished trial and one early in its training", interval=0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 3, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    finished = {d.name: (d / "model.json").stat().st_mtime_ns for d in _trial_dirs(out) if (d / "model.json").is_file()}
    interrupted = [d for d in _trial_dirs(out) if d.name not in finished]
    assert interrupted and all((d / "checkpoint").is_dir() for d in interrupted)

    resumed = run(args + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr
    # Finished trials were not run again; interrupted ones continued from their checkpoints.
    assert {d.name: (d / "model.json").stat().st_mtime_ns for d in _trial_dirs(out) if d.name in finished} == finished
    for d in interrupted:
        assert f"trial {int(d.name)} started: " in resumed.stderr and "(resuming from its checkpoint)" in resumed.stderr
    results = read_json(out / "results.json")
    ranked = results["ranked"]
    assert [r["state"] for r in ranked] == ["complete"] * 3 and sorted(r["number"] for r in ranked) == [0, 1, 2]
    assert all(r["stepsRun"] == r["stepsPlanned"] == 96 for r in ranked)
    assert [r["validationLoss"] for r in ranked] == sorted(r["validationLoss"] for r in ranked)
    trial0 = next(r for r in ranked if r["number"] == 0)
    assert trial0["params"] == {"learningRate": 0.0002} and trial0["defaults"]
    assert 0.01 <= min(r["params"]["learningRate"] for r in ranked if r["number"]) <= 0.1
    # The ranked table on stdout, best/ and the report.
    header, *rows = [line for line in resumed.stdout.splitlines() if line.strip()][:4]
    assert header.split()[:3] == ["rank", "trial", "learningRate"] and [row.split()[1] for row in rows] == [
        str(r["number"]) for r in ranked
    ]
    best = out / "best"
    assert best.is_symlink() and best.resolve() == (out / "trials" / f"{ranked[0]['number']:03d}").resolve()
    assert (best / "adapter" / "adapter_config.json").is_file()
    page = (out / "sweep.html").read_text()
    assert page.count("<svg") >= 3 and "<script" not in page and "<link" not in page
    # The learning curve: 25 % and 50 % trained, 100 % is trial 0, the verdict printed.
    curve = read_json(out / "learning-curve.json")
    assert curve["fitted"] and [p["trainingExamples"] for p in curve["points"]] == [32, 64, 128]
    assert curve["points"][-1]["runFolder"] == "trials/000"
    assert [p["trainingExamples"] for p in curve["predictions"]] == [256, 512]
    assert all(p["low"] <= p["high"] for p in curve["points"] + curve["predictions"])
    assert curve["search"]["bestTrial"] == ranked[0]["number"]
    assert curve["verdict"].startswith(VERDICTS) and curve["verdict"] in resumed.stdout


def test_a_dataset_too_small_for_a_learning_curve_gets_an_answer_and_no_run(tiny_llama, tmp_path):
    data = write_threshold_dataset(tmp_path / "small.jsonl", 48)
    out = tmp_path / "curve"
    proc = run(sweep_args(tiny_llama, data, out, "--learning-curve"))
    assert proc.returncode == 0, proc.stderr
    assert "too small for a learning curve" in proc.stdout and f"at least {smallest_dataset()} examples" in proc.stdout
    assert not (out / "learning-curve").exists() and not (out / "trials").exists()
