"""OpenAI's files and fine-tuning API on TuneForge, through the `openai` SDK only (issue 21): a team's
fine-tuning script moves over by changing base_url and api_key. The journey uploads the dates task,
fine-tunes the stand-in (one epoch, paused and resumed on the way), follows the events to success,
lists the checkpoints and chats with the `ft:` model, which answers held-out prompts right where the
base model does not, on OpenAI's routes and OCI's (through the `oci` SDK). A second job trains with its
own seed and validation file. Every bad input has its test, with the SDK's own exception and OpenAI's
`param`."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import oci
import oci.generative_ai_inference.models as inf
import openai
import pytest
from helpers.identities import new_identity
from helpers.servers import running_service
from helpers.waiting import wait_for

from tuneforge import data

DATES = Path(__file__).parents[2] / "tuneforge" / "examples" / "dates.jsonl"
BASE = "meta.llama-3.3-70b-instruct"
ISO_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")
FINAL = ("succeeded", "failed", "cancelled")
# One epoch at 7.5 x the catalog's learning rate (0.0015, what a sweep of this task picks; docs/sweeps.md).
HYPER = {"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 7.5}


def _client(svc, who) -> openai.OpenAI:
    key = svc.cli("api-keys", "create-bearer", "--tenancy", who.tenancy, "--user", who.user).stdout.strip()
    return openai.OpenAI(base_url=f"{svc.endpoint}/openai/v1", api_key=key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_service("sqlite", tmp_path_factory.mktemp("openai-ft"), "stand-in") as svc:
        me = new_identity("oaift")
        svc.register(me)  # the same tenancy through OCI's signed API
        yield {
            "me": _client(svc, me),
            "other": _client(svc, new_identity("oaift-other")),
            "infer": oci.generative_ai_inference.GenerativeAiInferenceClient(me.config(), service_endpoint=svc.endpoint),
            "tenancy": me.tenancy,
            "jobs_dir": svc.data_dir / "jobs",
        }


def _upload(client: openai.OpenAI, body: bytes, name: str = "train.jsonl", purpose: str = "fine-tune"):
    return client.files.create(file=(name, body), purpose=purpose)


def _lines(examples) -> bytes:
    return "".join(json.dumps({"prompt": e.prompt, "completion": e.completion}) + "\n" for e in examples).encode()


def _chat_lines(examples) -> bytes:
    """The task as OpenAI's chat lines: one user turn, one assistant turn."""
    return "".join(
        json.dumps({"messages": [{"role": "user", "content": e.prompt}, {"role": "assistant", "content": e.completion}]}) + "\n"
        for e in examples
    ).encode()


def held_out(n: int = 8):
    """Validation examples of the split the job trains with (seed 42): the model never sees them."""
    _, validation = data.split_examples(data.read_examples(DATES), data.DEFAULT_SEED)
    return validation[:n]


def _error(exc_type, call) -> dict:
    with pytest.raises(exc_type) as err:
        call()
    return err.value.body


# ---- files ----------------------------------------------------------------------------------------


def test_files_upload_list_retrieve_content_delete(server):
    me = server["me"]
    body = DATES.read_bytes()
    first = _upload(me, body, "dates.jsonl")
    assert (first.object, first.purpose, first.status, first.bytes, first.filename) == (
        "file",
        "fine-tune",
        "processed",
        len(body),
        "dates.jsonl",
    )
    second = _upload(me, b"anything", "notes.txt", purpose="user_data")
    assert me.files.retrieve(first.id).id == first.id
    assert me.files.content(first.id).read() == body
    newest_first = [f.id for f in me.files.list()]
    assert newest_first.index(second.id) < newest_first.index(first.id)
    assert [f.id for f in me.files.list(purpose="user_data")] == [second.id]
    oldest = me.files.list(order="asc", limit=1)
    assert oldest.has_more and len(oldest.data) == 1
    assert me.files.list(order="asc", limit=1, after=oldest.data[0].id).data[0].id != oldest.data[0].id
    deleted = me.files.delete(second.id)
    assert (deleted.id, deleted.deleted) == (second.id, True)
    assert _error(openai.NotFoundError, lambda: me.files.retrieve(second.id))["message"] == f"No such File object: {second.id}"


