"""Text helpers shared by generation and evaluation: sentences and words (`units`), and the claims a text makes
that a source can support or not (`claims`: entities, numbers, content words). Nothing here imports torch."""
