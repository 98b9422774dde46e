"""The load harness behind ``make bench``: a real daemon, driven by protocol clients.

``bench/run.py`` is the entry point; each experiment is one module here
(``sweep``, ``fanout``, ``scale``), built on the daemon runner (``daemon``), the
client processes (``senders``, ``receivers``, ``idle``), the floors
(``floors``) and the reporting (``report``, ``plots``, ``targets``).
"""
