"""Generated demo corpus in the ASVspoof 2019 LA layout (docs/data.md). THE AUDIO IS SYNTHETIC.

``python -m data.demo --out DIR`` writes, deterministically for a seed, a small corpus that every
script of the toolkit can run on without the real data set:

    DIR/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt
    DIR/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt
    DIR/ASVspoof2019_LA_{train,dev,eval}/flac/<utt_id>.flac      (16 kHz mono, PCM_16)
    DIR/demo_manifest.json                                        (seed, counts, attacks)

One module per concept:

- `data.demo.synthesis`: the source-filter "speech" synthesiser (speakers, prosody, formants, the
  recording channel) and the STFT helpers it shares with the attacks;
- `data.demo.attacks`: the 13 simulated attacks (A01-A06 in train and dev, A07-A13 in eval only) and
  `synthesize`, which renders one bona fide or spoofed utterance;
- `data.demo.corpus`: planning the protocols and writing the corpus in the layout of the default corpus
  of `data.corpora` (2019 LA) with `ProtocolRow` of `data.protocols`;
- `data.demo.__main__`: the CLI.

No torch: the audio is made with numpy and scipy and written with soundfile.
"""

from data.demo.attacks import ATTACKS, EVAL_ATTACKS, PARTITION_ATTACKS, TRAIN_DEV_ATTACKS, Attack, synthesize
from data.demo.corpus import (
    DEFAULT_BONAFIDE_FRACTION,
    DEFAULT_COUNTS,
    GENERATOR_VERSION,
    MANIFEST_NAME,
    PARTITIONS,
    DemoSummary,
    asv_score_lines,
    format_summary,
    generate_demo_corpus,
    plan_partition,
)
from data.demo.synthesis import BONAFIDE_SNR_DB, SPOOF_SNR_DB, Speaker, channel, make_speaker

__all__ = [
    "ATTACKS",
    "BONAFIDE_SNR_DB",
    "DEFAULT_BONAFIDE_FRACTION",
    "DEFAULT_COUNTS",
    "EVAL_ATTACKS",
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "PARTITIONS",
    "PARTITION_ATTACKS",
    "SPOOF_SNR_DB",
    "TRAIN_DEV_ATTACKS",
    "Attack",
    "DemoSummary",
    "Speaker",
    "asv_score_lines",
    "channel",
    "format_summary",
    "generate_demo_corpus",
    "make_speaker",
    "plan_partition",
    "synthesize",
]
