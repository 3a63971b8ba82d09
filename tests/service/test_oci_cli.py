"""The official OCI CLI (`oci-cli` from PyPI, in its own virtualenv as users install it: its click
pin differs from ours) driven against a live server with `--endpoint`: a whole flow from namespace
to fine-tuned model, with a dataset file over 128 MiB that the CLI uploads with its default
multipart settings, and an upload from stdin (always multipart)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest
from helpers.fine_tuning import dataset_lines
from helpers.servers import ROOT

OCI = ROOT / ".venv" / "ocicli" / "bin" / "oci"
COMPARTMENT = "ocid1.compartment.oc1..aaaacli"
pytestmark = pytest.mark.skipif(not OCI.exists(), reason="the OCI CLI is installed by `make setup` into .venv/ocicli")


@pytest.fixture(scope="module")
def cli(service, alice, tmp_path_factory):
    home = tmp_path_factory.mktemp("oci-cli")
    key = home / "key.pem"
    key.write_text(alice.private_pem)
    key.chmod(0o600)
    config = home / "config"
    config.write_text(
        f"[DEFAULT]\nuser={alice.user}\nfingerprint={alice.fingerprint}\ntenancy={alice.tenancy}\n"
        f"region=us-chicago-1\nkey_file={key}\n"
    )
    config.chmod(0o600)

    def run(*args: str, stdin: bytes | None = None) -> dict | None:
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "OCI_CLI_SUPPRESS_FILE_PERMISSIONS_WARNING": "True"}
        done = subprocess.run(
            [str(OCI), "--config-file", str(config), "--endpoint", service.endpoint, *args],
            input=stdin,
            capture_output=True,
            env=env,
            timeout=600,
        )
        assert done.returncode == 0, (args, done.stderr.decode()[-3000:])
        out = done.stdout.decode().strip()
        return json.loads(out) if out.startswith("{") else None

    return run


def test_the_oci_cli_runs_a_whole_flow(cli, tmp_path, backend):
    if backend == "sqlite":  # CI time: the SDK suites cover SQLite; the CLI drives the same routes, once, on PostgreSQL
        pytest.skip("runs on PostgreSQL only")
    namespace = cli("os", "ns", "get")["data"]
    cli("os", "bucket", "create", "--name", "cli-data", "--compartment-id", COMPARTMENT)

    # Over 128 MiB: the CLI switches to a multipart upload (128 MiB parts, in parallel) by itself.
    big = tmp_path / "big.bin"
    chunk = hashlib.sha256(b"tuneforge").digest() * 32768  # 1 MiB
    with open(big, "wb") as f:
        for i in range(129):
            f.write(chunk[i:] + chunk[:i])
    cli("os", "object", "put", "--bucket-name", "cli-data", "--file", str(big), "--name", "big.bin", "--verify-checksum")
    head = cli("os", "object", "head", "--bucket-name", "cli-data", "--name", "big.bin")
    assert int(head["content-length"]) == big.stat().st_size and head["opc-multipart-md5"].endswith("-2")
    got = tmp_path / "back.bin"
    cli("os", "object", "get", "--bucket-name", "cli-data", "--name", "big.bin", "--file", str(got))
    assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()

    # stdin is always a multipart upload; this one is the training dataset
    cli("os", "object", "put", "--bucket-name", "cli-data", "--file", "-", "--name", "train.jsonl", stdin=dataset_lines(40))
    cluster = cli(
        "generative-ai",
        "dedicated-ai-cluster",
        "create",
        "--compartment-id",
        COMPARTMENT,
        "--type",
        "FINE_TUNING",
        "--unit-count",
        "1",
        "--unit-shape",
        "LARGE_GENERIC",
        "--wait-for-state",
        "SUCCEEDED",
    )
    cluster_id = cluster["data"]["resources"][0]["identifier"]
    details = {
        "trainingDataset": {
            "datasetType": "OBJECT_STORAGE",
            "namespaceName": namespace,
            "bucketName": "cli-data",
            "objectName": "train.jsonl",
        },
        "dedicatedAiClusterId": cluster_id,
        "trainingConfig": {"trainingConfigType": "LORA_TRAINING_CONFIG", "totalTrainingEpochs": 1, "learningRate": 0.05},
    }
    created = cli(
        "generative-ai",
        "model",
        "create",
        "--compartment-id",
        COMPARTMENT,
        "--base-model-id",
        "meta.llama-3.3-70b-instruct",
        "--display-name",
        "from-the-cli",
        "--fine-tune-details",
        json.dumps(details),
        "--wait-for-state",
        "SUCCEEDED",
        "--wait-for-state",
        "FAILED",
        "--max-wait-seconds",
        "300",
    )
    assert created["data"]["status"] == "SUCCEEDED", created
    model_id = created["data"]["resources"][0]["identifier"]
    model = cli("generative-ai", "model", "get", "--model-id", model_id)["data"]
    assert model["lifecycle-state"] == "ACTIVE" and 0 <= model["model-metrics"]["final-accuracy"] <= 1
    listed = cli(
        "generative-ai", "model-collection", "list-models", "--compartment-id", COMPARTMENT, "--display-name", "from-the-cli"
    )
    assert [m["id"] for m in listed["data"]["items"]] == [model_id]
    cli("generative-ai", "model", "change-compartment", "--model-id", model_id, "--compartment-id", COMPARTMENT + "moved")
    assert cli("generative-ai", "model", "get", "--model-id", model_id)["data"]["compartment-id"] == COMPARTMENT + "moved"
    cli("generative-ai", "model", "delete", "--model-id", model_id, "--force", "--wait-for-state", "SUCCEEDED")
    assert cli("generative-ai", "model", "get", "--model-id", model_id)["data"]["lifecycle-state"] == "DELETED"
