"""The base-model catalog: `models.toml` read into typed, frozen records.

The TOML file is the single source of truth for model ids, methods, token limits and every
hyperparameter range; nothing else in TuneForge hard-codes them.
"""

from __future__ import annotations

import functools
import json
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from tuneforge.errors import InvalidParameter, TuneForgeError

CATALOG_FILE = Path(__file__).with_name("models.toml")

Number = int | float
DPO_TRAINING_CONFIG = "DPO_TRAINING_CONFIG"  # preference tuning: the base model's adapter, trained with DPO


def format_number(x: Number) -> str:
    """Write a number the way the spec does: 0.000005, not 5e-06."""
    if isinstance(x, int):
        return str(x)
    return format(Decimal(repr(x)), "f")


@dataclass(frozen=True)
class ParamSpec:
    name: str  # API camelCase name, e.g. "loraDropout"
    type: str  # "int" | "float"
    minimum: Number | None
    maximum: Number | None
    min_exclusive: bool
    max_exclusive: bool
    default: Number
    tunable: bool
    description: str

    def allowed(self) -> str:
        """The allowed values as a phrase that completes "it must be ..."."""
        if not self.tunable:
            return f"only {format_number(self.default)} (not tunable)"
        kind = "an integer" if self.type == "int" else "a number"
        lo = None if self.minimum is None else format_number(self.minimum)
        hi = None if self.maximum is None else format_number(self.maximum)
        if lo is not None and hi is not None:
            if not self.min_exclusive and not self.max_exclusive:
                return f"{kind} from {lo} to {hi}"
            start = f"above {lo}" if self.min_exclusive else f"from {lo}"
            end = f"up to (not including) {hi}" if self.max_exclusive else f"up to {hi}"
            if self.type == "float":
                kind = "a decimal"
            return f"{kind} {start} {end}"
        if lo is not None:
            if self.minimum == 0 and not self.min_exclusive:
                return "0 or a positive " + ("integer" if self.type == "int" else "number")
            return f"{kind} above {lo}" if self.min_exclusive else f"{kind} of {lo} or more"
        if hi is not None:
            return f"{kind} below {hi}" if self.max_exclusive else f"{kind} of {hi} or less"
        return "any integer" if self.type == "int" else "any finite number"

    def in_range(self, value: Number) -> bool:
        """Whether `value` (already of the right type) is accepted."""
        if not self.tunable:
            return value == self.default
        if self.minimum is not None and (value < self.minimum or (self.min_exclusive and value == self.minimum)):
            return False
        if self.maximum is not None and (value > self.maximum or (self.max_exclusive and value == self.maximum)):
            return False
        return True


@dataclass(frozen=True)
class ModelShape:
    """The architecture figures that size a fine-tune's memory and compute (`tuneforge.capacity`), from
    the config.json of the model's Hugging Face weights (cited per model in models.toml)."""

    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    intermediate_size: int
    vocab_size: int
    tied_embeddings: bool
    explicit_head_dim: int | None = None  # config.json's head_dim where it is not hidden / heads (Gemma, Qwen3)
    # config.json's model_type: its registry entry (catalog/architectures.py) says which layers the adapters
    # wrap (Phi-3's fused qkv_proj and gate_up_proj, Llama's separate ones)
    architecture: str = "llama"

    @property
    def head_dim(self) -> int:
        return self.explicit_head_dim or self.hidden_size // self.attention_heads

    @classmethod
    def from_hf_config(cls, config: dict) -> ModelShape:
        """From a Hugging Face config.json's fields (e.g. of the weights a run will use); a config that
        leaves tie_word_embeddings out gets transformers' default for its model_type."""
        from tuneforge.model_folder import TIED_BY_DEFAULT

        return cls(
            layers=config["num_hidden_layers"],
            hidden_size=config["hidden_size"],
            attention_heads=config["num_attention_heads"],
            kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
            intermediate_size=config["intermediate_size"],
            vocab_size=config["vocab_size"],
            tied_embeddings=bool(config.get("tie_word_embeddings", config.get("model_type") in TIED_BY_DEFAULT)),
            explicit_head_dim=config.get("head_dim"),
            architecture=config.get("model_type") or "llama",
        )


