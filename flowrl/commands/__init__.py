"""The command-line tools, one module each, with ``main()`` (parse, run, return an exit status) and ``cli()`` (the
console command: ``main`` with one-line errors). Installed as ``flowrl-run``, ``flowrl-evaluate``, ``flowrl-plot``,
``flowrl-sweep``, ``flowrl-report``, ``flowrl-bench`` and ``flowrl-convert``; in a checkout ``python tools/<name>.py``
runs the same (``flowrl-convert``: ``python tools/convert_checkpoints.py``)."""
