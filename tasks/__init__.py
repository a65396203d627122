"""pdeflow's science (solvers, surrogates, ROMs, UQ) and the Prefect task wrappers of each stage.

Importing this package sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy: with the
default spinning OpenMP threads, torch ran 15-100x slower whenever another process (a Dask
worker, a second job) held one of the cores (measured on 2 cores: a 64-sample solve 4.2 s vs
0.12 s; an FNO batch 2-4 s vs 0.13 s), and uncontended speed is unchanged. It must be set before
torch loads its OpenMP runtime, so this package sets it before importing torch anywhere.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