def test_a_fine_tune_file_is_checked_at_upload_every_bad_line_named(server):
    bad = b'{"prompt": "a", "completion": "b"}\nnot json\n{"prompt": "", "completion": "x"}\n'
    checked = _upload(server["me"], bad, "bad.jsonl")
    assert checked.status == "error"
    assert "line 2: not valid JSON" in checked.status_details and 'line 3: "prompt" is empty' in checked.status_details
    chat = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
    ]
    checked = _upload(server["me"], "".join(json.dumps(c) + "\n" for c in chat).encode(), "chat.jsonl")
    assert checked.status == "error" and "line 2: messages[0].role" in checked.status_details, checked.status_details
    assert "line 3: " in checked.status_details and "line 1:" not in checked.status_details


def test_bad_uploads(server):
    me = server["me"]
    body = _error(openai.BadRequestError, lambda: _upload(me, b"{}", purpose="fine-tuning"))
    assert body["param"] == "purpose" and "'fine-tune'" in body["message"]
    assert _error(openai.BadRequestError, lambda: _upload(me, b"{}", name="train.csv"))["param"] == "file"


def test_another_tenancys_files_do_not_exist(server):
    mine = _upload(server["me"], DATES.read_bytes(), "dates.jsonl")
    other = server["other"]
    for call in (
        lambda: other.files.retrieve(mine.id),
        lambda: other.files.content(mine.id),
        lambda: other.files.delete(mine.id),
    ):
        _error(openai.NotFoundError, call)
    assert mine.id not in [f.id for f in other.files.list()]
    _error(openai.NotFoundError, lambda: server["me"].files.retrieve("file-doesnotexist"))


# ---- bad job requests -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def training_file(server):
    """The dates task as chat lines, in the file's order (so the job's seeded split is held_out()'s)."""
    uploaded = _upload(server["me"], _chat_lines(data.read_examples(DATES)), "dates-chat.jsonl")
    assert uploaded.status == "processed", uploaded.status_details
    return uploaded.id


@pytest.mark.parametrize(
    ("request_", "param", "words"),
    [
        ({"model": "gpt-4o-mini-2024-07-18"}, "model", "not available for fine-tuning"),
        ({"model": f"ft:{BASE}:org-x::abc"}, "model", "fine-tuned model"),
        ({"training_file": "file-missing"}, "training_file", "not found"),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}},
            "method.supervised.hyperparameters.n_epochs",
            "1 or more",
        ),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 4}}}},
            "method.supervised.hyperparameters.batch_size",
            "from 8 to 16",
        ),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": 10000}}}},
            "method.supervised.hyperparameters.learning_rate_multiplier",
            "learningRate 2",
        ),
        ({"hyperparameters": {"learning_rate_multiplier": -1}}, "hyperparameters.learning_rate_multiplier", "above 0"),
        ({"hyperparameters": {"n_epochs": "three"}}, "hyperparameters.n_epochs", '"auto" or a number'),
        ({"hyperparameters": {"warmup": 3}}, "hyperparameters.warmup", "allowed: n_epochs"),
        (
            {"hyperparameters": {"n_epochs": 1}, "method": {"type": "supervised", "supervised": {}}},
            "hyperparameters",
            "not both",
        ),
        ({"method": {"type": "reinforcement", "reinforcement": {}}}, "method.type", "'dpo' preference tuning"),
        ({"method": {"type": "dpo", "dpo": {}}}, "training_file", "DPO trains on preference pairs"),
        ({"suffix": "has:colon"}, "suffix", "1 to 64"),
        ({"suffix": "x" * 65}, "suffix", "1 to 64"),
        ({"seed": -1}, "seed", "integer"),
        ({"metadata": {"k": 3}}, "metadata.k", "strings"),
    ],
)
def test_bad_job_requests_name_the_field(server, training_file, request_, param, words):
    fields = {"model": BASE, "training_file": training_file, **request_}
    body = _error(openai.BadRequestError, lambda: server["me"].fine_tuning.jobs.create(**fields))
    assert body["param"] == param and words in body["message"], body


