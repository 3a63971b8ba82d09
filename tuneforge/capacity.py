"""The capacity model behind `tuneforge plan --gpus`: for a catalog model's real architecture, the memory
a fine-tune needs on each GPU (weights, adapter + optimizer, activations, logits), whether it fits, the
training time and GPU-hours for the dataset, and what to change when it does not fit.

Every term follows how the engine lays the run out (docs/scale-out.md derives each one):
  - frozen base: linear layers in the compute dtype (bf16 on GPUs; 4-bit NF4 with --quantize-base nf4),
    embeddings and norms fp32, the LM head its own bf16 copy (precision.py); sharded over every GPU by
    FSDP2, which gathers two decoder layers at a time (the one running, the one prefetched) and keeps the
    root group (final norm, LM head) gathered for the whole step;
  - adapter: fp32 parameter, gradient, AdamW's two moments and the best-so-far copy (20 bytes a
    parameter), sharded like the base;
  - activations: what autograd keeps per token and decoder layer (coefficients below) for the longest
    micro-batch a rank runs, or with --activation-checkpointing each layer's input plus one layer's;
  - logits: only at completion positions, in chunks of CHUNK_LOGITS once there are more (loss.py).
Time: 4 FLOPs a parameter and token for the base (forward + input gradients; a frozen weight gets no
weight gradient), 6 with activation checkpointing (the forward runs twice), plus attention and the LM head
at completion positions, evaluation forwards (eval_plan.py), at UTILISATION of the GPU's dense bf16 peak;
FSDP's all-gathers overlap compute but a step cannot be faster than they are (the inter-machine link is
the bottleneck on several machines). Figures are estimates; bench/capacity_check.py measures them.

Stdlib only: `tuneforge plan` never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from tuneforge.catalog import ModelShape, architectures
from tuneforge.engine.eval_plan import EvalPlan

GIB = 2**30


@dataclass(frozen=True)
class GpuType:
    name: str
    memory_gib: float
    bf16_flops: float  # dense bf16 peak, FLOP/s (vendor data sheets, SXM parts)
    link_bytes_per_s: float  # all-gather bandwidth inside one machine (NVLink), bytes/s per GPU


GPU_TYPES = {
    "h100": GpuType("NVIDIA H100 SXM 80 GB", 80, 989e12, 450e9),
    "h200": GpuType("NVIDIA H200 SXM 141 GB", 141, 989e12, 450e9),
    "a100": GpuType("NVIDIA A100 SXM 80 GB", 80, 312e12, 240e9),
}
INTER_NODE_BYTES_PER_S = 50e9  # per GPU between machines: a 400 Gb/s NIC per GPU, the usual H100/H200 cluster fabric
UTILISATION = 0.35  # share of the bf16 peak a training step reaches (model FLOPs utilisation), stated, not measured
RESERVE_GIB, RESERVE_SHARE = 1.5, 0.05  # CUDA context and kernels; the caching allocator's fragmentation
NF4_BYTES = (
    0.5 + 1 / 64 + 4 / (64 * 256)
)  # 4-bit codes, 8-bit block scales (blocks of 64), their fp32 scales (QLoRA's double quantization)
TEMPLATE_TOKENS = 12  # tokens the chat template adds around each example (turn markers), when counting with a tokenizer
CHARS_PER_TOKEN = 4.0  # estimate without a tokenizer: ~4 characters a token for English text (BPE vocabularies of 32k-256k)
CHUNK_LOGITS = 2**26  # = engine/loss.py: logits per chunk once completion positions would exceed it


@dataclass(frozen=True)
class Workload:
    """What the dataset and the hyperparameters ask for."""

    method: str  # LORA | TFEW
    lora_r: int
    lora_dropout: float
    batch_size: int
    epochs: int
    patience: int
    n_train: int
    n_val: int
    train_tokens: int  # all tokens of the training split (prompt, completion, template)
    train_completion_tokens: int
    val_tokens: int
    longest: int  # tokens of the longest example: a micro-batch is padded to its longest row
    longest_completion: int
    tokens_counted: bool  # True: counted with the model's tokenizer; False: CHARS_PER_TOKEN estimate


@dataclass(frozen=True)
class Layout:
    gpu_type: str = "h100"
    gpus_per_node: int = 1
    nodes: int = 1
    gpu_memory_gib: float | None = None  # default: the GPU type's
    activation_checkpointing: bool = False
    quantize_base: str | None = None
    micro_batch_size: int | None = None
    compute_bytes: int = 2  # 2: bf16 matmuls (GPUs); 4: fp32 (CPUs without bf16 hardware, for bench/capacity_check.py)

    @property
    def world(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def memory_gib(self) -> float:
        return self.gpu_memory_gib if self.gpu_memory_gib is not None else GPU_TYPES[self.gpu_type].memory_gib


@dataclass
class Estimate:
    layout: Layout
    gib: dict[str, float]  # per-GPU memory by part
    total_gib: float
    fits: bool
    activations_gib: dict[str, float]  # with and without activation checkpointing
    rows_per_pass: int
    passes_per_step: int
    total_steps: int
    train_flops: float
    step_seconds: float
    bound_by: str  # "compute" | "communication"
    hours: float
    gpu_hours: float
    tokens_counted: bool
    suggestions: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """camelCase, like the rest of plan's JSON."""
        layout = asdict(self.layout) | {"world": self.layout.world, "gpu_memory_gib": self.layout.memory_gib}
        return {_camel(k): v for k, v in (asdict(self) | {"layout": {_camel(k): v for k, v in layout.items()}}).items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def parameter_counts(shape: ModelShape) -> dict[str, int]:
    """Parameters by part: one decoder layer's linear layers and norms, embeddings, LM head."""
    h, d = shape.hidden_size, shape.head_dim
    q, kv = shape.attention_heads * d, shape.kv_heads * d
    linear = h * q + 2 * h * kv + q * h + 3 * h * shape.intermediate_size
    return {"layerLinear": linear, "layerNorms": 2 * h, "embeddings": shape.vocab_size * h, "head": shape.vocab_size * h}


def linear_dims(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(in, out) features of each decoder-block linear layer an architecture's adapters may wrap, by name
    (catalog/architectures.py's lora_targets and ia3_targets): the separate projections, and Phi-3's fused
    qkv_proj (q, k and v stacked) and gate_up_proj (gate and up stacked)."""
    h, d, i = shape.hidden_size, shape.head_dim, shape.intermediate_size
    q, kv = shape.attention_heads * d, shape.kv_heads * d
    return {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
        "qkv_proj": (h, q + 2 * kv),
        "gate_up_proj": (h, 2 * i),
    }


def adapter_parameters(shape: ModelShape, method: str, r: int) -> int:
    """The adapter's parameters on the layers the architecture's registry entry targets: LoRA r x (in + out)
    per layer (A and B); (IA)^3 one vector per layer, on its input for a feed-forward target, else on its output."""
    # A --weights folder of an architecture the registry lacks (training refuses it): sized as Llama's layers.
    arch = architectures.architecture(shape.architecture) or architectures.ARCHITECTURES["llama"]
    dims = linear_dims(shape)
    if method == "LORA":
        per_layer = sum(r * (dims[t][0] + dims[t][1]) for t in arch.lora_targets)
    else:
        per_layer = sum(dims[t][0] if t in arch.ia3_feedforward else dims[t][1] for t in arch.ia3_targets)
    return shape.layers * per_layer


def activation_bytes_per_token_layer(shape: ModelShape, method: str, dropout: float, mm: int) -> float:
    """Bytes autograd keeps per token in one decoder layer. The residual stream and activations are fp32
    (4 bytes), matmul inputs are kept in the matmul dtype (`mm` bytes):
      two norms keep their fp32 input (4h each); attention keeps q, k, v and its output in fp32;
      SwiGLU keeps the gate's pre-activation, its SiLU and the up projection (3 x 4i);
      LoRA keeps each of its 7 linear inputs in mm bytes (plus a 1-byte dropout mask when dropout > 0;
      without dropout in fp32 the layers reading one tensor share it);
      (IA)^3 keeps the plain linears' inputs in mm bytes and the scaled k, v outputs and down input in fp32."""
    h, d, i = shape.hidden_size, shape.head_dim, shape.intermediate_size
    q, kv = shape.attention_heads * d, shape.kv_heads * d
    common = 2 * 4 * h + 4 * (2 * q + 2 * kv) + 3 * 4 * i
    if method == "LORA" and dropout > 0:  # each LoRA its own masked copy and mask
        return common + (mm + 1) * (5 * h + q + i)
    if method == "LORA" and mm == 4:  # no copy: q, k, v share the norm's output, gate and up the other's
        return common + 4 * (2 * h + q + i)
    if method == "LORA":  # each casts its input to bf16
        return common + mm * (5 * h + q + i)
    return common + mm * (5 * h + q + i) + 4 * (2 * kv + i)


def logit_bytes(mm: int) -> int:
    """Per completion position and vocabulary entry at the loss: the LM head's output (mm bytes), its
    fp32 copy (none when it is fp32 already), the log-softmax kept for the backward pass and the
    gradient alive next to them (4 + 4). bf16: 14 (bench/RESULTS.md measured 12.5), fp32: 12."""
    return mm + (4 if mm < 4 else 0) + 8


def estimate(shape: ModelShape, work: Workload, layout: Layout, suggest: bool = True) -> Estimate:
    mm = layout.compute_bytes
    world = layout.world
    counts = parameter_counts(shape)
    layer_bytes = counts["layerLinear"] * (NF4_BYTES if layout.quantize_base else mm) + counts["layerNorms"] * 4
    head_bytes = 0 if shape.tied_embeddings and mm == 4 else counts["head"] * mm  # bf16: the head gets its own copy
    base = shape.layers * layer_bytes + counts["embeddings"] * 4 + head_bytes + shape.hidden_size * 4
    gathered = 0.0 if world == 1 else 2 * layer_bytes + head_bytes + shape.hidden_size * 4
    n_adapter = adapter_parameters(shape, work.method, work.lora_r)

    per_rank = math.ceil(work.batch_size / world)
    rows = min(layout.micro_batch_size or per_rank, per_rank)
    passes = math.ceil(per_rank / rows)
    tokens = rows * work.longest
    positions = rows * work.longest_completion
    per_layer = activation_bytes_per_token_layer(shape, work.method, work.lora_dropout, mm)
    edges = 2 * 4 * shape.hidden_size * tokens  # the embeddings' output and the final norm's
    without_ckpt = shape.layers * per_layer * tokens + edges
    with_ckpt = shape.layers * 4 * shape.hidden_size * tokens + per_layer * tokens + edges
    chunk_rows = max(1, CHUNK_LOGITS // shape.vocab_size)
    logits = min(positions, chunk_rows) * shape.vocab_size * logit_bytes(mm)
    gib = {
        "weights": base / world / GIB,
        "gatheredWeights": gathered / GIB,
        "adapterAndOptimizer": n_adapter * 20 / world / GIB,
        "activations": (with_ckpt if layout.activation_checkpointing else without_ckpt) / GIB,
        "logits": logits / GIB,
    }
    gib["reserve"] = RESERVE_GIB + RESERVE_SHARE * layout.memory_gib
    total = sum(gib.values())

    total_steps = work.epochs * math.ceil(work.n_train / work.batch_size)
    flops = _train_flops(shape, counts, work, layout, total_steps)
    gpu = GPU_TYPES[layout.gpu_type]
    compute = flops / (world * gpu.bf16_flops * UTILISATION)
    link = INTER_NODE_BYTES_PER_S if layout.nodes > 1 else gpu.link_bytes_per_s
    # Per pass each rank gathers every layer twice (forward, then backward: layers are resharded after
    # their forward) and the LM head once; it receives (world - 1) / world of each.
    gather_bytes = 2 * shape.layers * layer_bytes + head_bytes
    comm = total_steps * passes * gather_bytes * (world - 1) / world / link if world > 1 else 0.0
    seconds = max(compute, comm)
    est = Estimate(
        layout=layout,
        gib={k: round(v, 2) for k, v in gib.items()},
        total_gib=round(total, 2),
        fits=total <= layout.memory_gib,
        activations_gib={"withCheckpointing": round(with_ckpt / GIB, 2), "withoutCheckpointing": round(without_ckpt / GIB, 2)},
        rows_per_pass=rows,
        passes_per_step=passes,
        total_steps=total_steps,
        train_flops=flops,
        step_seconds=seconds / max(total_steps, 1),
        bound_by="communication" if comm > compute else "compute",
        hours=seconds / 3600,
        gpu_hours=seconds * world / 3600,
        tokens_counted=work.tokens_counted,
    )
    if suggest and not est.fits:
        est.suggestions = _suggestions(shape, work, layout)
    return est


def _train_flops(shape: ModelShape, counts: dict, work: Workload, layout: Layout, total_steps: int) -> float:
    """FLOPs of the whole run: training passes over the training split `epochs` times, evaluation cycles
    (forward only, as many and as large as eval_plan.EvalPlan plans them) and the final evaluation."""
    base_params = shape.layers * counts["layerLinear"]
    attention = 2 * 2 * shape.layers * shape.attention_heads * shape.head_dim  # QK^T and AV per token and context position
    mean_len = work.train_tokens / max(work.n_train, 1)
    per_token_forward = 2 * base_params + attention * mean_len / 2  # causal: half the positions on average
    passes = 3 if layout.activation_checkpointing else 2  # forward, input gradients (+ the recompute)
    head = 2 * counts["head"] * (2 if not layout.activation_checkpointing else 3)  # completion positions only
    train = work.epochs * (work.train_tokens * per_token_forward * passes + work.train_completion_tokens * head)
    schedule = EvalPlan.make(total_steps, work.patience, work.n_train, work.epochs, work.n_val)  # the engine's own
    cycles, cycle_examples = schedule.cycles, schedule.examples
    val_mean = work.val_tokens / max(work.n_val, 1)
    evaluation = (cycles * cycle_examples + work.n_val) * val_mean * per_token_forward
    return train + evaluation


def _suggestions(shape: ModelShape, work: Workload, layout: Layout) -> list[str]:
    """What makes it fit, cheapest change first; each one checked with the same model."""
    out = []

    def fits(**changes) -> bool:
        return estimate(shape, work, replace(layout, **changes), suggest=False).fits

    if not layout.activation_checkpointing and fits(activation_checkpointing=True):
        out.append("add --activation-checkpointing (each decoder layer recomputed in the backward pass: ~1/3 more compute)")
    for micro in (4, 2, 1):
        if micro < (layout.micro_batch_size or work.batch_size) and fits(micro_batch_size=micro, activation_checkpointing=True):
            out.append(f"--micro-batch-size {micro} with --activation-checkpointing (the same result, in smaller passes)")
            break
    for gpus in (2, 4, 8):
        if gpus > layout.gpus_per_node and fits(gpus_per_node=gpus, activation_checkpointing=True, quantize_base=None):
            out.append(f"{gpus} GPUs (--nproc-per-node {gpus}) with --activation-checkpointing: FSDP2 shards the base over them")
            break
    else:
        for nodes in (2, 4, 8):
            if nodes > layout.nodes and fits(
                gpus_per_node=max(layout.gpus_per_node, 8), nodes=nodes, activation_checkpointing=True
            ):
                out.append(f"{nodes} machines of 8 GPUs (--nnodes {nodes}) with --activation-checkpointing")
                break
    if (
        work.method == "LORA"
        and not layout.quantize_base
        and fits(gpus_per_node=1, nodes=1, quantize_base="nf4", activation_checkpointing=True)
    ):
        out.append("--quantize-base nf4 --activation-checkpointing on one GPU (QLoRA: a 4-bit frozen base)")
    for name, gpu in GPU_TYPES.items():
        if gpu.memory_gib > layout.memory_gib and fits(gpu_type=name, gpu_memory_gib=gpu.memory_gib):
            out.append(f"GPUs with more memory: {gpu.name} (--gpu-type {name})")
            break
    return out or ["no layout of up to 8 machines of 8 GPUs fits: shorten the longest examples"]


def workload(
    method: str,
    config,
    n_train: int,
    n_val: int,
    lengths: list[tuple[int, int]],
    val_lengths: list[tuple[int, int]],
    tokens_counted: bool,
) -> Workload:
    """From (prompt, completion) token counts of the training and validation examples; the template's
    tokens are added to every example (to the completion: its end-of-turn token is trained on)."""
    train = [(p + TEMPLATE_TOKENS - 1, c + 1) for p, c in lengths]
    val = [(p + TEMPLATE_TOKENS - 1, c + 1) for p, c in val_lengths]
    longest = max(train + val, key=lambda pc: pc[0] + pc[1])
    return Workload(
        method=method,
        lora_r=config.lora_r or 0,
        lora_dropout=config.lora_dropout or 0.0,
        batch_size=config.training_batch_size,
        epochs=config.total_training_epochs,
        patience=config.early_stopping_patience,
        n_train=n_train,
        n_val=n_val,
        train_tokens=sum(p + c for p, c in train),
        train_completion_tokens=sum(c for _, c in train),
        val_tokens=sum(p + c for p, c in val),
        longest=sum(longest),
        longest_completion=max(c for _, c in train + val),
        tokens_counted=tokens_counted,
    )


def estimated_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))
