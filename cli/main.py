"""Entry point of the ``bigrfm`` command: a click group whose commands live in sibling modules.

Exit codes: 0 success; 2 usage or bad input (one ``Error:`` line on stderr, no
traceback unless ``--debug``); 1 internal error.
"""

from __future__ import annotations

import logging
import sys

import click

from bigrfm import __version__
from bigrfm.exceptions import BigRFMError


class _Group(click.Group):
    """Turns library errors into one clear line and the documented exit codes."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BigRFMError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - the top of the program
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bigrfm")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Recursive Feature Machines on data larger than memory."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.setLevel(level)
    if not debug:
        # Dask's own INFO chatter (workers starting, keys cancelled) is noise for a user
        handler.addFilter(lambda r: r.levelno >= logging.WARNING or not r.name.startswith(("distributed", "dask")))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


from .demo import demo  # noqa: E402
from .model_cmds import evaluate, fit, predict  # noqa: E402

for _command in (fit, predict, evaluate, demo):
    cli.add_command(_command)


from .data_cmds import convert, info  # noqa: E402  (commands register on the group above)

cli.add_command(convert)
cli.add_command(info)

from .features_cmd import features  # noqa: E402
from .patches_cmd import patches  # noqa: E402

cli.add_command(features)
cli.add_command(patches)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