def test_files_a_job_cannot_train_on(server, training_file):
    me, jobs = server["me"], server["me"].fine_tuning.jobs
    wrong_purpose = _upload(me, DATES.read_bytes(), "dates.jsonl", purpose="batch")
    broken = _upload(me, b"not json\n", "broken.jsonl")
    too_few = _upload(me, _lines(data.read_examples(DATES)[:5]), "five.jsonl")
    theirs = _upload(server["other"], DATES.read_bytes(), "dates.jsonl")
    for file, words in (
        (wrong_purpose, "purpose 'fine-tune'"),
        (broken, "line 1: not valid JSON"),
        (too_few, "at least 32 are needed"),
        (theirs, "not found"),
    ):
        body = _error(openai.BadRequestError, lambda f=file: jobs.create(model=BASE, training_file=f.id))
        assert (body["param"], body["code"]) == ("training_file", "invalid_training_file") and words in body["message"], body
    body = _error(openai.BadRequestError, lambda: jobs.create(model=BASE, training_file=training_file, validation_file=broken.id))
    assert body["param"] == "validation_file"


def test_unknown_and_other_tenancys_jobs_do_not_exist(server):
    jobs = server["me"].fine_tuning.jobs
    for call in (
        lambda: jobs.retrieve("ftjob-nope"),
        lambda: jobs.cancel("ftjob-nope"),
        lambda: jobs.pause("ftjob-nope"),
        lambda: jobs.resume("ftjob-nope"),
        lambda: jobs.list_events("ftjob-nope"),
        lambda: jobs.checkpoints.list("ftjob-nope"),
    ):
        _error(openai.NotFoundError, call)
    body = _error(
        openai.NotFoundError,
        lambda: server["me"].chat.completions.create(
            model=f"ft:{BASE}:org-x::nope", messages=[{"role": "user", "content": "hi"}]
        ),
    )
    assert body["param"] == "model"


def test_a_bearer_key_is_needed(server):
    anonymous = openai.OpenAI(base_url=str(server["me"].base_url), api_key="tf-not-a-key", max_retries=0)
    _error(openai.AuthenticationError, lambda: anonymous.files.list())
    _error(openai.AuthenticationError, lambda: anonymous.fine_tuning.jobs.list())


# ---- the journey ----------------------------------------------------------------------------------


def _status(jobs, job_id: str, *wanted: str) -> str:
    return wait_for(lambda: (s := jobs.retrieve(job_id).status) in wanted and s, 1800, f"job {job_id} to be {wanted}", 1.0)


@pytest.fixture(scope="module")
def journey(server, training_file):
    me = server["me"]
    jobs = me.fine_tuning.jobs
    job = jobs.create(
        model=BASE,
        training_file=training_file,
        method={"type": "supervised", "supervised": {"hyperparameters": HYPER}},
        suffix="dates",
        seed=42,
        metadata={"team": "dates"},
    )
    # While it trains: a second job waits in the queue (the tenancy's cluster has one unit) and is cancelled.
    second = jobs.create(model=BASE, training_file=training_file, hyperparameters={"n_epochs": 1})
    assert jobs.cancel(second.id).status == "cancelled"
    # Paused once it has trained a few steps, then resumed from its checkpoint.
    wait_for(lambda: any(e.type == "metrics" for e in jobs.list_events(job.id, limit=100)), 1800, "a metrics event", 1.0)
    jobs.pause(job.id)
    _status(jobs, job.id, "paused", *FINAL)
    resumed = jobs.resume(job.id) if jobs.retrieve(job.id).status == "paused" else None
    seen: dict[str, str] = {}

    def follow():  # what a script does: print new events until the job ends
        # The status first: a job found ended has all its events in the listing that follows (the final
        # ones are listed once its status is final); read the other way round, the end could fall between.
        ended = jobs.retrieve(job.id).status in FINAL
        for event in jobs.list_events(job.id, limit=1000):
            seen.setdefault(event.id, event.message)
        return ended

    wait_for(follow, 1800, "the job to end", 2.0)
    return {"job": jobs.retrieve(job.id), "second": jobs.retrieve(second.id), "resumed": resumed, "seen": seen, "created": job}


