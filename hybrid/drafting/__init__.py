"""The drafting stage's parts: the decode loop (plain or speculative), proposal sources, how the next token is chosen
and accepted, the repetition rules, and the drafting bench. The Drafter itself is hybrid.draft.Drafter."""
