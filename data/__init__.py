"""Data layer: corpora and protocols, audio I/O, the feature store, datasets and augmentation (front ends
are models: models/frontends/).

Kept import-free on purpose: importing `data.protocols` must not pull in torch.
"""
