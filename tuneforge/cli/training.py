"""`tuneforge train`, `eval` and `generate`: the trainer process itself is tuneforge/engine/run.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tuneforge.cli.options import (
    device_options,
    hyperparameter_options,
    hyperparameter_texts,
    method_option,
    precision_notice,
    print_json,
    print_rows,
    stand_in_notice,
    weights_option,
)


def _print_performance(result) -> None:
    t = result.timings
    dpo = result.training_config.get("trainingConfigType") == "DPO_TRAINING_CONFIG"
    what = "reward accuracy of the preference pairs" if dpo else "completion tokens"
    print_rows(
        [
            ("baseModelId", result.base_model_id + (" (on the SmolLM2-135M-Instruct stand-in)" if result.stand_in else "")),
            (
                "steps",
                f"{result.steps_run} of {result.total_training_steps}" + (" (early stopped)" if result.early_stopped else ""),
            ),
            ("bestStep", result.best_step),
            ("finalAccuracy", f"{result.final_accuracy:.4f}  (validation split, {what})"),
            ("finalLoss", f"{result.final_loss:.4f}" + ("  (DPO loss)" if dpo else "")),
            ("time", f"{t['totalSeconds']:.0f} s (train {t['trainSeconds']:.0f} s, eval {t['evalSeconds']:.0f} s)"),
        ]
    )


@click.command()
@click.option(
    "--base-model",
    "base_model",
    required=True,
    metavar="ID|DIR|ORG/NAME",
    help="A catalog model id (see `tuneforge models`), a model folder (config.json, safetensors, tokenizer) or a "
    "Hugging Face id found in the Hugging Face cache (offline); a folder or Hugging Face model trains its own weights.",
)
@click.option(
    "--base-model-name",
    default=None,
    metavar="NAME",
    help="What model.json calls a folder or Hugging Face base (default: --base-model as given).",
)
@click.option(
    "--dataset",
    required=True,
    type=click.Path(path_type=Path),
    help="JSONL file: prompt/completion or chat lines; preference pairs with --method dpo.",
)
@click.option(
    "--output", required=True, type=click.Path(path_type=Path), help="Folder for the adapter, model.json, metrics and report."
)
@weights_option(required=False)
@click.option(
    "--validation-dataset",
    type=click.Path(path_type=Path),
    default=None,
    help="JSONL file of validation examples (at least 1): the whole --dataset trains. Default: a seeded 20 % of --dataset.",
)
@click.option("--seed", type=int, default=None, help="Seed of the split, the data order and the adapter init (default 42).")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --output.")
@click.option(
    "--micro-batch-size", type=click.IntRange(min=1), default=None, help="Split each batch to bound memory; same result."
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: every core).")
@click.option("--json", "as_json", is_flag=True, help="Print model.json on stdout at the end.")
@click.option(
    "--mlflow-tracking-uri",
    default=None,
    metavar="URI",
    help="Log params, metric curves and the adapter to MLflow (pip install 'tuneforge[tracking]').",
)
@device_options
@click.option(
    "--nproc-per-node",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes on this machine, one per GPU: FSDP2 shards the model over all of them (docs/scale-out.md).",
)
@click.option(
    "--nnodes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Machines in the run; start the same command on each, with its own --node-rank.",
)
@click.option(
    "--node-rank", type=click.IntRange(min=0), default=0, show_default=True, help="This machine's number, 0 to --nnodes - 1."
)
@click.option(
    "--master-addr", default="127.0.0.1", show_default=True, metavar="HOST", help="Address of machine 0, reachable from all."
)
@click.option(
    "--master-port",
    type=click.IntRange(1, 65535),
    default=None,
    metavar="PORT",
    help="Port on machine 0 for the process group (default: a free one on one machine; 29500 on several).",
)
@click.option(
    "--activation-checkpointing",
    is_flag=True,
    help="Recompute each decoder layer in the backward pass: far less activation memory for ~1/3 more compute.",
)
@click.option(
    "--quantize-base",
    type=click.Choice(["nf4"]),
    default=None,
    help="Hold the frozen base in 4 bits (QLoRA): a 70B LoRA on one 80 GB GPU. One process; pip install 'tuneforge[qlora]'.",
)
@click.option(
    "--shared-prefix",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Run the prompt prefix a batch's rows share once: same result, fewer FLOPs, one more decoder call. "
    "auto = on for CPU (FLOP-bound), off for CUDA (small steps there are bound by kernel launches).",
)
@method_option(
    "supervised: prompt/completion or chat data. dpo: preference pairs (docs/dpo.md), the same adapter trained "
    "with DPO against the base model (--beta)."
)
@click.option(
    "--from-adapter",
    type=click.Path(path_type=Path),
    default=None,
    metavar="RUN_DIR",
    help="Start from a finished run's adapter (same base model and adapter settings), e.g. DPO after a supervised run.",
)
@hyperparameter_options
def train(
    base_model: str,
    base_model_name: str | None,
    dataset: Path,
    output: Path,
    weights: str | None,
    seed: int | None,
    validation_dataset: Path | None,
    resume: bool,
    micro_batch_size: int | None,
    threads: int | None,
    as_json: bool,
    mlflow_tracking_uri: str | None,
    device: str,
    precision: str,
    nproc_per_node: int,
    nnodes: int,
    node_rank: int,
    master_addr: str,
    master_port: int | None,
    activation_checkpointing: bool,
    quantize_base: str | None,
    shared_prefix: str,
    method: str,
    from_adapter: Path | None,
    **flags: Any,
) -> None:
    """Fine-tune a base model on a JSONL dataset (exit 3 when stopped; --resume continues).

    On failure the output folder gets error.json (tuneforge/run_folder.py): what the service tells its user."""
    from tuneforge.engine.run import TrainerOptions, run_trainer
    from tuneforge.run_folder import ExitCode

    options = TrainerOptions(
        base_model=base_model,
        base_model_name=base_model_name,
        dataset=dataset,
        output=output,
        hyperparameters=hyperparameter_texts(flags),
        weights=weights,
        seed=seed,
        validation_dataset=validation_dataset,
        resume=resume,
        micro_batch_size=micro_batch_size,
        threads=threads,
        device=device,
        precision=precision,
        mlflow_tracking_uri=mlflow_tracking_uri,
        nproc_per_node=nproc_per_node,
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
        activation_checkpointing=activation_checkpointing,
        quantize_base=quantize_base,
        shared_prefix=shared_prefix,
        method=method,
        from_adapter=from_adapter,
    )
    ended = run_trainer(options)
    if ended.code != ExitCode.OK:
        raise SystemExit(ended.code)
    if ended.result is None:  # the ranks this process launched, or a rank other than the first, which reports it
        return
    if as_json:
        print_json(ended.result.to_json())
    else:
        _print_performance(ended.result)
        click.echo(f"Adapter (PEFT format): {output / 'adapter'}    report: {output / 'report.html'}")


def _load_for_inference(model_dir: Path | None, base_model: str | None, weights: str | None, device: str, precision: str):
    from tuneforge.catalog import find_base_model
    from tuneforge.engine.generate import load_base, load_trained
    from tuneforge.engine.weights import Weights, resolve_weights

    if (model_dir is None) == (base_model is None):
        raise click.UsageError("give either --model DIR or --base-model ID (with --weights)")
    precision_notice(device, precision)
    if model_dir is not None:
        return load_trained(model_dir, device, precision)
    spec, folder = find_base_model(base_model)
    if folder is not None:
        if weights is not None:
            raise click.UsageError("--weights is for a catalog --base-model; a folder or Hugging Face model has its own")
        return load_base(Weights(str(folder), folder, False, base_model), device, precision)
    return load_base(resolve_weights(weights, model_id=spec.id, weights_repo=spec.weights_repo), device, precision)


@click.command(name="eval")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None, help="A `tuneforge train` output folder.")
@click.option(
    "--base-model",
    "base_model",
    default=None,
    metavar="ID|DIR|ORG/NAME",
    help="Evaluate a base model instead: a catalog id (with --weights), a model folder or a Hugging Face id.",
)
@weights_option(required=False)
@click.option("--dataset", required=True, type=click.Path(path_type=Path), help="JSONL file of prompt/completion pairs.")
@click.option(
    "--split",
    type=click.Choice(["all", "train", "validation"]),
    default="all",
    help="Which part of the dataset: `validation` is the 20 % held out by training with the same --seed.",
)
@click.option("--seed", type=int, default=None, help="Seed of the 80:20 split (default 42).")
@click.option("--compare-base", is_flag=True, help="With --model: also evaluate its base model, side by side.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@device_options
def eval_command(model_dir, base_model, weights, dataset, split, seed, compare_base, as_json, device, precision) -> None:
    """Loss, token accuracy and exact match of greedy generations on a dataset; on preference pairs, the
    DPO metrics against the base model (reward and preference accuracy, docs/dpo.md)."""
    from tuneforge import data

    # Any valid, non-empty file: the 32-example minimum is OCI's rule for training data, not for a test set.
    examples = data.read_examples(dataset, min_examples=1, method=None)
    if split != "all":
        train_part, val_part = data.split_examples(examples, data.DEFAULT_SEED if seed is None else seed)
        examples = val_part if split == "validation" else train_part
    if compare_base and model_dir is None:
        raise click.UsageError("--compare-base needs --model DIR")
    if isinstance(examples[0], data.PreferencePair):
        _eval_pairs(model_dir, base_model, weights, examples, split, compare_base, as_json, device, precision)
        return
    from tuneforge.engine.generate import load_base, score, trained_base_weights

    loaded = _load_for_inference(model_dir, base_model, weights, device, precision)
    stand_in_notice(loaded.stand_in, "evaluating")
    results = {"model": {"model": loaded.description, "standIn": loaded.stand_in, "split": split, **score(loaded, examples)}}
    if compare_base:
        base = load_base(trained_base_weights(model_dir), device, precision)
        results["base"] = {"model": base.description, "standIn": base.stand_in, "split": split, **score(base, examples)}
    if as_json:
        print_json(results if compare_base else results["model"])
        return
    for label, result in results.items():
        if compare_base:
            click.echo(f"== {'fine-tuned' if label == 'model' else 'base model'} ==")
        print_rows([(k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in result.items() if k != "samples"])
        for s in result["samples"]:
            click.echo(f"  line {s['line']}: {'OK ' if s['match'] else 'MISS'} {s['generated']!r} (expected {s['expected']!r})")
    if compare_base:
        m, b = results["model"], results["base"]
        click.echo(
            f"exact match: base {b['exactMatch']:.1%} -> fine-tuned {m['exactMatch']:.1%}; "
            f"token accuracy {b['accuracy']:.1%} -> {m['accuracy']:.1%}; loss {b['loss']:.3f} -> {m['loss']:.3f}"
        )


def _eval_pairs(model_dir, base_model, weights, pairs, split, compare_base, as_json, device, precision) -> None:
    """A preference file: each model's DPO metrics (train.score_pairs), beta the run's own (else the catalog's)."""
    from tuneforge.catalog import dpo_params
    from tuneforge.engine.generate import finished_run, load_base, trained_base_weights
    from tuneforge.engine.train import score_pairs

    beta = dpo_params()["beta"].default
    if model_dir is not None:
        beta = finished_run(model_dir).training_config.get("beta", beta)
    loaded = _load_for_inference(model_dir, base_model, weights, device, precision)
    stand_in_notice(loaded.stand_in, "evaluating")
    models = {"model": loaded}
    if compare_base:
        models["base"] = load_base(trained_base_weights(model_dir), device, precision)
    results = {
        label: {
            "model": m.description,
            "standIn": m.stand_in,
            "split": split,
            "beta": beta,
            **score_pairs(m.model, m.tokenizer, pairs, m.device, beta),
        }
        for label, m in models.items()
    }
    if as_json:
        print_json(results if compare_base else results["model"])
        return
    for label, result in results.items():
        if compare_base:
            click.echo(f"== {'fine-tuned' if label == 'model' else 'base model'} ==")
        print_rows([(k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in result.items()])


@click.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None, help="A `tuneforge train` output folder.")
@click.option(
    "--base-model",
    "base_model",
    default=None,
    metavar="ID|DIR|ORG/NAME",
    help="Generate with a base model instead: a catalog id (with --weights), a model folder or a Hugging Face id.",
)
@weights_option(required=False)
@click.option("--prompt", required=True, help="The user message.")
@click.option("--max-new-tokens", type=click.IntRange(1, 4096), default=128, show_default=True)
@click.option("--temperature", type=click.FloatRange(0, 5), default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@device_options
def generate(model_dir, base_model, weights, prompt, max_new_tokens, temperature, top_p, seed, device, precision) -> None:
    """Generate a reply to one prompt (greedy by default)."""
    loaded = _load_for_inference(model_dir, base_model, weights, device, precision)
    stand_in_notice(loaded.stand_in, "generating with")
    from tuneforge.engine.generate import generate as run_generate

    click.echo(run_generate(loaded, [prompt], max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)[0])
