"""OCI's imported models and model discovery through the official `oci` SDK (and the OCI CLI) against a
live server: an import from a Hugging Face hub cache laid out as `huggingface_hub` leaves it (branch and
commit honoured), from an Object Storage prefix written by `oci os object bulk-upload` (multipart shards;
deleting the objects afterwards leaves the model whole), broken folders that end FAILED with every
problem named and no server path, the access token never echoed, list filters and paging, update,
changeCompartment, delete refused while a fine-tune uses the model; `tuneforge models import` on the
same checks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.clients import clients
from helpers.fine_tuning import create_cluster, dataset_lines, upload, wait_work_request
from helpers.identities import new_identity
from helpers.servers import ROOT, running_service
from helpers.tiny_models import TINY_EXTRA, build_model, build_tokenizer, save_tiny_checkpoint
from helpers.waiting import wait_for

from tuneforge.model_folder import check

COMPARTMENT = "ocid1.compartment.oc1..aaaaimports"
OTHER = "ocid1.compartment.oc1..aaaaelsewhere"
HUB_ID = "tiny-org/tiny-chat"
COMMIT_LLAMA = "a1" * 20
COMMIT_COHERE = "c0ffee" + "0" * 34
OCI_CLI = ROOT / ".venv" / "ocicli" / "bin" / "oci"
SECRET = "hf_doNotEchoThis0123456789"


def hub_cache(root: Path, model_id: str, commits: dict[str, Path], refs: dict[str, str]) -> None:
    """Lay model folders out as huggingface_hub's cache does: blobs by content hash, snapshots of
    relative symlinks into them, refs/<branch> holding a commit."""
    repo = root / ("models--" + model_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    for commit, folder in commits.items():
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for f in folder.iterdir():
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            shutil.copyfile(f, repo / "blobs" / digest)
            (snapshot / f.name).symlink_to(Path("../../blobs") / digest)
    for branch, commit in refs.items():
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / branch).write_text(commit)


def shard(folder: Path) -> None:
    """Split model.safetensors into two shards with an index, as save_pretrained does for large models."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :]), 1):
        file = f"model-0000{i}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, folder / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "model.safetensors").unlink()


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def models_root(tmp_path_factory, tiny_llama, tiny_cohere) -> Path:
    """A --models-dir holding a hub cache (the tiny Llama on main, the tiny Cohere on branch `cohere`) and
    plain folders broken in one way each, and in every way at once."""
    root = tmp_path_factory.mktemp("models")
    hub_cache(
        root, HUB_ID, {COMMIT_LLAMA: tiny_llama, COMMIT_COHERE: tiny_cohere}, {"main": COMMIT_LLAMA, "cohere": COMMIT_COHERE}
    )
    broken = root / "broken"
    for name in ("missing-shard", "unknown-arch", "bad-shapes", "everything"):
        shutil.copytree(tiny_llama, broken / name)
    shard(broken / "missing-shard")
    (broken / "missing-shard" / "model-00002-of-00002.safetensors").unlink()
    edit_config(broken / "unknown-arch", model_type="mystery_lm", architectures=["MysteryForCausalLM"])
    edit_config(broken / "bad-shapes", intermediate_size=96)
    everything = broken / "everything"
    shard(everything)
    (everything / "model-00001-of-00002.safetensors").unlink()
    edit_config(everything, hidden_size=48)
    (everything / "chat_template.jinja").unlink()
    return root


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory, tiny_weights, models_root):
    with running_service(backend, tmp_path_factory.mktemp("imports"), tiny_weights, start=False) as svc:
        svc.args = ["--models-dir", str(models_root)]
        svc.start()
        yield svc


@pytest.fixture(scope="module")
def sdk(server):
    identity = new_identity("importer")
    server.register(identity)
    return (*clients(server, identity), identity)


def hub_source(model_id: str = HUB_ID, **kw):
    import oci

    return oci.generative_ai.models.HuggingFaceModel(source_type="HUGGING_FACE_MODEL", model_id=model_id, **kw)


