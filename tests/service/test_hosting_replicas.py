"""A HOSTING cluster's units are replicas (tuneforge/hosting), processes of `tuneforge serve` or, with
`--executor ray`, actors on a local Ray cluster with CPU workers, driven through the `oci` SDK: both replicas of a 2-unit cluster answer; a replica killed (SIGKILL) while requests stream
and wait is started again, its waiting requests are answered by the other replica and only the one that
had already streamed text ends, with an error event that says so; an update of unitCount scales them."""

from __future__ import annotations

import json
import signal
import threading

import oci
import psutil
import pytest
from helpers.clients import clients
from helpers.identities import new_identity
from helpers.ray_cluster import LOOPBACK_ENV, ray_head
from helpers.servers import running_service
from helpers.waiting import wait_for

COMPARTMENT = "ocid1.compartment.oc1..aaaareplicas"
BASE = "meta.llama-3.3-70b-instruct"
m = oci.generative_ai.models
inf = oci.generative_ai_inference.models


def replica_pids(hosted) -> set[int]:
    """The live replica processes: the server's `python -m tuneforge.hosting` children, or on Ray the
    worker processes of ReplicaCore actors (the test's Ray cluster runs nothing else)."""
    if hosted["executor"] == "ray":
        candidates = psutil.process_iter()
        marker = "ray::ReplicaCore"
    else:
        candidates = psutil.Process(hosted["server"].proc.pid).children()
        marker = "tuneforge.hosting"
    return {p.pid for p in candidates if _is_replica(p, marker)}


def _is_replica(process: psutil.Process, marker: str) -> bool:
    try:
        return any(marker in part for part in process.cmdline()) and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


@pytest.fixture(scope="module", params=["local", "ray"])
def executor(request):
    """Where the replicas run: processes of the server, or actors on a local 2-CPU Ray cluster."""
    if request.param == "local":
        yield "local", []
        return
    pytest.importorskip("ray", reason="replicas on Ray need Ray: pip install -e '.[ray]' (it is in the dev extra)")
    with ray_head(cpus=2) as head, pytest.MonkeyPatch.context() as env:
        for name, value in LOOPBACK_ENV.items():  # the server, a Ray driver, connects as the head's processes do
            env.setenv(name, value)
        args = ["--executor", "ray", "--ray-address", head.dashboard, "--ray-hosting-address", head.gcs]
        yield "ray", [*args, "--ray-cpus-per-replica", "0.5", "--workers", "0"]


@pytest.fixture(scope="module")
def hosted(executor, tmp_path_factory, tiny_weights):
    """A server whose engines decode one row at a time (so requests queue on each replica), a 2-unit
    HOSTING cluster and an endpoint of the base model on it."""
    kind, args = executor
    with running_service("sqlite", tmp_path_factory.mktemp("replicas"), tiny_weights, start=False) as server:
        server.args = ["--serving-max-batch", "1", "--replica-timeout", "5", *args]
        server.start()
        me = new_identity("replicas")
        server.register(me)
        ai, _ = clients(server, me)
        cluster = ai.create_dedicated_ai_cluster(
            m.CreateDedicatedAiClusterDetails(
                type="HOSTING", compartment_id=COMPARTMENT, unit_count=2, unit_shape="LARGE_GENERIC"
            )
        ).data
        endpoint = ai.create_endpoint(
            m.CreateEndpointDetails(compartment_id=COMPARTMENT, model_id=BASE, dedicated_ai_cluster_id=cluster.id)
        ).data
        wait_for(lambda: ai.get_endpoint(endpoint.id).data.lifecycle_state == "ACTIVE", 180, "the endpoint to load")
        infer = oci.generative_ai_inference.GenerativeAiInferenceClient(me.config(), service_endpoint=server.endpoint)
        yield {"executor": kind, "server": server, "ai": ai, "infer": infer, "cluster": cluster.id, "endpoint": endpoint.id}


def _replicas(hosted, n: int, what: str) -> set[int]:
    return wait_for(lambda: len(pids := replica_pids(hosted)) == n and pids, 120, what)


