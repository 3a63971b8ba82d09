"""Issue 23's end-to-end run on the stand-in: DPO on the bundled preference pairs through OCI's API (the
`oci` SDK's generic call_api with DPO_TRAINING_CONFIG) and OpenAI's fine-tuning jobs API (the `openai` SDK,
`method: {type: "dpo"}`), on a live `tuneforge serve` (SQLite, a temporary data dir) started the way the tests
start it (tests/helpers). Prints each run's held-out figures from its model.json: the DPO loss and reward
accuracy on the 48 pairs of the validation split.

    .venv/bin/python scripts/dpo_doors_on_stand_in.py            # 1 epoch each, ~6 min on 2 idle cores

The CLI door is `tuneforge train --method dpo` (docs/dpo.md); too slow for CI, so run here by hand.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import openai  # noqa: E402
from helpers.clients import clients  # noqa: E402
from helpers.fine_tuning import LORA_MODEL, create_cluster, upload, wait_work_request  # noqa: E402
from helpers.identities import new_identity  # noqa: E402
from helpers.servers import running_service  # noqa: E402
from helpers.waiting import wait_for  # noqa: E402

from tuneforge.engine.weights import resolve_weights  # noqa: E402

PAIRS = ROOT / "tuneforge" / "examples" / "dates_preferences.jsonl"
COMPARTMENT = "ocid1.compartment.oc1..aaaadpostandin"


def main() -> None:
    weights = resolve_weights("stand-in", model_id=LORA_MODEL, weights_repo="x").path
    with tempfile.TemporaryDirectory(prefix="tuneforge-dpo-doors-") as tmp, running_service("sqlite", Path(tmp), weights) as svc:
        me = new_identity("dpo-stand-in")
        svc.register(me)
        ai, objects = clients(svc, me)
        cluster = create_cluster(ai, COMPARTMENT)
        started = time.time()

        dataset = upload(objects, "dpo/dates_preferences.jsonl", PAIRS.read_bytes())
        body = {
            "compartmentId": COMPARTMENT,
            "baseModelId": LORA_MODEL,
            "displayName": "dpo-stand-in-oci",
            "fineTuneDetails": {
                "trainingDataset": {
                    "datasetType": "OBJECT_STORAGE",
                    **{"namespaceName": dataset["namespace_name"], "bucketName": dataset["bucket_name"]},
                    "objectName": dataset["object_name"],
                },
                "dedicatedAiClusterId": cluster.id,
                "trainingConfig": {"trainingConfigType": "DPO_TRAINING_CONFIG", "totalTrainingEpochs": 1},
            },
        }
        created = ai.base_client.call_api(
            resource_path="/models",
            method="POST",
            header_params={"accept": "application/json", "content-type": "application/json"},
            body=body,
            response_type="Model",
        )
        work_request = wait_work_request(ai, created.headers["opc-work-request-id"], timeout=3600)
        metrics = ai.get_model(created.data.id).data.model_metrics
        print(
            f"OCI CreateModel DPO_TRAINING_CONFIG: {work_request.status}; held-out reward accuracy "
            f"{metrics.final_accuracy:.3f}, DPO loss {metrics.final_loss:.4f} ({time.time() - started:.0f} s)"
        )

        started = time.time()
        key = svc.cli("api-keys", "create-bearer", "--tenancy", me.tenancy, "--user", me.user).stdout.strip()
        client = openai.OpenAI(base_url=f"{svc.endpoint}/openai/v1", api_key=key, max_retries=0, timeout=120)
        file = client.files.create(file=("dates_preferences.jsonl", PAIRS.read_bytes()), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model=LORA_MODEL, training_file=file.id, method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1}}}
        )
        done = wait_for(
            lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed", "cancelled") and j,
            3600,
            f"job {job.id}",
            2,
        )
        evals = [e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=1000) if e.type == "metrics" and e.data]
        last = next((d for d in evals if "valid_loss" in d or "full_valid_loss" in d), {})
        print(
            f"OpenAI fine_tuning.jobs method dpo: {done.status}, {done.fine_tuned_model}, trained_tokens "
            f"{done.trained_tokens}; last validation metrics {json.dumps(last)} ({time.time() - started:.0f} s)"
        )
        for result in sorted(Path(tmp).glob("data/**/model.json")):
            run = json.loads(result.read_text())
            if run.get("trainingMethod") == "dpo":
                m = run["modelMetrics"]
                print(
                    f"  {result.parent.parent.name}: model.json finalAccuracy (held-out reward accuracy) "
                    f"{m['finalAccuracy']:.3f}, finalLoss {m['finalLoss']:.4f}"
                )


if __name__ == "__main__":
    main()