def create(ai, source, **kw):
    import oci

    details = oci.generative_ai.models.CreateImportedModelDetails(compartment_id=COMPARTMENT, data_source=source, **kw)
    return ai.create_imported_model(details)


def finished(ai, model_id: str, timeout: float = 120):
    def done():
        model = ai.get_imported_model(model_id).data
        return model if model.lifecycle_state in ("ACTIVE", "FAILED") else None

    return wait_for(done, timeout, f"imported model {model_id}", 0.3)


def leftovers(server) -> list[str]:
    """What a failed import may not leave: staging folders, folders of models that are not ACTIVE."""
    folder = server.data_dir / "imported-models"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_hub_cache_import_honours_branch_and_commit(server, sdk):
    ai, _, _ = sdk
    created = create(ai, hub_source(access_token=SECRET), display_name="tiny-main", vendor="tinyco")
    assert created.data.lifecycle_state == "CREATING" and created.headers["opc-work-request-id"]
    assert created.data.data_source.access_token is None
    model = finished(ai, created.data.id)
    assert model.lifecycle_state == "ACTIVE", model.lifecycle_details
    assert model.id.startswith("ocid1.generativeaiimportedmodel.oc1.local.")
    assert model.capabilities == ["TEXT_TO_TEXT"] and model.vendor == "tinyco"
    assert model.data_source.model_id == HUB_ID and model.data_source.access_token is None
    assert model.system_tags["tuneforge"]["architecture"] == "llama"
    wr = ai.get_work_request(created.headers["opc-work-request-id"]).data
    assert wr.status == "SUCCEEDED" and wr.operation_type == "CREATE_IMPORTED_MODEL"
    logs = " ".join(e.message for e in ai.list_work_request_logs(wr.id).data.items)
    assert COMMIT_LLAMA in logs and "chat template" in logs
    # The server's copy is whole and its own: a folder named by the OCID that passes every check.
    assert check(server.data_dir / "imported-models" / model.id).ok

    on_branch = finished(ai, create(ai, hub_source(branch="cohere")).data.id)
    assert on_branch.lifecycle_state == "ACTIVE" and on_branch.system_tags["tuneforge"]["architecture"] == "cohere"
    by_prefix = finished(ai, create(ai, hub_source(commit=COMMIT_COHERE[:8])).data.id)
    assert by_prefix.system_tags["tuneforge"]["architecture"] == "cohere"
    by_commit = finished(ai, create(ai, hub_source(branch="cohere", commit=COMMIT_LLAMA)).data.id)
    assert by_commit.system_tags["tuneforge"]["architecture"] == "llama"  # a commit names one snapshot, whatever the branch

    missing = finished(ai, create(ai, hub_source(commit="deadbeef")).data.id)
    assert missing.lifecycle_state == "FAILED" and "no snapshot of commit deadbeef" in missing.lifecycle_details
    no_branch = finished(ai, create(ai, hub_source(branch="nope")).data.id)
    assert "no branch nope" in no_branch.lifecycle_details and "main" in no_branch.lifecycle_details
    unknown = finished(ai, create(ai, hub_source("someone/not-here")).data.id)
    assert "not found in the server's Hugging Face cache and its 1 models folder(s)" in unknown.lifecycle_details
    for failed in (missing, no_branch, unknown):
        assert str(server.data_dir.parent) not in failed.lifecycle_details and "/tmp" not in failed.lifecycle_details


