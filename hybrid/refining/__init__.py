"""The refining stage, one module per step: the canvas and what to re-noise (canvas.py, grounded.py), the noise
schedule (schedule.py), the denoising loop (sampler.py), what each step
proposes from (proposal_scores.py) and its shortlist (shortlist.py), the drafter's verification
(verify.py) and grounded repair (grounded_repair.py); steps.py strings them together for the pipeline."""
