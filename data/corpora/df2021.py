"""ASVspoof 2021 DF eval (trial_metadata.txt of the organisers' DF keys); EER only (no ASV trials):

    <root>/ASVspoof2021_DF_eval/flac/DF_E_*.flac      (the eval audio ships in parts: one flac/ folder)
    <root>/keys/DF/CM/trial_metadata.txt              CM keys with codec and vocoder type

Per-condition tables as in the official 2021 evaluation package: rows = the vocoder column grouped as
Traditional, Wav.Concat., Neural AR, Neural non-AR, Unknown; columns C1...C9 (the compression column).
"""

from __future__ import annotations

from data.corpora.base import register_corpus
from data.corpora.trial_metadata import LAYOUT as METADATA_LAYOUT
from data.corpora.trial_metadata import TrialMetadataCorpus
from utils.conditions import ConditionLayout

CODECS = ("nocodec", "low_mp3", "high_mp3", "low_m4a", "high_m4a", "low_ogg", "high_ogg", "mp3m4a", "oggm4a")
LAYOUT = ConditionLayout(
    track="df2021",
    row_title="attack group",
    rows=(
        ("traditional_vocoder", "Traditional"),
        ("waveform_concatenation", "Wav.Concat."),
        ("neural_vocoder_autoregressive", "Neural AR"),
        ("neural_vocoder_nonautoregressive", "Neural non-AR"),
        ("unknown", "Unknown"),
    ),
    columns=tuple((codec, f"C{i}") for i, codec in enumerate(CODECS, 1)),
    tdcf=False,
    label="DF 2021",
)


@register_corpus
class DF2021(TrialMetadataCorpus):
    name = "df2021"
    title = "2021 DF eval"
    display = "2021 DF"
    track = "DF"
    conditions = LAYOUT
    # the tables group spoof trials by the vocoder type, the column after the subset
    row_column = 8
    metadata_layout = METADATA_LAYOUT + " vocoder"
