"""Device choice: a clear error for an unusable device, and the whole pipeline on a GPU where there is one."""

import pytest
import torch
from click.testing import CliRunner

from hybrid.cli import cli
from hybrid.errors import HybridError
from hybrid.models import resolve_device

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(HybridError, match="unknown device"):
        resolve_device("gpu0")
    with pytest.raises(HybridError, match="not supported"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_is_one_clear_line(tiny_model_dir):
    with pytest.raises(HybridError, match="no CUDA GPU"):
        resolve_device("cuda")
    result = CliRunner().invoke(cli, ["generate", "Hello", "--draft-model", str(tiny_model_dir), "--refine-steps", "0", "--device", "cuda"])
    assert result.exit_code != 0 and "no CUDA GPU" in result.output and "Traceback" not in result.output


def test_bench_refuses_an_unknown_device_before_loading():
    result = CliRunner().invoke(cli, ["bench", "--device", "tpu7", "--no-memory"])
    assert result.exit_code != 0 and "unknown device" in result.output


@needs_gpu
def test_pipeline_runs_on_the_gpu(tiny_model_dir, tiny_refiner_dir):
    from hybrid.pipeline import HybridPipeline

    pipe = HybridPipeline.from_pretrained(draft_model=str(tiny_model_dir), refiner=str(tiny_refiner_dir), device="cuda")
    assert pipe.drafter.model.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in pipe.refiner.parameters())
    for mode in ("hybrid", "diffusion"):
        results = pipe(["The history of Rome", "Why is the sky blue?"], max_new_tokens=12, refine_steps=4, mode=mode, seed=0, ignore_eos=True)
        assert len(results) == 2 and all(r.steps_run >= 1 for r in results)
    sampled = pipe("The history of Rome", max_new_tokens=12, refine_steps=4, temperature=0.8, seed=1, ignore_eos=True)
    assert len(sampled.token_ids) > 0


@needs_gpu
def test_bench_times_on_the_gpu(tiny_model_dir, tiny_refiner_dir):
    from hybrid.bench.run import BenchConfig, run_bench

    config = BenchConfig(lengths=[8], steps=[2], dtypes=["float32"], repeats=1, draft_model=str(tiny_model_dir),
                         refiner=str(tiny_refiner_dir), device="cuda")
    report = run_bench(config)
    assert report.machine["device"] != "cpu" and report.peak_gpu_mb > 0 and report.peak_rss_mb is None
    assert all(t.seconds > 0 for t in report.timings)
