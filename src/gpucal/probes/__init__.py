"""Timed, verified measurements of gpucal.

One probe per module: a frozen config, ``run(backend, config) -> Result``, ``applicable(backend)``
saying why a probe cannot run here, and a registry by name that raises on duplicates. One timing
harness (``probes/timing.py``) serves every probe. Probes never print and never exit.
"""
