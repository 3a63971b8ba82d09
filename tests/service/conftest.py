"""Live `tuneforge serve` processes on 127.0.0.1, driven with the real `oci` SDK.

Every test that takes `service` runs once on SQLite and once on a fresh PostgreSQL database
(created for the session on the local server and dropped at the end)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("TUNEFORGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
LORA_MODEL = "meta.llama-3.3-70b-instruct"


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    """Poll until `condition()` is truthy; no fixed sleeps as synchronisation."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ---- identities -----------------------------------------------------------------------------


@dataclass
class Identity:
    tenancy: str
    user: str
    private_pem: str
    public_pem: bytes
    fingerprint: str

    def config(self) -> dict:
        return {
            "user": self.user,
            "tenancy": self.tenancy,
            "fingerprint": self.fingerprint,
            "key_content": self.private_pem,
            "region": "us-chicago-1",
        }


def new_identity(name: str) -> Identity:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    public = key.public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Identity(
        tenancy=f"ocid1.tenancy.oc1..aaaa{name}{uuid.uuid4().hex[:8]}",
        user=f"ocid1.user.oc1..aaaa{name}",
        private_pem=pem,
        public_pem=public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        fingerprint=":".join(f"{b:02x}" for b in hashlib.md5(der).digest()),
    )


# ---- databases ------------------------------------------------------------------------------


@contextmanager
def database(kind: str):
    """None (the default SQLite file in the data dir) or the URL of a new PostgreSQL database."""
    if kind == "sqlite":
        yield None
        return
    from sqlalchemy import create_engine, text

    name = f"tuneforge_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL not available at {PG_ADMIN_URL}: {err}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


# ---- the server -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    data_dir: Path
    database_url: str | None
    weights: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log: Path | None = None
    args: list[str] = field(default_factory=list)  # more `tuneforge serve` options
    prefix: list[str] = field(default_factory=list)  # a command that runs the server (e.g. in its own UTS namespace)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        store = ["--data-dir", str(self.data_dir)] + (["--database-url", self.database_url] if self.database_url else [])
        return subprocess.run([sys.executable, "-m", "tuneforge", *args, *store], capture_output=True, text=True, cwd=ROOT)

    def register(self, identity: Identity) -> str:
        key_file = self.data_dir.parent / f"{identity.fingerprint.replace(':', '')}.pem"
        key_file.write_bytes(identity.public_pem)
        done = self.cli(
            "api-keys", "add", "--tenancy", identity.tenancy, "--user", identity.user, "--public-key-file", str(key_file)
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def start(self) -> None:
        self.log = self.data_dir.parent / f"server-{self.port}-{int(time.time() * 1000)}.log"
        store = ["--database-url", self.database_url] if self.database_url else []
        cmd = [
            *self.prefix,
            sys.executable,
            "-m",
            "tuneforge",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--weights",
            str(self.weights),
            *store,
            *self.args,
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_for(self._answers, 60, f"the server on port {self.port} (log: {self.log})")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine or a worker dies."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def tiny_weights(tiny_llama) -> Path:
    return tiny_llama


@pytest.fixture(scope="session")
def slower_weights(tmp_path_factory) -> Path:
    """A still-small model (hidden 128, 4 layers) whose steps take a visible fraction of a second,
    for tests that must act while a job is mid-training."""
    from tiny_models import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("slower") / "llama", "llama", hidden=128, layers=4)


@contextmanager
def running_service(kind: str, root: Path, weights: Path, start: bool = True):
    with database(kind) as url:
        svc = Service(data_dir=root / "data", database_url=url, weights=weights)
        svc.data_dir.mkdir(parents=True)
        try:
            if start:
                svc.start()
            yield svc
        finally:
            svc.stop()


@pytest.fixture(scope="session")
def service(backend, tmp_path_factory, tiny_weights):
    """One server for the session (per backend), shared by the tests that do not restart it."""
    with running_service(backend, tmp_path_factory.mktemp("service"), tiny_weights) as svc:
        yield svc


@pytest.fixture
def fresh_service(backend, tmp_path_factory, tiny_weights):
    """A server and database of its own, not yet started (for tests that kill and restart it)."""
    with running_service(backend, tmp_path_factory.mktemp("fresh"), tiny_weights, start=False) as svc:
        yield svc


@pytest.fixture(scope="session")
def alice(service) -> Identity:
    identity = new_identity("alice")
    service.register(identity)
    return identity


@pytest.fixture(scope="session")
def bob(service) -> Identity:
    identity = new_identity("bob")
    service.register(identity)
    return identity


# ---- SDK clients and helpers ----------------------------------------------------------------


def clients(svc: Service, identity: Identity):
    import oci

    config = identity.config()
    return (
        oci.generative_ai.GenerativeAiClient(config, service_endpoint=svc.endpoint),
        oci.object_storage.ObjectStorageClient(config, service_endpoint=svc.endpoint),
    )


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


def on_host(name: str) -> list[str]:
    """Run a command with its own host name (`unshare --uts`: the test runs as root, as CI does), so
    two servers on this machine look like servers on two machines (a dead owner is not one of ours)."""
    return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', name]


@contextmanager
def servers_on_one_database(data: Path, weights: Path, name: str, workers: int, lease_seconds: int):
    """Two `tuneforge serve` processes, each on its own host name, sharing one PostgreSQL database and one data dir."""
    with database("postgresql") as url:
        data.mkdir()
        servers = [
            Service(
                data_dir=data,
                database_url=url,
                weights=weights,
                prefix=on_host(f"{name}-{i}"),
                args=["--workers", str(workers), "--lease-seconds", str(lease_seconds)],
            )
            for i in (1, 2)
        ]
        try:
            for svc in servers:
                svc.start()
            yield servers
        finally:
            for svc in servers:
                svc.stop()
