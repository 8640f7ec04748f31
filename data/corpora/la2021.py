"""ASVspoof 2021 LA eval (trial_metadata.txt of the organisers' LA keys), with the ASV scores and keys of
its t-DCF:

    <root>/ASVspoof2021_LA_eval/flac/LA_E_*.flac
    <root>/keys/LA/CM/trial_metadata.txt              CM keys: codec, attack, key, phase of each trial
    <root>/keys/LA/ASV/trial_metadata.txt             ASV keys (target/nontarget/spoof)
    <root>/keys/LA/ASV/ASVTorch_Kaldi/score.txt       the organisers' ASV scores 'model trial score'

Per-condition tables as in the official 2021 evaluation package: rows A07...A19, columns C1...C7 (the codec
column alone; transmission is not part of the condition), EER and the revised 2021 min t-DCF.
"""

from __future__ import annotations

from data.corpora.base import register_corpus
from data.corpora.trial_metadata import TrialMetadataCorpus
from utils.conditions import ConditionLayout

CODECS = ("none", "alaw", "pstn", "g722", "ulaw", "gsm", "opus")
LAYOUT = ConditionLayout(
    track="la2021",
    row_title="attack",
    rows=tuple((f"A{i:02d}", f"A{i:02d}") for i in range(7, 20)),
    columns=tuple((codec, f"C{i}") for i, codec in enumerate(CODECS, 1)),
    tdcf=True,
    label="LA 2021",
)


@register_corpus
class LA2021(TrialMetadataCorpus):
    name = "la2021"
    title = "2021 LA eval"
    display = "2021 LA"
    track = "LA"
    conditions = LAYOUT
    asv_scores_hint = "keys/LA/ASV/ASVTorch_Kaldi/score.txt"
    asv_metadata_hint = "keys/LA/ASV/trial_metadata.txt"
