"""Entry point of the ``bigrfm`` command: a click group whose commands live in sibling modules.

Exit codes: 0 success; 2 usage or bad input (one ``Error:`` line on stderr, no
traceback unless ``--debug``); 1 internal error or a failure of the system;
130 interrupted (:mod:`.errors` has the rules). Logs of Dask (this process's
and the LocalCluster workers') reach stderr only with ``-v`` or ``--debug``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from bigrfm import __version__

from .errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, report, usage_line

#: Loggers whose records are hidden unless -v (warnings) or --debug (everything).
_QUIET_LOGGERS = ("distributed", "dask", "tornado", "asyncio", "bokeh")


class _Group(click.Group):
    """Turns every failure into one clear line and the documented exit codes."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.Abort:
            click.echo("Interrupted.", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except click.ClickException as exc:  # usage errors: unknown option, bad value, missing argument
            click.echo(usage_line(exc), err=True)
            sys.exit(EXIT_BAD_INPUT)
        # non-standalone click returns the exit code of ctx.exit(), or the command's result
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the top of the program
            if ctx.obj and ctx.obj.get("debug") and not isinstance(exc, KeyboardInterrupt):
                raise
            code = report(exc, _command_path(ctx))
        ctx.exit(code)


def _command_path(ctx: click.Context) -> str:
    sub = ctx.invoked_subcommand
    return f"{ctx.command_path} {sub}" if sub else ctx.command_path


@click.group(name="bigrfm", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bigrfm")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs (Dask's and its workers' too).")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details, and Dask's warnings, to stderr.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Recursive Feature Machines on data larger than memory."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    # LocalCluster worker processes log on their own; they are told how much (ExecConfig.worker_log_level)
    ctx.obj["worker_log_level"] = "debug" if debug else "warning" if verbose else "critical"
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.setLevel(level)
    if not debug:
        # Dask's chatter (workers starting, keys cancelled, a worker's traceback) is noise for a
        # user: bigrfm reports what failed itself. -v shows Dask's warnings.
        handler.addFilter(lambda r: not r.name.startswith(_QUIET_LOGGERS) or (verbose and r.levelno >= logging.WARNING))
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
    cli(prog_name="bigrfm")


if __name__ == "__main__":
    main()
