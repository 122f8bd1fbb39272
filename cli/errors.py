"""How the ``bigrfm`` command reports a failure: one ``Error:`` line on stderr and an exit code.

Exit codes: 0 success; 2 bad input or usage (a bigrfm error, an invalid
option or hyper-parameter, a click usage error); 1 an internal error (a bug:
``Internal error: ...``) or a failure of the system (a full disk, a file that
cannot be written); 130 interrupted (Ctrl-C). Every message is one line; with
``--debug`` the traceback is shown instead.

scikit-learn's parameter errors name estimator parameters ("The 'bandwidth'
parameter of RFMRegressor must be ..."); they are reworded with the option a
shell user typed (``--bandwidth``, ``--centers``, ``--seed``...).
"""

from __future__ import annotations

import re
from typing import Any

import click

from bigrfm.exceptions import BigRFMError

__all__ = ["EXIT_OK", "EXIT_INTERNAL", "EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "OPTION_OF", "one_line", "report", "usage_line"]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

#: The command-line option of each estimator parameter whose name differs from it.
OPTION_OF = {
    "validation_fraction": "--val-fraction",
    "random_state": "--seed",
    "n_centers": "--centers",
    "n_components": "--features",
    "n_workers": "--workers",
}

_PARAM_MESSAGE = re.compile(r"The '(\w+)' parameter of \w+ must be (.*)", re.S)


def one_line(text: str) -> str:
    """``text`` with its line breaks (and the spaces around them) turned into single spaces."""
    return re.sub(r"\s*\n\s*", " ", str(text)).strip()


def _option(param: str) -> str:
    return OPTION_OF.get(param, "--" + param.replace("_", "-"))


def _is_invalid_parameter(exc: BaseException) -> bool:
    try:
        from sklearn.utils._param_validation import InvalidParameterError  # noqa: PLC0415
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        return False
    return isinstance(exc, InvalidParameterError)


def _notes(exc: BaseException) -> str:
    notes = [n.replace("bigrfm: ", "") for n in getattr(exc, "__notes__", ())]
    return (" " + " ".join(notes)) if notes else ""


def report(exc: BaseException, command: str = "bigrfm") -> int:
    """Print the one ``Error:`` line for ``exc`` on stderr and return the exit code."""
    if isinstance(exc, KeyboardInterrupt):
        click.echo("Interrupted.", err=True)
        return EXIT_INTERRUPTED
    if isinstance(exc, BigRFMError):
        click.echo(f"Error: {one_line(exc)}", err=True)
        return EXIT_BAD_INPUT
    if _is_invalid_parameter(exc):
        m = _PARAM_MESSAGE.match(str(exc))
        text = f"{_option(m.group(1))} must be {m.group(2)}" if m else str(exc)
        click.echo(f"Error: {one_line(text)} See '{command} --help'.", err=True)
        return EXIT_BAD_INPUT
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        click.echo(
            f"Error: the system refused a read or write: {exc.strerror or exc}{where}. Free disk space or fix "
            "permissions, then run again; a model or dataset being written was not put in place.",
            err=True,
        )
        return EXIT_INTERNAL
    click.echo(
        f"Internal error: {type(exc).__name__}: {one_line(exc)}{_notes(exc)} (rerun with --debug for the traceback)",
        err=True,
    )
    return EXIT_INTERNAL


def usage_line(exc: click.ClickException) -> str:
    """The one line for a click usage error: the message, and where to read the usage."""
    ctx: Any = getattr(exc, "ctx", None)
    hint = f" See '{ctx.command_path} --help'." if ctx is not None else ""
    return f"Error: {one_line(exc.format_message())}{hint}"
