"""What a fine-tuning test does through the `oci` SDK: a learnable dataset, its upload, a cluster,
the create-model details, and waiting for a work request to end."""

from __future__ import annotations

import json
import random

from helpers.tiny_models import LLAMA
from helpers.waiting import wait_for

LORA_MODEL = LLAMA  # the base model of the tests' LoRA fine-tunes (the tiny Llama serves it)


def dataset_lines(n: int = 40, seed: int = 0, filler_digits: int = 0) -> bytes:
    """A learnable toy task: is the number odd? One-word completions. `filler_digits` random digits
    before each question make every step cost more (prompts of ~2 tokens per digit)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        a = rng.randint(0, 99)
        filler = "".join(f"{rng.randint(0, 9)} " for _ in range(filler_digits))
        lines.append(json.dumps({"prompt": f"{filler}Is {a} odd?", "completion": "yes" if a % 2 else "no"}))
    return ("\n".join(lines) + "\n").encode()


def upload(objects_client, name: str, body: bytes, bucket: str = "datasets") -> dict:
    """put_object the dataset; returns the ObjectStorageDataset fields for create_model."""
    namespace = objects_client.get_namespace().data
    objects_client.put_object(namespace, bucket, name, body)
    return {"namespace_name": namespace, "bucket_name": bucket, "object_name": name}


def create_cluster(ai, compartment: str, **kw):
    import oci

    details = oci.generative_ai.models.CreateDedicatedAiClusterDetails(
        type="FINE_TUNING",
        compartment_id=compartment,
        unit_count=kw.pop("unit_count", 2),
        unit_shape="LARGE_GENERIC",
        display_name=kw.pop("display_name", "ft-pool"),
        **kw,
    )
    return ai.create_dedicated_ai_cluster(details).data


def lora_model_details(compartment: str, cluster_id: str, dataset: dict, **config):
    import oci

    m = oci.generative_ai.models
    training_config = m.LoraTrainingConfig(**{"total_training_epochs": 1, "training_batch_size": 8, **config})
    return m.CreateModelDetails(
        compartment_id=compartment,
        base_model_id=LORA_MODEL,
        display_name="ft-test",
        fine_tune_details=m.FineTuneDetails(
            training_dataset=m.ObjectStorageDataset(**dataset),
            dedicated_ai_cluster_id=cluster_id,
            training_config=training_config,
        ),
    )


def wait_work_request(ai, wr_id: str, timeout: float = 120):
    final = ("SUCCEEDED", "FAILED", "CANCELED")
    return wait_for(lambda: (wr := ai.get_work_request(wr_id).data).status in final and wr, timeout, f"work request {wr_id}", 0.5)