def test_the_access_token_is_never_echoed_stored_or_logged(server, sdk):
    ai, _, _ = sdk
    created = create(ai, hub_source(access_token=SECRET), display_name="with-token")
    finished(ai, created.data.id)
    listed = ai.list_imported_models(COMPARTMENT, display_name="with-token").data.items
    assert [m.data_source.access_token for m in listed] == [None]
    assert SECRET not in server.log.read_text()
    if server.database_url is None:
        assert not any(SECRET.encode() in p.read_bytes() for p in server.data_dir.glob("*.db*"))


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        (
            "missing-shard",
            ["1 of 2 shard(s) missing: model-00002-of-00002.safetensors", "tensor(s) the config implies are missing"],
        ),
        ("unknown-arch", ["'mystery_lm'", "supported architectures: llama (Llama)"]),
        ("bad-shapes", ["do not have the shape config.json implies", "model.layers.0.mlp.gate_proj.weight is [64, 32]"]),
        (
            "everything",
            [
                "1 of 2 shard(s) missing: model-00001-of-00002.safetensors",
                "8 tensor(s) the config implies are missing: model.embed_tokens.weight",
                "model.layers.1.self_attn.o_proj.weight is [32, 32] in model-00002-of-00002.safetensors, the config implies [48, 32]",
                "no chat template",
            ],
        ),
    ],
)
def test_a_broken_folder_fails_with_every_problem_named(server, sdk, folder, expected):
    ai, _, _ = sdk
    created = create(ai, hub_source(f"broken/{folder}"), display_name=f"broken-{folder}")
    model = finished(ai, created.data.id)
    assert model.lifecycle_state == "FAILED"
    for text in expected:
        assert text in model.lifecycle_details, model.lifecycle_details
    assert "/" + "tmp" not in model.lifecycle_details and str(server.data_dir) not in model.lifecycle_details
    errors = [e.message for e in ai.list_work_request_errors(created.headers["opc-work-request-id"]).data.items]
    assert len(errors) >= len(expected) - 1 and all(e in model.lifecycle_details for e in errors)
    assert ai.get_work_request(created.headers["opc-work-request-id"]).data.status == "FAILED"
    assert model.id not in leftovers(server) and not [name for name in leftovers(server) if name.startswith(".staging")]


def test_bad_sources_are_refused_at_once_naming_the_field(server, sdk):
    import oci

    ai, storage, _ = sdk
    m = oci.generative_ai.models
    cases = [
        (hub_source("../etc"), "dataSource.modelId"),
        (hub_source(commit="xyz"), "dataSource.commit"),
        (m.ObjectStorageObject(source_type="OBJECT_STORAGE_OBJECT", namespace_name="other", bucket_name="b"), "namespaceName"),
        (
            m.ObjectStorageObject(
                source_type="OBJECT_STORAGE_OBJECT", namespace_name=storage.get_namespace().data, bucket_name="no-such-bucket"
            ),
            "dataSource.bucketName",
        ),
        (
            m.ObjectStorageObject(
                source_type="OBJECT_STORAGE_OBJECT", namespace_name="x", bucket_name="b", region="us-phoenix-1"
            ),
            "dataSource.region: 'us-phoenix-1' is not allowed; it must be this server's region 'local'",
        ),
    ]
    for source, field in cases:
        with pytest.raises(oci.exceptions.ServiceError) as err:
            create(ai, source)
        assert err.value.status == 400 and field in err.value.message, err.value.message
    with pytest.raises(oci.exceptions.ServiceError) as err:
        create(ai, hub_source(), capabilities=["EMBEDDING"])
    assert err.value.status == 400 and "capabilities: EMBEDDING not allowed" in err.value.message