def test_the_job_is_created_queued_with_its_hyperparameters_resolved(journey):
    created = journey["created"]
    # Files are validated inside the create; a free worker may have claimed the job before the answer left.
    assert created.status in ("queued", "running") and created.object == "fine_tuning.job" and created.model == BASE
    assert created.method.type == "supervised"
    assert created.hyperparameters.n_epochs == 1 and created.hyperparameters.learning_rate_multiplier == 7.5
    assert created.fine_tuned_model is None and created.seed == 42 and created.metadata == {"team": "dates"}


def test_the_job_succeeds_and_its_events_tell_the_story(server, journey):
    job = journey["job"]
    assert job.status == "succeeded", job
    assert re.fullmatch(rf"ft:{re.escape(BASE)}:org-[0-9a-f]{{16}}:dates:[0-9a-f]{{12}}", job.fine_tuned_model)
    assert job.finished_at >= job.created_at
    assert job.trained_tokens > 0
    assert journey["resumed"] is not None, "the job ended before it could be paused"
    messages = list(journey["seen"].values())
    assert any(m.startswith("Created fine-tuning job") for m in messages)
    assert any(m.endswith("24 steps an epoch, 24 steps") for m in messages)  # what the hyperparameters make
    assert any(m.startswith("Paused") for m in messages) and any(m.startswith("Resumed") for m in messages)
    assert any(m.startswith("Step ") and "training loss=" in m for m in messages)
    assert "The job has successfully completed" in messages
    events = server["me"].fine_tuning.jobs.list_events(job.id, limit=1000).data
    assert events[0].message == "The job has successfully completed"  # newest first
    full = next(e for e in events if e.data and "full_valid_loss" in e.data)
    assert full.data["full_valid_loss"] > 0
    page = server["me"].fine_tuning.jobs.list_events(job.id, limit=2)
    assert (
        page.has_more
        and server["me"].fine_tuning.jobs.list_events(job.id, after=page.data[-1].id, limit=1).data[0].id == events[2].id
    )


def test_the_result_file_is_the_step_metrics_csv(server, journey):
    (result,) = journey["job"].result_files
    meta = server["me"].files.retrieve(result)
    assert (meta.purpose, meta.filename) == ("fine-tune-results", "step_metrics.csv")
    rows = list(csv.DictReader(io.StringIO(server["me"].files.content(result).text)))
    assert list(rows[0]) == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert rows[-1]["step"] == "24" and any(r["valid_loss"] for r in rows)
    trained = [r for r in rows if r["train_loss"]]
    assert trained and all(0 <= float(r["train_accuracy"]) <= 1 for r in trained)  # the window's token accuracy
    metrics = [e.data for e in server["me"].fine_tuning.jobs.list_events(journey["job"].id, limit=1000) if e.type == "metrics"]
    assert all(m["train_mean_token_accuracy"] is not None for m in metrics if m.get("train_loss") is not None)


