"""Turning raw material into training data in the MuAViC layout.

``synthetic``: the generated audio-visual demo corpus (``whisper-flamingo prepare synthetic``);
``manifest``: a manifest from a folder of audio files with transcripts (``whisper-flamingo prepare manifest``).
Preparation may use ``data`` and the base modules; only ``commands`` imports it.
"""