def test_list_filters_paging_update_and_change_compartment(server, sdk):
    import oci

    ai, _, _ = sdk
    ids = [create(ai, hub_source(), display_name=f"page-{i}", vendor="pager").data.id for i in range(3)]
    for model_id in ids:
        finished(ai, model_id)
    everything = oci.pagination.list_call_get_all_results(ai.list_imported_models, COMPARTMENT, vendor="pager", limit=1)
    assert sorted(m.id for m in everything.data) == sorted(ids)
    first = ai.list_imported_models(COMPARTMENT, vendor="pager", limit=2, sort_by="displayName", sort_order="ASC")
    assert [m.display_name for m in first.data.items] == ["page-0", "page-1"] and first.headers["opc-next-page"]
    rest = ai.list_imported_models(
        COMPARTMENT, vendor="pager", limit=2, sort_by="displayName", sort_order="ASC", page=first.next_page
    )
    assert [m.display_name for m in rest.data.items] == ["page-2"] and rest.next_page is None
    assert [m.id for m in ai.list_imported_models(COMPARTMENT, id=ids[1]).data.items] == [ids[1]]
    assert (
        len(
            ai.list_imported_models(COMPARTMENT, vendor="pager", lifecycle_state="ACTIVE", capability=["TEXT_TO_TEXT"]).data.items
        )
        == 3
    )
    assert ai.list_imported_models(COMPARTMENT, vendor="pager", capability=["EMBEDDING"]).data.items == []
    assert ai.list_imported_models(COMPARTMENT, vendor="pager", lifecycle_state="FAILED").data.items == []

    got = ai.get_imported_model(ids[0])
    details = oci.generative_ai.models.UpdateImportedModelDetails(
        display_name="renamed", description="d", version="2", freeform_tags={"team": "ml"}
    )
    updated = ai.update_imported_model(ids[0], details, if_match=got.headers["etag"])
    assert (updated.data.display_name, updated.data.version, updated.data.freeform_tags) == ("renamed", "2", {"team": "ml"})
    assert updated.headers["etag"] != got.headers["etag"]
    with pytest.raises(oci.exceptions.ServiceError) as err:
        ai.update_imported_model(ids[0], details, if_match=got.headers["etag"])
    assert err.value.status == 412

    move = oci.generative_ai.models.ChangeImportedModelCompartmentDetails(compartment_id=OTHER)
    assert ai.change_imported_model_compartment(ids[0], move).status == 200
    assert [m.id for m in ai.list_imported_models(OTHER).data.items] == [ids[0]]
    assert ids[0] not in [m.id for m in ai.list_imported_models(COMPARTMENT, vendor="pager").data.items]


def test_another_tenancy_sees_nothing(server, sdk):
    import oci

    ai, _, _ = sdk
    model_id = create(ai, hub_source(), display_name="mine").data.id
    stranger = new_identity("stranger")
    server.register(stranger)
    their_ai, _ = clients(server, stranger)
    with pytest.raises(oci.exceptions.ServiceError) as err:
        their_ai.get_imported_model(model_id)
    assert err.value.status == 404
    assert their_ai.list_imported_models(COMPARTMENT).data.items == []
    finished(ai, model_id)


def test_delete_is_refused_while_a_fine_tune_or_an_endpoint_uses_the_model(server, sdk):
    import oci

    ai, storage, _ = sdk
    m = oci.generative_ai.models
    model = finished(ai, create(ai, hub_source(), display_name="in-use").data.id)
    folder = server.data_dir / "imported-models" / model.id
    assert folder.is_dir()

    def refused() -> str:
        with pytest.raises(oci.exceptions.ServiceError) as err:
            ai.delete_imported_model(model.id, retry_strategy=oci.retry.NoneRetryStrategy())  # the SDK retries 409 by itself
        assert err.value.status == 409 and err.value.code == "IncorrectState"
        return err.value.message

    # A fine-tune of it, queued or training: refused, naming it; once the fine-tune is deleted, not any more.
    cluster = create_cluster(ai, COMPARTMENT, unit_count=1)
    fine_tune = ai.create_model(
        m.CreateModelDetails(
            compartment_id=COMPARTMENT,
            base_model_id=model.id,
            fine_tune_details=m.FineTuneDetails(
                training_dataset=m.ObjectStorageDataset(**upload(storage, "uses-imported.jsonl", dataset_lines(40))),
                dedicated_ai_cluster_id=cluster.id,
                training_config=m.LoraTrainingConfig(total_training_epochs=1),
            ),
        )
    ).data
    assert f"1 fine-tuned model(s) ({fine_tune.id})" in refused()
    wait_work_request(ai, ai.delete_model(fine_tune.id).headers["opc-work-request-id"])

    # An endpoint hosting it: refused, naming it, until the endpoint is deleted.
    hosting = ai.create_dedicated_ai_cluster(
        m.CreateDedicatedAiClusterDetails(type="HOSTING", compartment_id=COMPARTMENT, unit_count=1, unit_shape="LARGE_GENERIC")
    ).data
    endpoint = ai.create_endpoint(
        m.CreateEndpointDetails(compartment_id=COMPARTMENT, model_id=model.id, dedicated_ai_cluster_id=hosting.id)
    ).data
    assert f"1 endpoint(s) ({endpoint.id})" in refused()
    ai.delete_endpoint(endpoint.id)

    deleted = ai.delete_imported_model(model.id)
    assert deleted.status == 202
    assert ai.get_work_request(deleted.headers["opc-work-request-id"]).data.operation_type == "DELETE_IMPORTED_MODEL"
    assert ai.get_imported_model(model.id).data.lifecycle_state == "DELETED" and not folder.exists()
    assert model.id not in [i.id for i in ai.list_imported_models(COMPARTMENT).data.items]
    assert model.id in [i.id for i in ai.list_imported_models(COMPARTMENT, lifecycle_state="DELETED").data.items]


