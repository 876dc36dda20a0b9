"""Reproduction suites and their tables and figures."""
