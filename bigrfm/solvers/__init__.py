"""Solvers of the kernel ridge step of an RFM iteration: ``cg`` (over callables), ``exact``, ``nystrom`` (Falkon), ``rff``.

Each solver has ``fit(kernel, M, ctx, warm, reg=None) -> (predictor, info, warm)``
(:class:`bigrfm.model.rfm.Solver`); it runs passes through ``ctx.engine`` and
reads no files.
"""
