"""A base model that is not in the catalog (issue 20): `tuneforge train --base-model` takes a model
folder or a Hugging Face id found offline in the hub cache and trains those weights, named as given;
`plan` sizes it from its config.json; `catalog.spec_for_config` gives it its architecture's method
with that method's OCI table (ranges and defaults) and refuses what cannot be fine-tuned."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.tiny_models import save_tiny_checkpoint

from tuneforge import catalog
from tuneforge.errors import InvalidParameter

TINY_QWEN2 = dict(
    model_type="qwen2",
    architectures=["Qwen2ForCausalLM"],
    vocab_size=320,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)


def tuneforge(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "tuneforge", *map(str, args)], capture_output=True, text=True, timeout=600, env=env
    )


def _hub_cache(root: Path, repo: str, folder: Path, commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """A Hugging Face hub cache holding `folder` as `repo` at `commit` on main (huggingface-cli's layout)."""
    model = root / ("models--" + repo.replace("/", "--"))
    shutil.copytree(folder, model / "snapshots" / commit)
    (model / "refs").mkdir()
    (model / "refs" / "main").write_text(commit)
    return root


# ---- spec_for_config -----------------------------------------------------------------------------


def test_lora_architectures_take_the_lora_table_as_it_is():
    spec = catalog.spec_for_config("ocid1.generativeaiimportedmodel.oc1.local.x", "tiny qwen", None, TINY_QWEN2)
    table = catalog.get_model("meta.llama-3.3-70b-instruct")
    assert (spec.method, spec.training_config_type) == ("LORA", "LORA_TRAINING_CONFIG")
    assert spec.params == table.params  # ranges and defaults alike, whatever the size
    assert spec.id == "ocid1.generativeaiimportedmodel.oc1.local.x" and spec.display_name == "tiny qwen"
    assert (spec.architecture, spec.vendor, spec.weights_repo) == ("qwen2", "qwen2", "")
    assert spec.context_tokens == 512 and spec.max_prompt_tokens is None and spec.max_completion_tokens is None
    assert spec.shape == catalog.ModelShape(2, 32, 4, 2, 64, 320, True, architecture="qwen2")
    assert not spec.deprecated


def test_cohere_architectures_take_the_tfew_table():
    for model_type, cls in (("cohere", "CohereForCausalLM"), ("cohere2", "Cohere2ForCausalLM")):
        config = {**TINY_QWEN2, "model_type": model_type, "architectures": [cls]}
        spec = catalog.spec_for_config("m", "m", "acme", config)
        assert (spec.method, spec.training_config_type, spec.vendor) == ("TFEW", "TFEW_TRAINING_CONFIG", "cohere")
        assert spec.params == catalog.get_model("cohere.command-r-08-2024").params
        assert "loraR" not in spec.params


def test_a_vendor_given_is_kept_for_lora_models():
    assert catalog.spec_for_config("m", "m", "meta", {**TINY_QWEN2, "model_type": "llama", "architectures": []}).vendor == "meta"


def test_what_cannot_be_fine_tuned_is_refused_with_every_problem():
    config = {**TINY_QWEN2, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}
    with pytest.raises(InvalidParameter) as err:
        catalog.spec_for_config("m", "m", None, config)
    assert err.value.field == "baseModelId" and "gpt2" in str(err.value) and "qwen2 (Qwen2" in str(err.value)

    config = {**TINY_QWEN2, "hidden_size": 0, "num_hidden_layers": None}
    with pytest.raises(InvalidParameter) as err:
        catalog.spec_for_config("m", "m", None, config)
    assert "hidden_size 0" in str(err.value) and "no num_hidden_layers" in str(err.value)

    config = {k: v for k, v in TINY_QWEN2.items() if k != "max_position_embeddings"}
    with pytest.raises(InvalidParameter, match="max_position_embeddings None"):
        catalog.spec_for_config("m", "m", None, config)


def test_find_base_model_names_what_it_accepts(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert catalog.find_base_model("meta.llama-3.3-70b-instruct") == (catalog.get_model("meta.llama-3.3-70b-instruct"), None)
    with pytest.raises(InvalidParameter, match=r"meta\.llama-3\.3-70b-instruct.*model folder.*Hugging Face id"):
        catalog.find_base_model("meta.llama-9")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidParameter, match=r"must hold config\.json"):
        catalog.find_base_model(str(tmp_path / "empty"))
    with pytest.raises(InvalidParameter, match="Hugging Face model acme/nothing not found offline"):
        catalog.find_base_model("acme/nothing")


# ---- tuneforge train --base-model FOLDER | ORG/NAME ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("folder") / "tiny-llama", "llama")


def test_train_a_model_folder_and_a_hugging_face_id(tiny_folder, parity_dataset, tmp_path):
    out = tmp_path / "folder-run"
    proc = tuneforge(
        "train", "--base-model", tiny_folder, "--dataset", parity_dataset, "--output", out, "--total-training-epochs", 1, "--json"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["baseModelId"] == str(tiny_folder) and result["method"] == "LORA" and result["standIn"] is False
    assert result["weights"]["path"] == str(tiny_folder)
    assert result["trainingConfig"]["learningRate"] == 0.0002 and result["trainingConfig"]["loraR"] == 8  # the LoRA table's

    env = {**os.environ, "HF_HUB_CACHE": str(_hub_cache(tmp_path / "hub", "acme/tiny-llama", tiny_folder))}
    out = tmp_path / "hub-run"
    proc = tuneforge(
        "train", "--base-model", "acme/tiny-llama", "--dataset", parity_dataset, "--output", out, "--total-training-epochs", 1,
        "--json", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["baseModelId"] == "acme/tiny-llama" and result["standIn"] is False
    assert Path(result["weights"]["path"]).parent.parent.name == "models--acme--tiny-llama"

    proc = tuneforge("generate", "--base-model", "acme/tiny-llama", "--prompt", "Is 7 odd?", "--max-new-tokens", 2, env=env)
    assert proc.returncode == 0, proc.stderr

    # A base outside the catalog is exported under the name it was trained under (no catalog lookup).
    proc = tuneforge("export", "--model", out, "--format", "peft", "--output", tmp_path / "exported", env=env)
    assert proc.returncode == 0, proc.stderr
    config = json.loads((tmp_path / "exported" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "acme/tiny-llama"


def test_a_cohere2_folder_trains_with_t_few(tmp_path, parity_dataset):
    folder = save_tiny_checkpoint(tmp_path / "tiny-cohere2", "cohere2")
    proc = tuneforge("train", "--base-model", folder, "--dataset", parity_dataset, "--output", tmp_path / "o", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["method"] == "TFEW" and result["trainingConfig"]["trainingConfigType"] == "TFEW_TRAINING_CONFIG"
    assert result["trainingConfig"]["learningRate"] == 0.01 and "loraR" not in result["trainingConfig"]  # T-Few's table


def test_a_folder_base_trains_its_own_weights_only(tiny_folder, parity_dataset, tmp_path):
    """--weights (the stand-in switch) would train another model under the folder's name: refused."""
    proc = tuneforge(
        "train", "--base-model", tiny_folder, "--dataset", parity_dataset, "--output", tmp_path / "o", "--weights", "stand-in"
    )
    assert proc.returncode == 2, proc.stderr
    assert "--weights" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o" / "model.json").exists()


def test_train_refuses_an_unsupported_folder_before_loading_it(tmp_path, parity_dataset):
    folder = tmp_path / "gpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**TINY_QWEN2, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    proc = tuneforge("train", "--base-model", folder, "--dataset", parity_dataset, "--output", tmp_path / "o")
    assert proc.returncode == 2
    assert "'gpt2'" in proc.stderr and "supported architectures" in proc.stderr and "Traceback" not in proc.stderr


# ---- plan: sized from config.json -----------------------------------------------------------------

# meta-llama/Llama-3.2-1B-Instruct's config.json (the fields that size a run): no weights needed to plan.
LLAMA_1B = dict(
    model_type="llama",
    architectures=["LlamaForCausalLM"],
    hidden_size=2048,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=8192,
    vocab_size=128256,
    tie_word_embeddings=True,
    max_position_embeddings=131072,
)


def _plan_json(*args, env=None) -> dict:
    proc = tuneforge("plan", *args, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_plan_sizes_a_folder_from_its_config(tmp_path):
    folder = tmp_path / "llama-1b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_1B))
    small = _plan_json("--base-model", folder, "--gpus", 1)
    big = _plan_json("--base-model", "meta.llama-3.3-70b-instruct", "--gpus", 1)
    assert small["baseModelId"] == str(folder) and small["architecture"] == "llama" and small["method"] == "LORA"
    assert small["trainingConfig"] == big["trainingConfig"]  # the LoRA table's defaults
    # 1.24B parameters (bf16 linear layers, fp32 embeddings, a bf16 head copy) against 70.6B.
    assert 2 < small["capacity"]["gib"]["weights"] < 4 < 100 < big["capacity"]["gib"]["weights"]
    assert small["capacity"]["fits"] and not big["capacity"]["fits"]

    proc = tuneforge("plan", "--base-model", folder, "--gpus", 1, "--weights", folder)
    assert proc.returncode == 2 and "--weights is for a catalog --base-model" in proc.stderr


def test_plan_counts_tokens_with_a_hugging_face_models_tokenizer(tiny_folder, parity_dataset, tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(_hub_cache(tmp_path / "hub", "acme/tiny-llama", tiny_folder))}
    plan = _plan_json("--base-model", "acme/tiny-llama", "--dataset", parity_dataset, env=env)
    assert plan["baseModelId"] == "acme/tiny-llama" and plan["tokenLengthsChecked"] is True
    proc = tuneforge("plan", "--base-model", "acme/missing", "--dataset", parity_dataset, env=env)
    assert proc.returncode == 2 and "acme/missing not found offline" in proc.stderr and "Traceback" not in proc.stderr


def test_plan_reads_an_imported_model_from_the_servers_store(tmp_path, parity_dataset, tiny_folder):
    from tuneforge.store.db import default_url, open_store
    from tuneforge.store.tables import ImportedModelRow

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    imported_id = "ocid1.generativeaiimportedmodel.oc1.local.amaaaaaaplan"
    config = json.loads((tiny_folder / "config.json").read_text())
    with open_store(default_url(data_dir))() as session:
        session.add(
            ImportedModelRow(
                id=imported_id,
                tenancy_id="ocid1.tenancy.oc1..plan",
                compartment_id="ocid1.tenancy.oc1..plan",
                display_name="tiny",
                lifecycle_state="ACTIVE",
                source={"sourceType": "HUGGING_FACE_MODEL", "modelId": "acme/tiny-llama"},
                architecture="LlamaForCausalLM",
                weights_dir=str(tiny_folder),
                config=config,
            )
        )
        session.commit()
    plan = _plan_json("--base-model", imported_id, "--dataset", parity_dataset, "--gpus", 1, "--data-dir", data_dir)
    assert plan["baseModelId"] == imported_id and plan["architecture"] == "llama" and plan["tokenLengthsChecked"] is True
    assert plan["capacity"]["gib"]["weights"] < 0.01  # the tiny model's own size, not a catalog model's

    proc = tuneforge("plan", "--base-model", imported_id[:-4] + "zzzz", "--dataset", parity_dataset, "--data-dir", data_dir)
    assert proc.returncode == 2 and "not in this store" in proc.stderr
    proc = tuneforge("plan", "--base-model", imported_id, "--dataset", parity_dataset, "--data-dir", tmp_path / "none")
    assert proc.returncode == 2 and "pass its --data-dir" in proc.stderr
