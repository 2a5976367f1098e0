"""The `hybrid eval` run: suite (YAML + examples), systems (what is compared), runner (generation), scoring,
report (JSON, Markdown, plot), evaluate_suite (the whole run) and validate (do the metrics measure what they claim).
"""
