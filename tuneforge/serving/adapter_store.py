"""Adapters by id: read from PEFT folders, checked against the base, kept resident in an LRU of slots.

`read_adapter` runs in the caller's thread (at `submit`): it reads adapter_config.json and
adapter_model.safetensors, checks every tensor against the base model's layers, and turns the
result into per-layer fp32 tensors (LoRA's scaling folded into B). Any problem is an
`AdapterUnavailable`/`AdapterInvalid` for that request alone, before it is queued.

`AdapterSlots` (the decode thread only) holds up to `capacity` adapters in the layers' slot
stacks. A slot in use by a running row is pinned; when a new adapter needs a slot, the least
recently used unpinned one is evicted. If every slot is pinned the request waits in the queue.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from tuneforge.engine.peft_format import PREFIX
from tuneforge.run_folder import RunFolder
from tuneforge.serving.adapter_layers import LayerTensors, MultiAdapterLinear
from tuneforge.serving.requests import AdapterInvalid, AdapterRef, AdapterUnavailable

# LoRA options that change the maths beyond W + s B A; rejected rather than served wrongly.
_UNSUPPORTED_LORA = {
    "use_dora": "DoRA",
    "rank_pattern": "per-layer ranks",
    "alpha_pattern": "per-layer alphas",
    "modules_to_save": "fully trained extra modules",
    "fan_in_fan_out": "fan_in_fan_out layers",
}


@dataclass
class ServedAdapter:
    id: str
    directory: Path
    method: str  # LORA | IA3
    rank: int  # 0 for (IA)^3
    layers: dict[str, LayerTensors] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        tensors = [t for lt in self.layers.values() for t in (lt.lora_a, lt.lora_bt, lt.ia3_in, lt.ia3_out) if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)


def read_adapter(ref: AdapterRef, layers: dict[str, MultiAdapterLinear]) -> ServedAdapter:
    directory = ref.adapter_dir()
    config_file, weights_file = directory / "adapter_config.json", directory / "adapter_model.safetensors"
    if not config_file.is_file() or not weights_file.is_file():
        run = RunFolder(ref.path)
        if run.progress_json.is_file() and not run.is_finished():
            raise AdapterUnavailable(f"adapter {ref.id}: its training has not finished")
        raise AdapterUnavailable(f"adapter {ref.id}: no PEFT adapter (adapter_config.json + adapter_model.safetensors) found")
    try:
        config = json.loads(config_file.read_text())
        tensors = load_file(weights_file)
    except (OSError, ValueError, SafetensorError) as err:
        raise AdapterInvalid(f"adapter {ref.id}: unreadable adapter files ({type(err).__name__})") from err
    kind = config.get("peft_type")
    if kind == "LORA":
        return _lora(ref, directory, config, tensors, layers)
    if kind == "IA3":
        return _ia3(ref, directory, config, tensors, layers)
    raise AdapterInvalid(f"adapter {ref.id}: peft_type {kind!r} cannot be served; LORA and IA3 can")


def _layer_and_kind(ref: AdapterRef, key: str, layers: dict) -> tuple[str, str]:
    name = key.removeprefix(PREFIX)
    for kind in ("lora_A.weight", "lora_B.weight", "ia3_l"):
        if name.endswith("." + kind):
            layer = name[: -len(kind) - 1]
            if key.startswith(PREFIX) and layer in layers:
                return layer, kind
            raise AdapterInvalid(f"adapter {ref.id}: tensor {key} adapts {layer}, not a decoder projection of this base model")
    raise AdapterInvalid(f"adapter {ref.id}: unexpected tensor {key} (not LoRA A/B nor an (IA)^3 vector)")


def _check_shape(ref: AdapterRef, key: str, tensor: torch.Tensor, expected: tuple[int, ...]) -> torch.Tensor:
    if tuple(tensor.shape) != expected:
        raise AdapterInvalid(
            f"adapter {ref.id}: tensor {key} has shape {tuple(tensor.shape)}, this base model needs {expected}: "
            "was it trained on another base model?"
        )
    return tensor.float()


def _lora(ref, directory, config, tensors, layers) -> ServedAdapter:
    for option, what in _UNSUPPORTED_LORA.items():
        if config.get(option):
            raise AdapterInvalid(f"adapter {ref.id}: {what} ({option}) cannot be served; plain LoRA can")
    if config.get("bias", "none") != "none":
        raise AdapterInvalid(f"adapter {ref.id}: trained biases (bias={config['bias']!r}) cannot be served")
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        layer, kind = _layer_and_kind(ref, key, layers)
        if kind == "ia3_l":
            raise AdapterInvalid(f"adapter {ref.id}: a LoRA adapter holds an (IA)^3 tensor {key}")
        lin = layers[layer]
        shape = (r, lin.in_features) if kind == "lora_A.weight" else (lin.out_features, r)
        pairs.setdefault(layer, {})[kind] = _check_shape(ref, key, tensor, shape)
    adapter = ServedAdapter(ref.id, directory, "LORA", r)
    for layer, pair in pairs.items():
        if len(pair) != 2:
            raise AdapterInvalid(f"adapter {ref.id}: layer {layer} has only one of LoRA's A and B")
        scaled_bt = (pair["lora_B.weight"] * scaling).t().contiguous()
        adapter.layers[layer] = LayerTensors(lora_a=pair["lora_A.weight"], lora_bt=scaled_bt)
    return _non_empty(adapter)


def _ia3(ref, directory, config, tensors, layers) -> ServedAdapter:
    feedforward = config.get("feedforward_modules") or []
    feedforward = [feedforward] if isinstance(feedforward, str) else feedforward
    adapter = ServedAdapter(ref.id, directory, "IA3", 0)
    for key, tensor in tensors.items():
        layer, kind = _layer_and_kind(ref, key, layers)
        if kind != "ia3_l":
            raise AdapterInvalid(f"adapter {ref.id}: an (IA)^3 adapter holds a LoRA tensor {key}")
        lin = layers[layer]
        if layer.rsplit(".", 1)[-1] in feedforward:  # PEFT: feed-forward vectors scale the layer's input
            adapter.layers[layer] = LayerTensors(ia3_in=_check_shape(ref, key, tensor, (1, lin.in_features))[0])
        else:
            adapter.layers[layer] = LayerTensors(ia3_out=_check_shape(ref, key, tensor, (lin.out_features, 1))[:, 0])
    return _non_empty(adapter)


def _non_empty(adapter: ServedAdapter) -> ServedAdapter:
    if not adapter.layers:
        raise AdapterInvalid(f"adapter {adapter.id}: the adapter holds no tensors")
    return adapter


@dataclass
class _Resident:
    slot: int
    directory: Path
    method: str
    pins: int = 0


class AdapterSlots:
    """The resident adapters: id -> slot of every MultiAdapterLinear, least recently used first."""

    def __init__(self, layers: dict[str, MultiAdapterLinear], capacity: int):
        self.layers, self.capacity = layers, capacity
        self._resident: OrderedDict[str, _Resident] = OrderedDict()
        self._method = {0: "BASE"}  # slot -> method of the adapter in it
        self._slots = 1  # slots allocated in the stacks, slot 0 (the base) included
        self._rank = 0

    def resident(self, adapter_id: str) -> bool:
        return adapter_id in self._resident

    def ids(self) -> list[str]:
        return list(self._resident)

    def acquire(self, ref: AdapterRef, adapter: ServedAdapter | None) -> int | None:
        """Pin the adapter's slot, installing it first if needed (`adapter` read by `read_adapter`
        when it was not resident). None when every slot is pinned by running rows."""
        entry = self._resident.get(ref.id)
        if entry is not None and entry.directory != ref.adapter_dir():
            raise AdapterInvalid(f"adapter {ref.id}: this id is already served from another folder")
        if entry is None:
            slot = self._free_slot()
            if slot is None:
                return None
            entry = self._install(slot, adapter or read_adapter(ref, self.layers))
        entry.pins += 1
        self._resident.move_to_end(ref.id)
        return entry.slot

    def release(self, adapter_id: str) -> None:
        self._resident[adapter_id].pins -= 1

    def method_of(self, slot: int) -> str:
        return self._method[slot]

    @property
    def slots(self) -> int:
        return self._slots

    def _free_slot(self) -> int | None:
        used = {e.slot for e in self._resident.values()}
        free = [s for s in range(1, self.capacity + 1) if s not in used]
        if free:
            return free[0]
        for adapter_id, entry in self._resident.items():  # least recently used first
            if entry.pins == 0:
                del self._resident[adapter_id]
                return entry.slot
        return None

    def _install(self, slot: int, adapter: ServedAdapter) -> _Resident:
        self._slots, self._rank = max(self._slots, slot + 1), max(self._rank, adapter.rank)
        for name, layer in self.layers.items():
            t = adapter.layers.get(name) or LayerTensors()
            layer.grow(self._slots, max(self._rank, 1), t.lora_a is not None, t.ia3_in is not None, t.ia3_out is not None)
            layer.write_slot(slot, t)
        self._method[slot] = adapter.method
        entry = _Resident(slot, adapter.directory, adapter.method)
        self._resident[adapter.id] = entry
        return entry