@dataclass(frozen=True)
class BaseModelSpec:
    id: str  # OCI model name, e.g. "meta.llama-3.3-70b-instruct"
    display_name: str
    vendor: str  # "meta" | "cohere" (an imported model: its vendor, else its model_type)
    method: str  # "LORA" | "TFEW"
    training_config_type: str  # "LORA_TRAINING_CONFIG" | "TFEW_TRAINING_CONFIG"
    deprecated: bool
    architecture: str  # config.json's model_type ("llama", "cohere", ...): which engine code path loads the weights
    weights_repo: str  # Hugging Face repository of the open weights ("" for an imported model or a folder)
    context_tokens: int
    max_prompt_tokens: int | None
    max_completion_tokens: int | None
    params: dict[str, ParamSpec]  # in the spec tables' row order
    shape: ModelShape


def _param(name: str, row: dict) -> ParamSpec:
    spec = ParamSpec(
        name=name,
        type=row["type"],
        minimum=row.get("minimum"),
        maximum=row.get("maximum"),
        min_exclusive=row.get("min_exclusive", False),
        max_exclusive=row.get("max_exclusive", False),
        default=row["default"],
        tunable=row["tunable"],
        description=row["description"],
    )
    # A typo in the data file should fail loudly at load time, not as a strange 400 later.
    expected = int if spec.type == "int" else float
    if spec.type not in ("int", "float") or type(spec.default) is not expected:
        raise ValueError(f"{CATALOG_FILE}: {name}: default {spec.default!r} is not of type {spec.type}")
    if not spec.in_range(spec.default):
        raise ValueError(f"{CATALOG_FILE}: {name}: default {spec.default!r} is outside its own range")
    return spec


def _model(row: dict, tables: dict) -> BaseModelSpec:
    table = tables[row["hyperparameters"]]
    return BaseModelSpec(
        id=row["id"],
        display_name=row["display_name"],
        vendor=row["vendor"],
        method=row["method"],
        training_config_type=row["training_config_type"],
        deprecated=row["deprecated"],
        architecture=row["architecture"],
        weights_repo=row["weights_repo"],
        context_tokens=row["context_tokens"],
        max_prompt_tokens=row.get("max_prompt_tokens"),
        max_completion_tokens=row.get("max_completion_tokens"),
        params={name: _param(name, spec) for name, spec in table.items()},
        shape=ModelShape(**row["shape"], architecture=row["architecture"]),
    )


@functools.cache
def _data() -> dict:
    with open(CATALOG_FILE, "rb") as f:
        return tomllib.load(f)


@functools.cache
def _load() -> tuple[BaseModelSpec, ...]:
    data = _data()
    return tuple(_model(row, data["hyperparameters"]) for row in data["models"])


def list_models() -> list[BaseModelSpec]:
    """All catalog models, in file order (the seed's order)."""
    return list(_load())


@dataclass(frozen=True)
class FieldSpec:
    """One TrainingConfig field across the whole catalog: its type, its help text and the methods
    it applies to (every per-model range lives in that model's ParamSpec)."""

    name: str  # API camelCase name
    type: str  # "int" | "float"
    description: str
    methods: tuple[str, ...]  # e.g. ("LORA",) for the LoRA fields

    @property
    def python_type(self) -> type:
        return int if self.type == "int" else float


@functools.cache
def fields() -> dict[str, FieldSpec]:
    """Every hyperparameter any catalog model accepts, in the tables' row order (OCI's wire order:
    the common fields first, then the method's own)."""
    found: dict[str, FieldSpec] = {}
    for model in _load():
        for name, param in model.params.items():
            known = found.get(name)
            if known is not None and known.type != param.type:
                raise ValueError(f"{CATALOG_FILE}: {name} is {known.type} in one table and {param.type} in another")
            methods = (known.methods if known else ()) + (
                (model.method,) if not known or model.method not in known.methods else ()
            )
            found[name] = FieldSpec(name, param.type, known.description if known else param.description, methods)
    every_method = tuple(dict.fromkeys(m.method for m in _load()))  # DPO trains either method's adapter
    for name, param in dpo_params().items():
        found[name] = FieldSpec(name, param.type, param.description, every_method)
    return found


