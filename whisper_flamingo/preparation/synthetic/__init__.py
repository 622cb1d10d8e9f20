"""Synthetic audio-visual demo corpus in the MuAViC layout (eSpeak NG speech + drawn talking mouth).

``generate_corpus(out, seed, n_train, n_valid, n_test, jobs, en_x_langs)`` is the entry point; the
command line is ``whisper-flamingo prepare synthetic``.
"""

from whisper_flamingo.preparation.synthetic.corpus import CorpusInfo, generate_corpus

__all__ = ["CorpusInfo", "generate_corpus"]
