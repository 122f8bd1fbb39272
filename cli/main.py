"""Entry point of the ``bigrfm`` command: a click group whose commands live in sibling modules."""

from __future__ import annotations

import click

from bigrfm import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bigrfm")
def cli() -> None:
    """Recursive Feature Machines on data larger than memory."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
