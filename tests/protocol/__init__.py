"""Tests of mcrelay.protocol.

This file makes the folder a package so that its module names (``protocol.conftest``,
``protocol.test_reassembly``...) cannot collide with same-named test modules or
``conftest.py`` files in the sibling folders, for pytest and for mypy alike.
"""
