"""Experiments over many runs: ``lightning-redd compare`` (``python -m lightning_redd.experiments``).

The rows of a comparison (:mod:`.spec`), running each through the real ``lightning-redd predict``
with a resume cache (:mod:`.runner`, clocked by the callback of :mod:`.clock`), their scores
(:mod:`.scoring`) and the files written (:mod:`.report`); :mod:`.cli` parses the arguments
(entry point :func:`lightning_redd.experiments.cli.main`).
"""