def test_checkpoints_are_the_last_evaluation_cycles_and_each_answers(server, journey):
    """OpenAI keeps a job's last 3 checkpoints: TuneForge the adapters of the last 3 evaluation cycles,
    and the best one's (the job's model); each answers by its checkpoint name, on both APIs."""
    me, job = server["me"], journey["job"]
    checkpoints = me.fine_tuning.jobs.checkpoints.list(job.id, limit=100).data
    assert 1 <= len(checkpoints) <= 4 and all(
        c.fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{c.step_number}" for c in checkpoints
    )
    assert [c.step_number for c in checkpoints] == sorted((c.step_number for c in checkpoints), reverse=True)
    assert checkpoints[0].step_number == 24  # the last cycle is at the last step
    assert all(c.metrics.train_loss is not None and c.metrics.train_mean_token_accuracy is not None for c in checkpoints)
    assert len([c for c in checkpoints if c.metrics.full_valid_loss is not None]) == 1  # the best: the job's model
    prompt = held_out(1)[0].prompt
    for c in checkpoints:
        answer = me.chat.completions.create(
            model=c.fine_tuned_model_checkpoint, messages=[{"role": "user", "content": prompt}], max_tokens=16, temperature=0
        )
        assert answer.choices[0].message.content, c
    last = me.chat.completions.create(
        model=checkpoints[0].fine_tuned_model_checkpoint,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=16,
        temperature=0,
    )
    assert ISO_DATE.search(last.choices[0].message.content)
    by_oci = _oci_chat(server, checkpoints[0].fine_tuned_model_checkpoint, prompt)
    assert by_oci.chat_response.choices[0].message.content[0].text == last.choices[0].message.content
    # A cycle whose adapter was not kept (step 1 is no cycle at all) is a 404 naming the kept ones.
    body = _error(
        openai.NotFoundError,
        lambda: me.chat.completions.create(
            model=f"{job.fine_tuned_model}:ckpt-step-1", messages=[{"role": "user", "content": prompt}]
        ),
    )
    assert body["param"] == "model" and checkpoints[0].fine_tuned_model_checkpoint in body["message"], body


def _oci_chat(server, model: str, prompt: str):
    request = inf.GenericChatRequest(
        messages=[inf.UserMessage(content=[inf.TextContent(text=prompt)])], max_tokens=16, temperature=0.0
    )
    details = inf.ChatDetails(
        compartment_id=server["tenancy"], serving_mode=inf.OnDemandServingMode(model_id=model), chat_request=request
    )
    return server["infer"].chat(details).data


def test_the_ft_name_answers_on_ocis_inference_routes(server, journey):
    """OCI's /actions/chat and /actions/generateText take the ft: name as ON_DEMAND's modelId, as the OCID."""
    job, prompt = journey["job"], held_out(2)[1].prompt
    by_name = _oci_chat(server, job.fine_tuned_model, prompt).chat_response.choices[0].message.content[0].text
    by_id = _oci_chat(server, job.tuneforge_model_id, prompt).chat_response.choices[0].message.content[0].text
    assert by_name == by_id and ISO_DATE.search(by_name)
    text = (
        server["infer"]
        .generate_text(
            inf.GenerateTextDetails(
                compartment_id=server["tenancy"],
                serving_mode=inf.OnDemandServingMode(model_id=job.fine_tuned_model),
                inference_request=inf.LlamaLlmInferenceRequest(prompt=prompt, max_tokens=16, temperature=0.0),
            )
        )
        .data
    )
    assert text.model_id == job.tuneforge_model_id and ISO_DATE.search(text.inference_response.choices[0].text)
    with pytest.raises(oci.exceptions.ServiceError) as err:
        _oci_chat(server, f"ft:{BASE}:org-x::nope", prompt)
    assert (err.value.status, err.value.code) == (404, "NotAuthorizedOrNotFound")


def test_models_lists_the_succeeded_ft_models(server, journey):
    job, second = journey["job"], journey["second"]
    listed = {m.id: m for m in server["me"].models.list()}
    assert listed[job.fine_tuned_model].owned_by == job.organization_id
    assert job.tuneforge_model_id in listed and BASE in listed  # what it listed before stays
    assert not [m for m in listed if m.startswith("ft:") and second.id[6:18] in m]  # a cancelled job has no model
    assert server["me"].models.retrieve(job.fine_tuned_model).id == job.fine_tuned_model
    assert job.fine_tuned_model not in [m.id for m in server["other"].models.list()]
    _error(openai.NotFoundError, lambda: server["other"].models.retrieve(job.fine_tuned_model))


