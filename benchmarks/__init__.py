"""Performance benchmark of `syncer` against a synthetic cluster served by the fake API (`benchmarks/run.py`)."""
