"""The `tuneforge` command line: the group `main` (pyproject's console script) and its commands, one
module per group of commands:

    catalog    models, plan
    training   train, eval, generate (the trainer process itself: tuneforge/engine/run.py)
    sweep      sweep
    serving    chat, export
    service    serve, api-keys, console-users
    options    what several commands share: the hyperparameter, device, weights and store options,
               notices, printing

Commands are thin: parse, call the library, print. Keep module-level imports light (no torch,
transformers or fastapi): `tuneforge plan` must answer in well under a second, so a command that
needs a heavy library imports it inside its own function.

Errors: any TuneForgeError raised by a command is printed (no traceback) and exits 2, once,
in `_Main.invoke`; click's own usage errors also exit 2.
"""

from __future__ import annotations

from typing import Any

import click

from tuneforge.cli import catalog, service, serving, sweep, training
from tuneforge.errors import TuneForgeError


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TuneForgeError as err:
            click.echo(f"Error: {err}", err=True)
            ctx.exit(2)


@click.group(cls=_Main)
@click.version_option(package_name="tuneforge")
def main() -> None:
    """TuneForge: fine-tune open base models with OCI Generative AI custom-model semantics."""


for command in (
    catalog.models,
    catalog.plan,
    training.train,
    training.eval_command,
    training.generate,
    service.serve,
    service.api_keys,
    service.console_users,
    sweep.sweep,
    serving.chat,
    serving.export,
):
    main.add_command(command)