def _chat(endpoint_id: str, max_tokens: int, stream: bool) -> inf.ChatDetails:
    request = inf.GenericChatRequest(
        messages=[inf.UserMessage(content=[inf.TextContent(text="Count to a hundred.")])],
        is_stream=stream,
        max_tokens=max_tokens,
        temperature=0.0,
    )
    return inf.ChatDetails(
        compartment_id=COMPARTMENT, serving_mode=inf.DedicatedServingMode(endpoint_id=endpoint_id), chat_request=request
    )


class StreamedChat(threading.Thread):
    """One streamed chat read to its end: its text events, and the error or finish event it ended with."""

    def __init__(self, infer, endpoint_id: str, max_tokens: int):
        super().__init__(daemon=True)
        self.infer, self.details = infer, _chat(endpoint_id, max_tokens, stream=True)
        self.deltas: list[str] = []
        self.started = threading.Event()
        self.end: dict | None = None

    def run(self) -> None:
        for event in self.infer.chat(self.details).data.events():
            data = json.loads(event.data)
            if "error" in data or "finishReason" in data:
                self.end = data
            else:
                self.deltas.append(data["message"]["content"][0]["text"])
                self.started.set()


def test_both_replicas_of_a_cluster_answer(hosted):
    pids = _replicas(hosted, 2, "two replica processes")
    before = {pid: sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids}
    chats = [StreamedChat(hosted["infer"], hosted["endpoint"], 60) for _ in range(4)]
    for chat in chats:
        chat.start()
    for chat in chats:
        chat.join(120)
        assert chat.end is not None and chat.end.get("finishReason") in ("stop", "length"), chat.end
    after = {pid: sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids}
    assert all(after[pid] > before[pid] for pid in pids), (before, after)  # each decoded some of them


@pytest.mark.parametrize(
    "lost",
    [signal.SIGKILL, signal.SIGSTOP],  # killed, or alive but answering nothing (found by the heartbeat)
    ids=["killed", "stopped"],
)
def test_a_lost_replica_restarts_and_loses_no_request_that_had_not_streamed(hosted, lost):
    pids = _replicas(hosted, 2, "two replica processes")
    # One row per replica: of 6 long answers, each replica runs one and queues two.
    chats = [StreamedChat(hosted["infer"], hosted["endpoint"], 400) for _ in range(6)]
    for chat in chats:
        chat.start()
    assert any(chat.started.wait(60) for chat in chats)
    victim = min(pids)
    psutil.Process(victim).send_signal(lost)
    for chat in chats:
        chat.join(180)
        assert not chat.is_alive(), "a request hangs after its replica was lost"
    failed = [chat for chat in chats if "error" in chat.end]
    # Only a request the killed replica was already streaming can fail (one row: at most one), and it
    # says why after the text it had sent; every other one is answered in full.
    assert len(failed) <= 1, [c.end for c in failed]
    for chat in failed:
        assert chat.deltas and "replica" in chat.end["error"] and "send the request again" in chat.end["error"]
    for chat in chats:
        if chat not in failed:
            assert chat.end["finishReason"] in ("stop", "length") and chat.deltas
    new = _replicas(hosted, 2, "the killed replica to restart")
    assert victim not in new and len(new & pids) == 1
    answer = hosted["infer"].chat(_chat(hosted["endpoint"], 4, stream=False)).data.chat_response
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_unit_count_updates_scale_the_replicas(hosted):
    ai = hosted["ai"]
    _replicas(hosted, 2, "two replica processes")
    for units in (1, 3, 2):
        ai.update_dedicated_ai_cluster(hosted["cluster"], m.UpdateDedicatedAiClusterDetails(unit_count=units))
        _replicas(hosted, units, f"{units} replica processes")
        answers = [hosted["infer"].chat(_chat(hosted["endpoint"], 4, stream=False)) for _ in range(units)]
        assert all(a.data.chat_response.choices[0].finish_reason in ("stop", "length") for a in answers)