def test_model_discovery_lists_the_catalog_and_active_imports(server, sdk):
    ai, _, _ = sdk
    model = finished(ai, create(ai, hub_source(), display_name="discoverable").data.id)
    found = {d.model_id: d for d in ai.list_model_discovery(COMPARTMENT).data.items}
    assert {"meta.llama-3.3-70b-instruct", "cohere.command-r-08-2024", model.id} <= set(found)
    mine = found[model.id]
    assert mine.capabilities == ["TEXT_GENERATION", "CHAT", "FINE_TUNE"] and mine.model_access == "HOSTED"
    assert mine.modality_support[0].input == "TEXT" and mine.availability[0].serving_modes == ["ON_DEMAND", "DEDICATED"]
    params = {p.name: p for p in mine.parameters}
    assert params["trainingConfigType"].default_value == "LORA_TRAINING_CONFIG"
    assert (params["loraR"].type, params["loraR"].minimum, params["loraR"].maximum, params["loraR"].default_value) == (
        "INTEGER",
        1,
        64,
        "8",
    )
    cohere = {p.name: p for p in found["cohere.command-r-08-2024"].parameters}
    assert cohere["trainingConfigType"].default_value == "TFEW_TRAINING_CONFIG" and "loraR" not in cohere
    assert [d.model_id for d in ai.list_model_discovery(COMPARTMENT, model_id=model.id).data.items] == [model.id]
    deprecated = [d.model_id for d in ai.list_model_discovery(COMPARTMENT, is_deprecated=True).data.items]
    assert deprecated == ["meta.llama-3-70b-instruct", "cohere.command-r-16k"]
    assert ai.list_model_discovery(COMPARTMENT, is_on_demand_retired=True).data.items == []
    paged = ai.list_model_discovery(COMPARTMENT, limit=2)
    assert len(paged.data.items) == 2 and paged.next_page
    assert model.id not in [d.model_id for d in ai.list_model_discovery(OTHER).data.items]


@pytest.fixture(scope="module")
def oci_cli(server, sdk, tmp_path_factory):
    if not OCI_CLI.exists():
        pytest.skip("the OCI CLI is installed by `make setup` into .venv/ocicli")
    _, _, identity = sdk
    home = tmp_path_factory.mktemp("oci-cli-imports")
    key = home / "key.pem"
    key.write_text(identity.private_pem)
    key.chmod(0o600)
    config = home / "config"
    config.write_text(
        f"[DEFAULT]\nuser={identity.user}\nfingerprint={identity.fingerprint}\ntenancy={identity.tenancy}\n"
        f"region=us-chicago-1\nkey_file={key}\n"
    )
    config.chmod(0o600)

    def run(*args: str) -> str:
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "OCI_CLI_SUPPRESS_FILE_PERMISSIONS_WARNING": "True"}
        done = subprocess.run(
            [str(OCI_CLI), "--config-file", str(config), "--endpoint", server.endpoint, *args],
            capture_output=True,
            env=env,
            timeout=600,
        )
        assert done.returncode == 0, (args, done.stderr.decode()[-3000:])
        return done.stdout.decode()

    return run


