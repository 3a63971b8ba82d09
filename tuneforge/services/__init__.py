"""The service layer: everything the OCI-compatible API, the web console and the CLI do to the
service's resources, in one place that all three call.

Grouped by kind; imports run downward (actions and background use resources; resources use the
plumbing; schemas import nothing of the layer's but each other):

    resources/       what the API's paths name, one module each:
      models.py        custom models: create (validate, queue the training job), get, list, update,
                       delete (cancels a running job), change compartment, training curves
      clusters.py      dedicated AI clusters (FINE_TUNING: worker pools; HOSTING: endpoint hosts)
      endpoints.py     a model hosted on a HOSTING cluster; what an inference call resolves to
      sweeps.py        hyperparameter sweeps (TuneForge's own resource) and their learning curves
      imported_models.py  models the user brings (Hugging Face cache, Object Storage prefix): the
                       import's checks in the background, the server's own copy, delete while unused
      model_discovery.py  what can be fine-tuned and called here, with every range and default
      objects.py       the Object Storage subset: namespace, buckets, objects, multipart uploads
      workrequests.py  the status, logs and errors of asynchronous operations
      keys.py          API signing keys and bearer keys (`tuneforge api-keys`)
      base_models.py   catalog base models as OCI Model objects
      datasets.py      a training dataset checked at create time as the engine will check it
    actions/         calls that answer rather than store:
      inference.py     chat and generateText over the serving engine (OCI's and OpenAI's routes)
      try_it.py        the console's "Try it" panel (a model and its base side by side)
    schemas/         the wire bodies (pydantic, no logic): resources.py (OCI's resources),
                     inference.py (OCI's and OpenAI's inference requests), sweeps.py, imported_models.py
    background/      threads every server runs beside the job workers:
      sweep_coordinator.py  claims a sweep under a lease, asks Optuna, creates trials as models
    config.py, context.py (Caller, Services), errors.py (ServiceError), protocol.py (etags, pages,
    listing), tenancy.py, idempotency.py, transactions.py: the plumbing every module above shares

No web framework is imported here: the routers (tuneforge/api) and the console (tuneforge/web)
translate HTTP into these calls; `tests/test_structure.py` checks it.

Rules every function here keeps, so that no caller has to:
- tenancy isolation: a caller sees and touches only its own tenancy's resources (`Caller`); any
  other id is "not found", never "forbidden";
- idempotency: creates honour `opc-retry-token` (`idempotency.py`);
- etags: updates and deletes given an `if-match` etag are atomic compare-and-set (the row's
  revision is SQLAlchemy's version counter: a concurrent writer makes the UPDATE match no row);
- errors are `ServiceError`s carrying OCI's HTTP status and error code; the API turns them into
  `{"code", "message"}` and the console into a message on the page.

A `Services` object bundles what the functions need (config, database sessions, the worker wake-up).
"""
