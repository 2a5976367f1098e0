"""Sentence splitting and n-grams used by the metrics."""

from hybrid.text.units import ngrams, split_sentences, word_tokens


def test_split_sentences_handles_abbreviations_and_initials():
    text = "Dr. Smith met J. K. Rowling in the U.S. yesterday. They talked, e.g. about books! Was it fun? Yes."
    assert split_sentences(text) == [
        "Dr. Smith met J. K. Rowling in the U.S. yesterday.",
        "They talked, e.g. about books!",
        "Was it fun?",
        "Yes.",
    ]


def test_split_sentences_on_blank_lines_and_tail():
    assert split_sentences("Title line\n\nFirst sentence. Second without stop") == [
        "Title line", "First sentence.", "Second without stop"]
    assert split_sentences("   ") == []


def test_tokens_and_ngrams():
    assert word_tokens("State-of-the-art results, aren't they?") == ["state-of-the-art", "results", "aren't", "they"]
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert ngrams(["a"], 2) == []
