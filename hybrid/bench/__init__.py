"""`hybrid bench`: wall-clock of draft only, diffusion only and hybrid side by side (run.py), what one refine step and
one verify pass cost (step_costs.py), peak memory (memory.py), the report (report.py) and the drafting bench
(drafting.py)."""
