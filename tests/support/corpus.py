"""The corpus loader for tests: the same one the load tools use (``loadtest.corpus``)."""

from loadtest.corpus import CORPUS_ENV, CorpusRow, corpus_path, default_corpus_path, load_corpus

__all__ = ["CORPUS_ENV", "CorpusRow", "corpus_path", "default_corpus_path", "load_corpus"]
