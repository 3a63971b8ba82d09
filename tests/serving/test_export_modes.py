"""Export permissions: every file an export writes gets the mode any plain file gets under the user's umask
(`tuneforge export --format merged` once wrote model.safetensors 0600 beside 0644 files)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest


def plain_modes(folder: Path) -> tuple[int, int]:
    """(file mode, folder mode) that open() and mkdir() give under the current umask."""
    (folder / "plain.txt").write_text("x")
    (folder / "plain-dir").mkdir()
    return stat.S_IMODE((folder / "plain.txt").stat().st_mode), stat.S_IMODE((folder / "plain-dir").stat().st_mode)


def modes_of(out: Path) -> dict[str, int]:
    paths = [out, *out.rglob("*")] if out.is_dir() else [out]
    return {str(p.relative_to(out.parent)): stat.S_IMODE(p.stat().st_mode) for p in paths}


# 0o002 as well as the usual 0o022: a fix that hard-codes 0644 would give a group-writable umask the wrong mode.
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_every_export_format_writes_files_with_the_umask_mode(umask, trained_runs, tmp_path):
    from tuneforge.serving.export import export_gguf, export_merged, export_peft

    before = os.umask(umask)
    try:
        file_mode, dir_mode = plain_modes(tmp_path)
        written = {
            "peft": export_peft(trained_runs["lora"], tmp_path / "peft"),
            "merged": export_merged(trained_runs["lora"], tmp_path / "merged"),
            "merged-tfew": export_merged(trained_runs["tfew"], tmp_path / "merged-tfew"),
            "gguf": export_gguf(trained_runs["lora"], tmp_path / "model.gguf"),
        }
    finally:
        os.umask(before)
    for fmt, out in written.items():
        modes = modes_of(out)
        assert len(modes) > (3 if out.is_dir() else 0), (fmt, modes)  # the folders hold weights, tokenizer and model.json
        wrong = {
            name: oct(mode) for name, mode in modes.items() if mode != (dir_mode if (tmp_path / name).is_dir() else file_mode)
        }
        assert not wrong, f"{fmt}: expected files {oct(file_mode)}, folders {oct(dir_mode)}; got {wrong}"


def test_a_run_folders_adapter_gets_the_umask_mode(tmp_path):
    """The trainer's own adapter/ (what `export --format peft` copies) is not left 0600 by safetensors."""
    import torch
    from peft import LoraConfig

    from tuneforge.engine.peft_format import save_adapter

    before = os.umask(0o022)
    try:
        file_mode, _ = plain_modes(tmp_path)
        save_adapter({"layer.lora_A.weight": torch.zeros(2, 2)}, tmp_path / "adapter", LoraConfig(r=2, target_modules=["q_proj"]))
    finally:
        os.umask(before)
    assert {name: mode for name, mode in modes_of(tmp_path / "adapter").items() if name != "adapter"} == {
        "adapter/adapter_model.safetensors": file_mode,
        "adapter/adapter_config.json": file_mode,
    }
