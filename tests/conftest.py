import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One torch thread: the tests' ops are tiny, and two threads on a core that another job is using made the
# suite ~10x slower (measured: one diffusion test 19 s at 1 thread vs 137 s at 2). KDGEN_TEST_THREADS overrides.
os.environ["OMP_NUM_THREADS"] = os.environ.get("KDGEN_TEST_THREADS") or "1"  # what train.threads=auto reads, in-process too
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
    """A small random DCGAN teacher (base width 8) saved as a kdgen folder with its discriminator."""
    from kdgen.models.loading import build_model, save_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("teacher") / "teacher"
    args = {"z_dim": 16, "image_size": 28, "channels": 1, "base_width": 8, "width": 1.0}
    g = build_model("dcgan-generator", args)
    save_model(g, folder, family="dcgan-generator", args=args)
    d_args = {"image_size": 28, "channels": 1, "base_width": 8, "width": 1.0}
    save_model(build_model("dcgan-discriminator", d_args), folder / "discriminator", family="dcgan-discriminator", args=d_args)
    return folder


def tiny_overrides(teacher, out, steps=3, **extra):
    """key=value overrides that make a distill run take seconds."""
    items = {
        "teacher.path": str(teacher), "out": str(out), "train.steps": steps, "train.checkpoint_every": 2,
        "train.log_every": 1, "train.sample_every": 2, "data.batch_size": 16, "eval.num_samples": 64,
        "eval.batch_size": 64, "eval.latency_repeats": 2, **extra,
    }
    return [f"{k}={v}" for k, v in items.items()]
