"""Shared helpers: metrics, score files, errors, checkpoints, configs, training loop.

Kept import-free on purpose: the evaluator must not pull in torch through a package import.
"""
