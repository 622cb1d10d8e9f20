"""whisper-flamingo: noise-robust audio and audio-visual speech recognition with Whisper."""

__version__ = "0.1.0"