@functools.cache
def dpo_params() -> dict[str, ParamSpec]:
    """The fields a DPO_TRAINING_CONFIG adds to the base model's own table (models.toml [dpo]: beta)."""
    if _data()["dpo"]["training_config_type"] != DPO_TRAINING_CONFIG:
        raise ValueError(f"{CATALOG_FILE}: [dpo] training_config_type must be {DPO_TRAINING_CONFIG}")
    return {name: _param(name, row) for name, row in _data()["dpo"]["hyperparameters"].items()}


def get_model(model_id: str) -> BaseModelSpec:
    for model in _load():
        if model.id == model_id:
            return model
    known = ", ".join(m.id for m in _load())
    raise InvalidParameter("baseModelId", model_id, f"one of: {known}")


def spec_for_config(model_id: str, display_name: str, vendor: str | None, config: dict) -> BaseModelSpec:
    """A base model that is not in the catalog (an imported model, a model folder, a Hugging Face id),
    from its config.json: its architecture's method (catalog/architectures.py) with that method's OCI
    table, ranges and defaults as they are (models.toml [imported] says why), the context its
    max_position_embeddings allows, the shape `plan --gpus` sizes, no prompt/completion caps (OCI
    documents those for Command R 08-2024 only). InvalidParameter naming `model_id` and every problem
    when the architecture is not supported."""
    from tuneforge.catalog import architectures

    problems = architectures.check_config(config)
    positions = config.get("max_position_embeddings") if isinstance(config, dict) else None
    if not problems and (isinstance(positions, bool) or not isinstance(positions, int) or positions <= 0):
        problems.append(f"config.json: max_position_embeddings {positions!r} is not a positive integer (the context it allows)")
    if problems:
        raise InvalidParameter("baseModelId", model_id, "its config.json cannot be fine-tuned: " + "; ".join(problems))
    method = architectures.architecture(config["model_type"]).method
    imported = _data()["imported"][method]
    table = _data()["hyperparameters"][imported["hyperparameters"]]
    return BaseModelSpec(
        id=model_id,
        display_name=display_name,
        # The vendor says which chat format and hosting shapes apply (Cohere's or the generic ones), so a
        # Cohere architecture is a Cohere model whatever the importer typed.
        vendor="cohere" if method == "TFEW" else (vendor or config["model_type"]),
        method=method,
        training_config_type=imported["training_config_type"],
        deprecated=False,
        architecture=config["model_type"],
        weights_repo="",
        context_tokens=positions,
        max_prompt_tokens=None,
        max_completion_tokens=None,
        params={name: _param(name, spec) for name, spec in table.items()},
        shape=ModelShape.from_hf_config(config),
    )


def find_base_model(ref: str, name: str | None = None) -> tuple[BaseModelSpec, Path | None]:
    """What `--base-model` names, and the folder of its weights: a catalog id (None: its weights come
    from --weights or the engine's per-model lookup), a model folder holding config.json, or a Hugging
    Face id found offline (tuneforge/hf_cache.py: the hub cache, never the network). A folder or
    Hugging Face base is called `name` (default: `ref` as given). InvalidParameter when it is none of them."""
    from tuneforge import hf_cache

    for model in _load():
        if model.id == ref:
            return model, None
    folder = Path(ref).expanduser()
    if not (folder / "config.json").is_file():
        if folder.is_dir():
            raise InvalidParameter("baseModelId", ref, "a model folder must hold config.json (a Hugging Face model folder)")
        if "/" not in ref or not hf_cache.MODEL_ID.match(ref):
            known = ", ".join(m.id for m in _load())
            raise InvalidParameter(
                "baseModelId", ref, f"one of: {known}; or a model folder holding config.json; or a Hugging Face id (owner/name)"
            )
        try:
            folder = hf_cache.resolve(ref).path
        except TuneForgeError as err:
            raise InvalidParameter("baseModelId", ref, f"not a folder, and {err}") from None
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise InvalidParameter("baseModelId", ref, f"its config.json cannot be read: {err}") from None
    return spec_for_config(name or ref, ref, None, config), folder
