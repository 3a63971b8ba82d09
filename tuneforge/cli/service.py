"""`tuneforge serve`, `api-keys` and `console-users`: the service and who may call it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from tuneforge.cli.options import store_options


@click.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to listen on (put TLS in front: docs/service.md)."
)
@click.option("--port", type=int, default=8080, show_default=True)
@store_options
@click.option(
    "--weights",
    default=None,
    metavar="PATH|stand-in",
    help="Weights for every job (as `train --weights`); default: the engine's per-model lookup.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Training jobs this process runs at once (0: API only, jobs run on other servers).",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Times a job is started before it fails when its worker keeps dying.",
)
@click.option("--region", default="local", show_default=True, help="Region name used in OCIDs.")
@click.option(
    "--lease-seconds",
    type=click.FloatRange(min=5),
    default=30.0,
    show_default=True,
    help="A running job whose server sent no heartbeat (every 2 s) for this long is taken over by another server.",
)
@click.option(
    "--executor",
    "executor_kind",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where trainers and hosting clusters' replicas run: processes of this machine, or Ray jobs and actors on a "
    "Ray cluster (docs/scale-out.md).",
)
@click.option(
    "--ray-address", default=None, metavar="URL", help="--executor ray: the Ray cluster's dashboard, e.g. http://HEAD:8265."
)
@click.option(
    "--ray-gpus-per-unit",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="--executor ray: GPUs per cluster unit when the unit shape names no count (H100_X8 names 8).",
)
@click.option(
    "--ray-cpus-per-worker",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="--executor ray: CPUs (and torch threads) of each Ray Train worker.",
)
@click.option(
    "--ray-hosting-address",
    default=None,
    metavar="ADDRESS",
    help="--executor ray: where hosting replicas run as Ray actors: the cluster's HEAD:6379 when this machine is a Ray "
    "node (default: the node it runs, 'auto'), or ray://HEAD:10001 (Ray Client).",
)
@click.option(
    "--ray-cpus-per-replica",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="--executor ray: CPUs (and torch threads) each hosting replica (one per unit of a HOSTING cluster) reserves.",
)
@click.option(
    "--replica-timeout",
    type=click.FloatRange(min=1.0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="A hosting replica (a unit of a HOSTING cluster) that answers no heartbeat for this long is killed and "
    "started again; its requests end with an error or move to another replica.",
)
@click.option(
    "--serving-max-batch",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Inference requests one decode step of a served model carries (its rows).",
)
@click.option(
    "--serving-max-wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="An inference request expected to wait longer than this for a row is refused with 429 and Retry-After "
    "(docs/serving.md); one still waiting at twice this is ended.",
)
@click.option(
    "--models-dir",
    "models_dirs",
    type=click.Path(file_okay=False, path_type=Path),
    multiple=True,
    metavar="DIR",
    help="Where Hugging Face model imports look before the Hugging Face cache: a hub cache (models--org--name) "
    "or folders org/name/ (repeatable; docs/service.md, 'Bring your own model').",
)
def serve(
    host: str,
    port: int,
    data_dir: Path,
    database_url: str | None,
    weights: str | None,
    workers: int,
    max_attempts: int,
    region: str,
    lease_seconds: float,
    executor_kind: str,
    ray_address: str | None,
    ray_gpus_per_unit: int,
    ray_cpus_per_worker: float,
    ray_hosting_address: str | None,
    ray_cpus_per_replica: float,
    replica_timeout: float,
    serving_max_batch: int,
    serving_max_wait: float,
    models_dirs: tuple[Path, ...],
) -> None:
    """Run the OCI-compatible fine-tuning API and its training workers."""
    from tuneforge.server import serve as run_server
    from tuneforge.services.config import ServiceConfig

    config = ServiceConfig(
        data_dir=data_dir.resolve(),
        database_url=database_url,
        weights=weights,
        workers=workers,
        region=region,
        max_attempts=max_attempts,
        lease_seconds=lease_seconds,
        executor=executor_kind,
        ray_address=ray_address,
        ray_gpus_per_unit=ray_gpus_per_unit,
        ray_cpus_per_worker=ray_cpus_per_worker,
        ray_hosting_address=ray_hosting_address,
        ray_cpus_per_replica=ray_cpus_per_replica,
        replica_timeout_s=replica_timeout,
        serving_max_batch=serving_max_batch,
        serving_max_wait_s=serving_max_wait,
        models_dirs=tuple(d.expanduser().resolve() for d in models_dirs),
    )
    run_server(config, host, port)


@click.group(name="api-keys")
def api_keys() -> None:
    """Register the public keys that sign API requests (OCI API signing keys)."""


def _key_store(data_dir: Path, database_url: str | None):
    from tuneforge.store.db import default_url, open_store

    data_dir.mkdir(parents=True, exist_ok=True)
    return open_store(database_url or default_url(data_dir))


@api_keys.command(name="add")
@click.option("--tenancy", required=True, metavar="OCID", help="Tenancy OCID (the SDK config's `tenancy`).")
@click.option("--user", required=True, metavar="OCID", help="User OCID (the SDK config's `user`).")
@click.option(
    "--public-key-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM public key (or the private key; only its public half is stored).",
)
@store_options
def api_keys_add(tenancy: str, user: str, public_key_file: Path, data_dir: Path, database_url: str | None) -> None:
    """Register a key; prints its fingerprint (the SDK config's `fingerprint`)."""
    from tuneforge.services.resources.keys import add_key, check_identity

    check_identity(tenancy, user)  # before _key_store creates the data folder
    sessions = _key_store(data_dir, database_url)
    with sessions() as session:
        row = add_key(session, tenancy, user, public_key_file.read_bytes())
        session.commit()
    click.echo(row.fingerprint)


@api_keys.command(name="list")
@click.option("--tenancy", default=None, metavar="OCID", help="Only this tenancy's keys.")
@store_options
def api_keys_list(tenancy: str | None, data_dir: Path, database_url: str | None) -> None:
    """List registered keys: tenancy, user, fingerprint."""
    from tuneforge.services.resources.keys import list_bearers, list_keys

    with _key_store(data_dir, database_url)() as session:
        for row in list_keys(session, tenancy):
            click.echo(f"{row.tenancy_id}  {row.user_id}  {row.fingerprint}")
        for bearer in list_bearers(session, tenancy):
            click.echo(f"{bearer.tenancy_id}  {bearer.user_id}  bearer {bearer.key_id}")


@api_keys.command(name="remove")
@click.argument("key", metavar="FINGERPRINT|KEY_ID|BEARER_KEY_ID")
@store_options
def api_keys_remove(key: str, data_dir: Path, database_url: str | None) -> None:
    """Remove a signing key (by fingerprint or keyId) or a bearer key (by the id `list` shows)."""
    from tuneforge.services.resources.keys import remove_bearer, remove_key

    with _key_store(data_dir, database_url)() as session:
        removed = remove_key(session, key) or remove_bearer(session, key)
        session.commit()
    if not removed:
        raise click.ClickException(f"no key {key!r} is registered")
    click.echo(f"removed {removed} key(s)")


@api_keys.command(name="create-bearer")
@click.option("--tenancy", required=True, metavar="OCID", help="The tenancy whose models the key may call.")
@click.option("--user", required=True, metavar="OCID", help="The user the key acts as.")
@store_options
def api_keys_create_bearer(tenancy: str, user: str, data_dir: Path, database_url: str | None) -> None:
    """Create an API key for the OpenAI-compatible API (/openai/v1); it is printed once, only its hash is kept."""
    from tuneforge.services.resources.keys import check_identity, create_bearer

    check_identity(tenancy, user)  # before _key_store creates the data folder
    with _key_store(data_dir, database_url)() as session:
        row, token = create_bearer(session, tenancy, user)
        session.commit()
    click.echo(token)
    click.echo(f"bearer key {row.key_id} for {tenancy}: shown once, store it now (OpenAI(api_key=...))", err=True)


# --- tuneforge console-users (the web console's sign-in; tuneforge/web/users.py) ----------------


def _console_data_dir(f: Callable) -> Callable:
    # The users file lives in the data dir (DATA_DIR/console/users.json), so only --data-dir matters.
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("tuneforge-data"),
        show_default=True,
        help="The server's --data-dir.",
    )(f)