def test_the_ft_model_answers_held_out_prompts_where_the_base_model_does_not(server, journey):
    me = server["me"]
    right, in_format, answers = {"tuned": 0, "base": 0}, {"tuned": 0, "base": 0}, {}
    examples = held_out()
    for example in examples:
        for name, model in (("tuned", journey["job"].fine_tuned_model), ("base", BASE)):
            text = (
                me.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": example.prompt}], max_tokens=16, temperature=0
                )
                .choices[0]
                .message.content.strip()
            )
            answers.setdefault(name, []).append(text)
            right[name] += text == example.completion.strip()
            in_format[name] += ISO_DATE.fullmatch(text) is not None
    assert right["tuned"] >= 4 and in_format["tuned"] >= len(examples) - 1, answers
    assert right["base"] <= 1, answers
    # The same model by its TuneForge id (what the OCI API and the console show).
    by_id = me.chat.completions.create(
        model=journey["job"].tuneforge_model_id,
        messages=[{"role": "user", "content": examples[1].prompt}],
        max_tokens=16,
        temperature=0,
    )
    assert by_id.choices[0].message.content.strip() == answers["tuned"][1]
    # Another tenancy cannot call it.
    _error(
        openai.NotFoundError,
        lambda: server["other"].chat.completions.create(
            model=journey["job"].fine_tuned_model, messages=[{"role": "user", "content": "x"}]
        ),
    )


def test_listing_cancel_and_finished_job_rules(server, journey):
    jobs, job, second = server["me"].fine_tuning.jobs, journey["job"], journey["second"]
    assert second.status == "cancelled" and second.fine_tuned_model is None
    listed = [j.id for j in jobs.list()]
    assert listed.index(second.id) < listed.index(job.id)  # newest first
    assert [j.id for j in jobs.list(metadata={"team": "dates"})] == [job.id]
    assert jobs.list(limit=1).has_more
    for call in (
        lambda: jobs.cancel(job.id),
        lambda: jobs.pause(job.id),
        lambda: jobs.resume(job.id),
        lambda: jobs.cancel(second.id),
    ):
        body = _error(openai.BadRequestError, call)
        assert body["code"] == "invalid_state", body
    other = server["other"].fine_tuning.jobs
    _error(openai.NotFoundError, lambda: other.retrieve(job.id))
    _error(openai.NotFoundError, lambda: other.cancel(job.id))
    assert job.id not in [j.id for j in other.list()]


def test_a_job_trains_with_its_own_seed_and_validation_file(server, journey):
    """`seed` is the run's (its data order; the split's where there is no validation file), and a
    validation_file is the validation split, the whole training file training; the run folder says so."""
    me, jobs = server["me"], server["me"].fine_tuning.jobs
    examples = data.read_examples(DATES)
    train = _upload(me, _chat_lines(examples[:32]), "train32.jsonl")
    valid = _upload(me, _chat_lines(examples[32:36]), "valid4.jsonl")
    job = jobs.create(
        model=BASE, training_file=train.id, validation_file=valid.id, seed=7, hyperparameters={"n_epochs": 1, "batch_size": 8}
    )
    assert (job.seed, job.validation_file) == (7, valid.id)
    events = jobs.list_events(job.id, limit=100).data
    assert f"32 training and 4 validation examples (all of {train.id}, and {valid.id}): 4 steps an epoch, 4 steps" in [
        e.message for e in events
    ]
    assert not [e for e in events if e.level == "warn"]
    job_dir = server["jobs_dir"] / job.tuneforge_model_id
    assert (job_dir / "validation.jsonl").read_bytes() == me.files.content(valid.id).read()
    assert _status(jobs, job.id, *FINAL) == "succeeded"
    ran = json.loads((job_dir / "output" / "model.json").read_text())
    assert (ran["seed"], ran["trainingExamples"], ran["validationExamples"], ran["stepsRun"]) == (7, 32, 4, 4)
    assert jobs.retrieve(job.id).trained_tokens > 0  # all 32 examples' tokens, one epoch
    # The journey's job gave no other seed: 42, as every job OCI's createModel makes.
    journey_run = json.loads((server["jobs_dir"] / journey["job"].tuneforge_model_id / "output" / "model.json").read_text())
    assert journey_run["seed"] == data.DEFAULT_SEED
