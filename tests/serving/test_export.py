"""Export: a portable PEFT folder, a merged folder with the same logits, GGUF read back independently."""

from __future__ import annotations

import json

import pytest
import torch


@torch.no_grad()
def peft_logits(run, ids):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuneforge.run_folder import RunFolder

    base = AutoModelForCausalLM.from_pretrained(RunFolder(run).read_result().weights["path"])
    return PeftModel.from_pretrained(base, run / "adapter").eval()(ids).logits


IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 61]])


def test_peft_export_is_self_contained_and_names_the_hf_base(trained_runs, tmp_path):
    from tuneforge.serving.export import export_peft

    out = export_peft(trained_runs["lora"], tmp_path / "peft")
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "model.json", "README.md"} <= names
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "meta-llama/Llama-3.3-70B-Instruct"
    for name in ("adapter_config.json", "model.json", "README.md"):
        assert str(tmp_path.parent) not in (out / name).read_text(), name  # no path of this machine
    assert "PeftModel.from_pretrained" in (out / "README.md").read_text()
    # the folder loads with PEFT on the base and computes what the run's adapter computes
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(json.loads((trained_runs["lora"] / "model.json").read_text())["weights"]["path"])
    got = PeftModel.from_pretrained(base, out).eval()(IDS).logits
    torch.testing.assert_close(got, peft_logits(trained_runs["lora"], IDS))
    with pytest.raises(Exception, match="already exists"):
        export_peft(trained_runs["lora"], out)


@pytest.mark.parametrize("run", ["lora", "tfew"])  # LoRA on the tiny Llama, T-Few on the tiny Cohere
def test_merged_export_loads_with_transformers_with_base_plus_adapter_logits(run, trained_runs, tmp_path):
    from transformers import AutoModelForCausalLM

    from tuneforge.serving.export import export_merged

    out = export_merged(trained_runs[run], tmp_path / "merged")
    assert any(p.suffix == ".safetensors" for p in out.iterdir()) and (out / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        got = merged(IDS).logits
    want = peft_logits(trained_runs[run], IDS)
    # fp32 checkpoints here, so far tighter than the bf16 tolerance (1e-2 relative) real checkpoints need
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(want, peft_logits_base(trained_runs[run], IDS), atol=1e-3)  # the adapter matters


@torch.no_grad()
def peft_logits_base(run, ids):
    from transformers import AutoModelForCausalLM

    from tuneforge.run_folder import RunFolder

    return AutoModelForCausalLM.from_pretrained(RunFolder(run).read_result().weights["path"]).eval()(ids).logits


@pytest.mark.parametrize("gguf_type,tolerance", [("f16", 2e-2), ("q8_0", 1.5e-1)])
def test_gguf_export_reads_back_in_transformers_close_to_the_merged_model(gguf_type, tolerance, trained_runs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.serving.export import export_gguf, merged_model

    path = export_gguf(trained_runs["lora"], tmp_path / "model.gguf", gguf_type)
    # transformers' GGUF loader is an independent reader: its own name map, un-permutation and dequantization
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
    merged, tokenizer, _ = merged_model(trained_runs["lora"])
    with torch.no_grad():
        got, want = loaded(IDS).logits, merged(IDS).logits
    assert (got - want).abs().max() <= tolerance * want.abs().max()
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.85
    gguf_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    text = "Is 7 odd? the quick brown fox"
    assert gguf_tokenizer(text, add_special_tokens=False).input_ids == tokenizer(text, add_special_tokens=False).input_ids


def test_gguf_export_of_cohere_is_llama_cpps_command_r(trained_runs, tmp_path):
    """transformers cannot read command-r GGUF; the file is read back with gguf's reader (the llama.cpp
    check of such a file is in docs/serving.md)."""
    import gguf

    from tuneforge.serving.export import export_gguf, merged_model

    path = export_gguf(trained_runs["tfew"], tmp_path / "cohere.gguf", "f16")
    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    assert fields["general.architecture"] == "command-r"
    assert fields["command-r.logit_scale"] == pytest.approx(2.0)
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors and "blk.0.ffn_norm.weight" not in tensors  # tied head; parallel block
    merged, _, _ = merged_model(trained_runs["tfew"])
    down = merged.model.layers[1].mlp.down_proj.weight.detach().numpy()
    stored = tensors["blk.1.ffn_down.weight"].data.astype("float32").reshape(down.shape)
    assert abs(stored - down).max() <= 1e-3 * abs(down).max()  # f16 of the merged (T-Few-scaled) weight