def test_an_object_storage_import_survives_deleting_its_objects(server, sdk, oci_cli, tmp_path, backend):
    if backend == "sqlite":  # CI time: the OCI CLI drives the same routes once, on PostgreSQL (as test_oci_cli.py)
        pytest.skip("runs on PostgreSQL only")
    import oci

    ai, storage, _ = sdk
    # A shard over the CLI's 11 MiB part size: bulk-upload sends it as a multipart upload.
    model_dir = tmp_path / "model"
    build_model("llama", vocab_size=24000, hidden=256).save_pretrained(model_dir, max_shard_size="15MB")
    build_tokenizer().save_pretrained(model_dir)
    assert (model_dir / "model.safetensors.index.json").is_file()
    assert max(p.stat().st_size for p in model_dir.glob("*.safetensors")) > 20 * 1024**2
    oci_cli("os", "bucket", "create", "--name", "models", "--compartment-id", COMPARTMENT)
    oci_cli(
        "os",
        "object",
        "bulk-upload",
        "--bucket-name",
        "models",
        "--src-dir",
        str(model_dir),
        "--prefix",
        "tiny/",
        "--part-size",
        "11",
    )
    namespace = storage.get_namespace().data
    heads = {o.name: o for o in storage.list_objects(namespace, "models", prefix="tiny/", fields="name,md5").data.objects}
    assert any(o.md5 and o.md5.endswith("-3") for o in heads.values()) or any(
        "opc-multipart-md5" in storage.head_object(namespace, "models", name).headers for name in heads
    )

    source = oci.generative_ai.models.ObjectStorageObject(
        source_type="OBJECT_STORAGE_OBJECT", namespace_name=namespace, bucket_name="models", prefix_name="tiny/"
    )
    model = finished(ai, create(ai, source, display_name="from-object-storage").data.id)
    assert model.lifecycle_state == "ACTIVE", model.lifecycle_details
    assert model.data_source.prefix_name == "tiny/" and model.data_source.region == "local"
    oci_cli("os", "object", "bulk-delete", "--bucket-name", "models", "--prefix", "tiny/", "--force")
    assert storage.list_objects(namespace, "models", prefix="tiny/").data.objects == []
    kept = server.data_dir / "imported-models" / model.id
    assert check(kept).ok
    for f in model_dir.iterdir():
        assert hashlib.sha256((kept / f.name).read_bytes()).digest() == hashlib.sha256(f.read_bytes()).digest(), f.name
    assert ai.get_imported_model(model.id).data.lifecycle_state == "ACTIVE"

    empty = finished(ai, create(ai, source, display_name="nothing-left").data.id)
    assert empty.lifecycle_state == "FAILED" and "no objects under prefix 'tiny/' in bucket models" in empty.lifecycle_details


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneforge", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_tuneforge_models_import_checks_and_imports(tmp_path, tiny_llama, models_root):
    checked = run_cli("models", "import", tiny_llama)
    assert checked.returncode == 0, checked.stderr
    assert "llama, " in checked.stdout and "all pass" in checked.stdout
    broken = run_cli("models", "import", models_root / "broken" / "everything")
    assert broken.returncode == 2 and "problem(s):" in broken.stdout and "no chat template" in broken.stdout
    by_id = run_cli("models", "import", HUB_ID, "--branch", "cohere", "--models-dir", models_root, "--json")
    assert by_id.returncode == 0 and json.loads(by_id.stdout)["notes"][0].startswith("cohere, ")
    missing = run_cli("models", "import", "nobody/nothing", "--models-dir", models_root)
    assert missing.returncode == 2 and str(models_root) in missing.stderr  # the operator's own machine: paths help

    store = ["--data-dir", tmp_path / "data"]
    tenancy = "ocid1.tenancy.oc1..aaaacli"
    imported = run_cli("models", "import", tiny_llama, "--tenancy", tenancy, "--display-name", "mine", "--json", *store)
    assert imported.returncode == 0, imported.stderr
    model = json.loads(imported.stdout)["importedModel"]
    assert model["lifecycleState"] == "ACTIVE" and model["displayName"] == "mine"
    listed = run_cli("models", "--tenancy", tenancy, *store)
    assert listed.stdout.splitlines()[-1].startswith(model["id"]) and "imported" in listed.stdout.splitlines()[-1]
    discovery = json.loads(run_cli("models", "--tenancy", tenancy, "--discovery", *store).stdout)
    assert discovery[-1]["modelId"] == model["id"] and discovery[0]["modelId"] == "meta.llama-3.3-70b-instruct"


