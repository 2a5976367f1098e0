"""`hybrid eval`: metrics/ (what each score measures) and harness/ (suites, systems, the run, scoring, the report,
the metric validations). The consistency classifier is its own package, hybrid.consistency.
"""
