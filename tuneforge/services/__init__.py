"""The service layer: everything the OCI-compatible API, the web console and the CLI do to the
service's resources, in one place that all three call.

    models.py        custom models: create (validate, queue the training job), get, list, update,
                     delete (cancels a running job), change compartment, training curves
    clusters.py      dedicated AI clusters (FINE_TUNING: worker pools; HOSTING: endpoint hosts)
    objects.py       the Object Storage subset: namespace, buckets, objects, multipart uploads
    workrequests.py  the status, logs and errors of asynchronous operations
    keys.py          API signing keys (`tuneforge api-keys`)
    base_models.py   catalog base models as OCI Model objects
    schemas.py       OCI's request and response bodies (pydantic, camelCase on the wire)

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