@pytest.mark.parametrize("arch", ["llama", "cohere", *TINY_EXTRA])
def test_every_tiny_architecture_passes_the_folder_check(tmp_path, arch):
    report = check(save_tiny_checkpoint(tmp_path / arch, arch))
    assert report.ok, report.problems
    assert report.model_type == arch and report.dtype == "float32"


def test_the_hub_cache_is_found_as_huggingface_hub_finds_it(tmp_path, tiny_llama, monkeypatch):
    from tuneforge import hf_cache

    cache = tmp_path / "hf-home" / "hub"
    hub_cache(cache, HUB_ID, {COMMIT_LLAMA: tiny_llama, "a1a1" + "0" * 36: tiny_llama}, {"main": COMMIT_LLAMA})
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert hf_cache.resolve(HUB_ID).commit == COMMIT_LLAMA
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert (
        hf_cache.resolve(HUB_ID, commit=COMMIT_LLAMA[:6]).path
        == cache / f"models--{HUB_ID.replace('/', '--')}" / "snapshots" / COMMIT_LLAMA
    )
    with pytest.raises(hf_cache.ModelNotFound, match="commit a1a1 is ambiguous: 2 snapshots start with it"):
        hf_cache.resolve(HUB_ID, commit="a1a1")
    plain = tmp_path / "plain"
    shutil.copytree(tiny_llama, plain / "org" / "name")
    assert hf_cache.resolve("org/name", roots=[plain]).layout == "models folder"
    with pytest.raises(hf_cache.ModelNotFound, match="a plain folder has no branches or commits") as err:
        hf_cache.resolve("org/name", commit="abcd", roots=[plain])
    assert str(plain) in str(err.value) and str(plain) not in err.value.without_paths()
    for bad in ("../etc", "org/../x", "org/name/extra", "/abs", "a--b/c"):
        assert hf_cache.check_reference(bad, None, None), bad


def test_the_folder_check_names_damaged_and_unsupported_weights(tmp_path, tiny_llama):
    folder = tmp_path / "m"
    shutil.copytree(tiny_llama, folder)
    shard = folder / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])  # an upload cut short
    (folder / "tokenizer.json").unlink()
    problems = check(folder).problems
    assert any(p.startswith("model.safetensors: ") and "truncated" in p for p in problems), problems
    assert "no tokenizer: neither tokenizer.json nor tokenizer.model" in problems

    quantized = tmp_path / "q"
    shutil.copytree(tiny_llama, quantized)
    header = {"model.embed_tokens.weight": {"dtype": "I8", "shape": [320, 32], "data_offsets": [0, 320 * 32]}}
    raw = json.dumps(header).encode()
    (quantized / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(320 * 32))
    problems = check(quantized).problems
    assert any("model.embed_tokens.weight (I8)" in p and "quantized checkpoints are not supported" in p for p in problems)

    pickled = tmp_path / "p"
    shutil.copytree(tiny_llama, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    assert any(p.startswith("only PyTorch pickle weights") for p in check(pickled).problems)
