"""The drafting stage: the Drafter (drafter.py) writes the draft with any HF causal LM; the decode loop (plain or
speculative), its proposal sources (n-gram lookup, and the block drafter with its training), how the next token is
chosen and accepted, the repetition rules, and the lower layers' states that drafting records for the refiner live
beside it."""
