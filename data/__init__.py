"""Data layer: protocols, audio I/O, front ends, the feature store and datasets.

Kept import-free on purpose: importing `data.protocols` must not pull in torch.
"""
