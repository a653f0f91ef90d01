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


def _columns(w_s, w_t, dim):
    """Which teacher channel each student channel along `dim` is (asserting it is one)."""
    return [next(j for j in range(w_t.shape[dim]) if torch.equal(w_s.select(dim, i), w_t.select(dim, j))) for i in range(w_s.shape[dim])]


def test_prune_init_is_the_largest_l1_subnetwork_of_the_teacher():
    """torch-pruning (the path every user model takes) cuts the family's own narrower config out of the teacher."""
    t = _teacher()
    s, _ = build_student(t, width=0.5, init="prune")
    w_t = t.blocks[0][0].weight  # ConvTranspose2d: [in, out, k, k]
    keep = _columns(s.blocks[0][0].weight, w_t, 1)
    assert keep == sorted(keep) and len(keep) == w_t.shape[1] // 2
    assert torch.equal(s.blocks[0][1].running_var, t.blocks[0][1].running_var[keep])  # its norm follows
    dropped = [j for j in range(w_t.shape[1]) if j not in keep]
    l1 = w_t.abs().sum(dim=(0, 2, 3))
    assert l1[keep].mean() > l1[dropped].mean()
    w1 = t.blocks[1][0].weight[keep]  # the next layer's inputs are the kept channels
    keep1 = _columns(s.blocks[1][0].weight, w1, 1)
    assert torch.equal(s.blocks[1][0].weight, w1[:, keep1])


def test_prune_init_matches_the_family_config_at_any_width():
    """The family rounds its widths where torch-pruning would floor them: the student still has the config's shapes."""
    t = _teacher()
    z = torch.randn(16, 16)
    for width in (0.3, 0.2, 0.1):
        s, args = build_student(t, width=width, init="prune")
        fresh = build_model("dcgan-generator", args)
        assert {k: v.shape for k, v in s.state_dict().items()} == {k: v.shape for k, v in fresh.state_dict().items()}
        r, _ = build_student(t, width=width, init="random")
        with torch.no_grad():
            assert (s.eval()(z) - t(z)).abs().mean() < (r.eval()(z) - t(z)).abs().mean()


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
