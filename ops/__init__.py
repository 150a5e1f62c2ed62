"""Operator tools: ``run.py top`` and ``run.py status`` (``ops.console``).

They read a node over HTTP (``/api/node``, served by ``transport/http.py``)
and import nothing of the server's runtime except the monitor's setting
names, so they run anywhere the node's HTTP port is reachable.
"""
