"""Measurement kernels for ``tools/bench.py`` (``flowrl-bench``): timing and FLOP counting (``utils``), every agent
side by side (``agents``), flowrl against the authors' code (``reference``), the GPU measurement (``gpu``). Nothing
here is imported by the runner or the agents."""
