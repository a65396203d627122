"""pdeflow's benchmarks: ``python -m benchmarks.run [--quick]`` (``make bench``).

Each module measures one thing and returns ``benchmarks.common.Result`` rows; ``run`` prints them
next to their references and goals and writes ``bench-out/results.json``.
"""
