"""Turning raw material into training data in the MuAViC layout.

``synthetic``: the generated audio-visual demo corpus (``whisper-flamingo prepare synthetic``).
Real data (``whisper-flamingo prepare <step>``): ``jobs`` (sharding, resuming, the bad-input policy),
``extract_audio``, ``landmarks``, ``crop`` (+ ``mean_face``), ``corpus_manifests``, ``data.label_norm``
(MuAViC/mTEDx normalisation) and ``noise_sets`` (babble, MUSAN).
``manifest``: a manifest from a folder of audio files with transcripts (``prepare manifest --layout audio``).
Preparation may use ``data`` and the base modules; only ``commands`` imports it.
"""
