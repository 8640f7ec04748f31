"""Corpora registered by name, one module each (like lhotse's recipes): `la2019`, `la2021`, `df2021`
(these two share the `trial_metadata` reader), `itw`, `asvspoof5`, and `manifest` (your own recordings listed
in CSV/TSV files, bound to them per use; its reader also reads In-the-Wild's meta.csv). `base` defines what a
corpus is and the registry; `python -m data.corpora check NAME ROOT` validates a corpus root. See
docs/ARCHITECTURE.md, "Add a corpus".
"""

from data.corpora.base import (
    AsvFiles,
    Corpus,
    all_corpora,
    corpus_names,
    default_corpus,
    detect_corpus,
    discover,
    get_corpus,
    read_protocol,
    recipe_corpus,
    register_corpus,
    unregister_corpus,
)

__all__ = [
    "AsvFiles",
    "Corpus",
    "all_corpora",
    "corpus_names",
    "default_corpus",
    "detect_corpus",
    "discover",
    "get_corpus",
    "read_protocol",
    "recipe_corpus",
    "register_corpus",
    "unregister_corpus",
]
