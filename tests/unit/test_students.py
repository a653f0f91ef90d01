import torch

from kdgen.metrics import count_params, macs_per_image
from kdgen.models import build_student, prune_init
from kdgen.models.loading import build_model
from kdgen.sampling import GeneratorSampler

ARGS = {"z_dim": 16, "image_size": 28, "channels": 1, "base_width": 16, "width": 1.0}


def _teacher():
    torch.manual_seed(0)
    t = build_model("dcgan-generator", ARGS).eval()
    t.kdgen_meta = {"family": "dcgan-generator", "args": ARGS}
    return t


def test_width_shrinks_params_and_macs_quadratically():
    t = _teacher()
    s, args = build_student(t, width=0.25, init="random")
    assert args["width"] == 0.25 and args["base_width"] == 16
    ratio = macs_per_image(GeneratorSampler(t, z_shape=16)) / macs_per_image(GeneratorSampler(s, z_shape=16))
    assert 10 < ratio < 16  # ~width^-2, less the first layer that scales with width only
    assert count_params(s) < count_params(t) / 4


def test_prune_keeps_the_largest_l1_channels():
    t = _teacher()
    s, _ = build_student(t, width=0.5, init="prune")
    w_t = t.blocks[0][0].weight  # ConvTranspose2d: [in, out, k, k]
    keep = torch.sort(torch.topk(w_t.abs().sum(dim=(0, 2, 3)), s.blocks[0][0].weight.shape[1]).indices).values
    assert torch.equal(s.blocks[0][0].weight, w_t[:, keep])
    assert torch.equal(s.blocks[0][1].running_var, t.blocks[0][1].running_var[keep])
    keep1 = torch.sort(torch.topk(t.blocks[1][0].weight[keep].abs().sum(dim=(0, 2, 3)), s.blocks[1][0].weight.shape[1]).indices).values
    assert torch.equal(s.blocks[1][0].weight, t.blocks[1][0].weight[keep][:, keep1])


def test_prune_at_full_width_reproduces_the_teacher():
    t = _teacher()
    s = build_model("dcgan-generator", ARGS).eval()
    prune_init(s, t)
    z = torch.randn(4, 16)
    assert torch.allclose(s(z), t(z))


def test_pruned_student_starts_closer_to_teacher_than_random():
    t = _teacher()
    z = torch.randn(64, 16)
    gap = {}
    for init in ("random", "prune"):
        s, _ = build_student(t, width=0.5, init=init, seed=1)
        gap[init] = (s.eval()(z) - t(z)).abs().mean().item()
    assert gap["prune"] < gap["random"]
