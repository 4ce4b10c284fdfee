"""The command layer: every entry point's argument parsing, its ``main`` and what a command
writes besides the result document (the report, tables, comparison, baseline, JUnit XML).

Each module here is one command; users run it as its console script (``robaudit``,
``robaudit-gate``, ...) or as the ``python -m`` module it has always had
(``python -m analysis.audit``, ...), which only hands over to it. This package imports every
other layer and none imports it; nothing is imported here, so that the torch-free commands
(the report, the comparison) stay torch-free.
"""