@click.group(name="console-users")
def console_users() -> None:
    """Users who sign in to the web console with a password; each belongs to one tenancy."""


@console_users.command(name="add")
@click.option("--tenancy", required=True, metavar="OCID", help="The tenancy whose models the user sees and creates.")
@click.option("--username", required=True, help="Sign-in name (letters, digits, . _ @ + -).")
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read the password from this file (first line); default: prompt for it.",
)
@_console_data_dir
def console_users_add(tenancy: str, username: str, password_file: Path | None, data_dir: Path) -> None:
    """Create a console user, or set a new password for an existing one."""
    from tuneforge.web.users import add_user

    if password_file is not None:
        password = (password_file.read_text().splitlines() or [""])[0]
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    add_user(data_dir.resolve(), tenancy, username, password)
    click.echo(f"console user {username} can sign in to tenancy {tenancy}")


@console_users.command(name="list")
@_console_data_dir
def console_users_list(data_dir: Path) -> None:
    """List console users: username and tenancy."""
    from tuneforge.web.users import list_users

    for username, tenancy in list_users(data_dir.resolve()):
        click.echo(f"{username}  {tenancy}")


@console_users.command(name="remove")
@click.argument("username")
@_console_data_dir
def console_users_remove(username: str, data_dir: Path) -> None:
    """Remove a console user; their open console sessions end at once."""
    from tuneforge.web.users import remove_user

    if not remove_user(data_dir.resolve(), username):
        raise click.ClickException(f"no console user {username!r}")
    click.echo(f"removed console user {username}")
