"""The ``bigrfm`` command line (installed as the ``bigrfm_cli`` package)."""
