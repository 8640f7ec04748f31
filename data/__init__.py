"""Data layer: corpora (`data.corpora`) and protocol rows, audio I/O, the feature store and datasets.

Kept import-free on purpose: importing `data.protocols` or `data.corpora` must not pull in torch.
"""
