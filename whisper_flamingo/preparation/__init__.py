"""Turning raw material into training data in the MuAViC layout.

``synthetic``: the generated audio-visual demo corpus (``whisper-flamingo prepare synthetic``).
Preparation may use ``data`` and the base modules; only ``commands`` imports it.
"""
