"""What-if sweeps: one scenario run over a grid of parameters, in parallel, reproducibly.

``socksim sweep FILE --param rate=500..4000:500 --param tcp_tw_reuse=0,2`` runs the scenario once
per point of the grid on the simulator, with the parameters substituted:

- fields of the first load step: ``rate``, ``duration``, ``close_first``, ``reuseaddr``, ``port``...
- sysctls (``host.sysctls``): ``tcp_tw_reuse``, ``tcp_max_tw_buckets``, ``ip_local_port_range``
  (written ``LOW-HIGH``)...; the ``net.ipv4.``/``net.core.`` prefix may be given;
- host fields: ``latency``, ``file_max``; and ``seed``.

Values: ``A..B`` (step 1), ``A..B:STEP``, ``A..B:xFACTOR`` (geometric), ``V1,V2,...`` or one value.
The grid is the product of the ``--param`` lists, the last one varying fastest.

Every point is a plain task (the scenario as data, its parameters, its seed) run by
:func:`run_point` through a ``concurrent.futures`` executor: local worker processes by default,
or a Dask cluster with ``--scheduler tcp://HOST:PORT``. A point's result depends only on its task,
so the results are identical whichever executor ran them. Per point the outcome metrics are
taken from the trace (the load steps' statistics and the end-of-run summary), with the closed-form
estimate beside them (see :func:`closed_form`).
"""

from .command import *  # noqa: F401,F403
from .params import *  # noqa: F401,F403
from .point import *  # noqa: F401,F403
