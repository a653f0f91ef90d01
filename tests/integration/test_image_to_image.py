"""Image-to-image (issue 15, first slice): paired tasks made from any images, pix2pix U-Net / ResNet generator teachers
trained by L1 + a conditional PatchGAN, distilled into narrower students by the generator terms, measured by PSNR / SSIM
against the ground truth and the teacher, with the degraded input as the floor."""

import json

import pytest
import torch

import kdgen
from kdgen.data.paired import PairedTask, degrade, task_channels, with_input
from kdgen.errors import KdgenError
from kdgen.faces import face_of
from kdgen.models.loading import build_model

QUIET = ["train.checkpoint_every=100", "train.log_every=1", "train.sample_every=3", "data.batch_size=16", "eval.latency_repeats=2"]


def test_degradations_are_what_they_say_and_held_out_pairs_are_fixed():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    sr = degrade(x, "sr4")
    assert sr.shape == x.shape and torch.allclose(torch.nn.functional.avg_pool2d(sr, 4), torch.nn.functional.avg_pool2d(x, 4), atol=0.15)
    noisy = degrade(x, "denoise", noise_sigma=0.1, generator=torch.Generator().manual_seed(1))
    assert 0.08 < float((noisy - x).std()) < 0.12
    luma = degrade(x, "colorize")
    assert luma.shape == (4, 1, 32, 32) and torch.allclose(luma[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    assert task_channels("colorize", 3) == (1, 3)
    with pytest.raises(KdgenError, match="colorize needs colour images"):
        task_channels("colorize", 1)
    with pytest.raises(KdgenError, match="not divisible by 4"):
        degrade(torch.zeros(1, 1, 30, 30), "sr4")
    data = [{"image": img} for img in x]
    fixed = PairedTask(data, "denoise", seed=3, fixed=True)
    assert torch.equal(fixed[2]["input"], fixed[2]["input"]) and not torch.equal(fixed[2]["input"], fixed[1]["input"] - x[1] + x[2])
    fresh = PairedTask(data, "denoise", fixed=False)
    assert "input" not in fresh[2] and fresh.degradation == ("denoise", 0.2)  # training: the method degrades each batch
    batch = with_input({"image": x}, fresh.degradation)
    assert batch["input"].shape == x.shape and with_input(batch, fresh.degradation)["input"] is batch["input"]  # once per batch


SUBPIXEL_UNET = {"scale": 2, "levels": 2, "blocks": [1, 1], "up_blocks": [1]}


@pytest.mark.parametrize("family, args", [("pix2pix-unet", {"depth": 3, "dropout": 0.5}), ("resnet-generator", {"n_blocks": 2}),
                                          ("subpixel-unet", SUBPIXEL_UNET)])
def test_the_families_map_images_to_images_at_any_multiple_of_their_stride(family, args):
    net = build_model(family, {"in_channels": 1, "out_channels": 3, "image_size": 16, "base_width": 8, **args})
    assert face_of(net).kind == "image-to-image" and face_of(net).input_shape == (1, 16, 16) and face_of(net).channels == 3
    net.eval()
    for size in (16, 32):  # fully convolutional: a bigger frame goes through unchanged
        y = net(torch.zeros(2, 1, size, size))
        assert y.shape == (2, 3, size, size) and float(y.abs().max()) <= 1
    half = build_model(family, {"in_channels": 1, "out_channels": 3, "image_size": 16, "base_width": 8, "width": 0.5, **args})
    assert sum(p.numel() for p in half.parameters()) < 0.4 * sum(p.numel() for p in net.parameters())


def test_subpixel_net_starts_as_its_input_and_its_first_conv_is_pixel_unshuffle_then_a_3x3_conv():
    from kdgen.models.img2img import size_multiple

    net = build_model("subpixel-net", {"in_channels": 1, "out_channels": 3, "image_size": 16, "scale": 4, "base_width": 8, "depth": 3})
    net.kdgen_meta = {"family": "subpixel-net"}
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    assert torch.equal(net(x), x.repeat(1, 3, 1, 1))  # its last conv starts at zero: the grey input, before any training
    assert net(torch.zeros(1, 1, 32, 48)).shape == (1, 3, 32, 48) and size_multiple(net) == 4  # any multiple of its scale
    s, big = 4, net.body[0]  # 12x12, stride 4: read back as the 3x3 conv over the 16 unshuffled channels it equals
    small = torch.nn.Conv2d(s * s, big.out_channels, 3, 1, 1)
    with torch.no_grad():
        for i in range(s):
            for j in range(s):
                for dh in range(3):
                    for dw in range(3):
                        small.weight[:, i * s + j, dh, dw] = big.weight[:, 0, s * dh + i, s * dw + j]
        small.bias.copy_(big.bias)
        assert torch.allclose(big(x), small(torch.nn.functional.pixel_unshuffle(x, s)), atol=1e-5)
    with pytest.raises(KdgenError, match="not divisible by scale 3"):
        build_model("subpixel-net", {"in_channels": 1, "out_channels": 1, "image_size": 16, "scale": 3})
    with pytest.raises(KdgenError, match="not a multiple of in_channels"):
        build_model("subpixel-net", {"in_channels": 3, "out_channels": 1, "image_size": 16})


def test_a_user_module_states_its_image_to_image_face():
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.Tanh())
    face = kdgen.ImageToImage(conv, input_shape=(1, 16, 16)).face
    assert (face.kind, face.input_shape, face.image_shape) == ("image-to-image", (1, 16, 16), (3, 16, 16))
    with pytest.raises(KdgenError, match="must return images"):
        kdgen.ImageToImage(torch.nn.Flatten(), input_shape=(1, 16, 16))


@pytest.fixture(scope="module")
def sr_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("i2i") / "t"
    res = kdgen.train_teacher("configs/img2img/emoji-sr4-teacher.yaml", [
        f"out={out}", "data.name=digits", "data.image_size=16", "data.channels=1", "train.steps=6",
        "model.args={base_width: 8, depth: 3, dropout: 0.0}", *QUIET])
    return out, res


def test_train_teacher_learns_a_paired_task_and_measures_it(sr_teacher):
    out, res = sr_teacher
    m = res.metrics
    assert m["protocol"]["task"] == "sr4" and m["protocol"]["reference"] == "digits held-out split"
    assert 0 < m["teacher"]["psnr"] < 60 and 0 < m["input"]["psnr"] < 60 and -1 <= m["teacher"]["ssim"] <= 1
    teacher = kdgen.load_model(out / "teacher")
    assert face_of(teacher).kind == "image-to-image" and json.loads((out / "teacher" / "model.json").read_text())["task"]["task"] == "sr4"
    assert (out / "teacher" / "discriminator" / "model.json").is_file()  # the conditional PatchGAN, for the student's adversarial term
    assert (out / "samples" / "teacher.png").read_bytes()[:4] == b"\x89PNG"


def test_a_student_distilled_from_it_is_smaller_measured_and_reloads(sr_teacher, tmp_path):
    out, _ = sr_teacher
    res = kdgen.distill("configs/img2img/emoji-sr4.yaml", [
        f"teacher.path={out / 'teacher'}", f"out={tmp_path / 's'}", "data.name=digits", "data.image_size=16", "data.channels=1",
        "train.steps=4", "student.width=0.5", *QUIET])
    t, s = res.metrics["teacher"], res.metrics["student"]
    assert s["macs"] < 0.5 * t["macs"] and s["params"] < 0.5 * t["params"]
    assert set(s["vs_teacher"]) == {"psnr", "ssim"} and "psnr" in res.metrics["input"] and s["fid"] > 0 and t["fid"] > 0
    assert res.metrics["train"]["task"]["task"] == "sr4"
    assert "| PSNR vs ground truth (dB) |" in res.table and "the degraded input itself" in res.table
    student = kdgen.load_model(tmp_path / "s" / "student")
    assert face_of(student).kind == "image-to-image" and student(torch.zeros(1, 1, 16, 16)).shape == (1, 1, 16, 16)
    assert (tmp_path / "s" / "samples" / "teacher_vs_student.png").is_file()


def test_a_subpixel_unet_starts_as_its_input_runs_at_its_multiple_and_trains_by_l1_alone(tmp_path):
    """Its last conv starts at zero (the identity); H and W go by scale x 2^(levels-1); wrong block counts are sentences.
    Trained by L1 alone (adversarial_weight 0), no discriminator phase runs and none ships beside it."""
    from kdgen.models.img2img import size_multiple

    args = {"in_channels": 1, "out_channels": 3, "image_size": 16, "base_width": 4, "scale": 2, "levels": 3, "blocks": [1, 1, 2],
            "up_blocks": [1, 0]}
    net = build_model("subpixel-unet", args)
    net.kdgen_meta = {"family": "subpixel-unet"}
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    assert torch.equal(net(x), x.repeat(1, 3, 1, 1)) and size_multiple(net) == 8
    assert net(torch.zeros(1, 1, 24, 40)).shape == (1, 3, 24, 40)
    for bad, why in (({"blocks": [1, 1]}, "one count per level"), ({"up_blocks": [1, -1]}, "none negative"),
                     ({"image_size": 12}, "not divisible by scale x 2\\^\\(levels-1\\) = 8")):
        with pytest.raises(KdgenError, match=why):
            build_model("subpixel-unet", {**args, **bad})
    res = kdgen.train_teacher("configs/img2img/emoji-sr4-teacher.yaml", [
        f"out={tmp_path / 't'}", "data.name=digits", "data.image_size=16", "data.channels=1", "train.steps=3", "model.family=subpixel-unet",
        "model.args={scale: 2, levels: 2, blocks: [1, 1], up_blocks: [1], base_width: 4, adversarial_weight: 0}", *QUIET])
    assert res.metrics["teacher"]["psnr"] > 0 and not (tmp_path / "t" / "teacher" / "discriminator").exists()
    assert json.loads((tmp_path / "t" / "teacher" / "model.json").read_text())["family"] == "subpixel-unet"


def test_train_images_trains_on_a_seeded_few_and_measures_on_every_held_out_pair(tmp_path):
    base = [f"out={tmp_path / 't'}", "data.name=digits", "data.image_size=16", "data.channels=1", "train.steps=2", "model.family=subpixel-unet",
            "model.args={scale: 2, levels: 2, blocks: [1, 1], up_blocks: [1], base_width: 4, adversarial_weight: 0}", *QUIET]
    m = kdgen.train_teacher("configs/img2img/emoji-sr4-teacher.yaml", [*base, "data.train_images=7", "data.batch_size=4"]).metrics
    assert m["train"]["task"]["pairs"] == 7 and m["protocol"]["pairs"] > 7  # the held-out pairs stay whole
    with pytest.raises(KdgenError, match="data.train_images=100000 but the training split has"):
        kdgen.train_teacher("configs/img2img/emoji-sr4-teacher.yaml", [*base, "data.train_images=100000"])
    with pytest.raises(KdgenError, match="data.task is not set"):
        kdgen.train_teacher("configs/gan/mnist5k-teacher.yaml", [f"out={tmp_path / 'g'}", "data.train_images=7"])


def test_a_student_of_another_family_is_distilled_saved_exported_whole_and_refused_when_wrong(sr_teacher, tmp_path):
    """student.family: a subpixel-net student of the U-Net teacher, from random weights; it reloads as its family, and its
    graph has free H and W (its scale the multiple); a family that is not image-to-image, a given student beside it, or
    args that contradict the teacher's shape are sentences."""
    out, _ = sr_teacher
    base = [f"teacher.path={out / 'teacher'}", "data.name=digits", "data.image_size=16", "data.channels=1", *QUIET]
    res = kdgen.distill("configs/img2img/emoji-sr4-fast.yaml", [*base, f"out={tmp_path / 's'}", "train.steps=3", "student.family=subpixel-net",
                                                                "student.args={scale: 4, base_width: 8, depth: 3}"])
    meta = json.loads((tmp_path / "s" / "student" / "model.json").read_text())
    assert meta["family"] == "subpixel-net" and meta["args"]["in_channels"] == 1 and meta["args"]["base_width"] == 8
    assert res.metrics["student"]["macs"] < 0.3 * res.metrics["teacher"]["macs"] and res.metrics["student"]["psnr"] > 0
    ex = kdgen.export(tmp_path / "s", measure_quality=False)["onnx"]
    assert ex["free_size"] and ex["size_multiple"] == 4 and ex["parity"]["max_abs"] <= ex["parity"]["tolerance"]
    kdgen.distill("configs/img2img/emoji-sr4-fast.yaml", [*base, f"out={tmp_path / 'u'}", "train.steps=2", "eval.enabled=false",
                                                          "student.args={scale: 2, levels: 3, blocks: [1, 1, 1], up_blocks: [1, 0], base_width: 4}"])
    ex = kdgen.export(tmp_path / "u", measure_quality=False)["onnx"]  # the recipe's own family, subpixel-unet: 2 x 2^2
    assert ex["free_size"] and ex["size_multiple"] == 8 and ex["parity"]["max_abs"] <= ex["parity"]["tolerance"]
    for arg, why in (("student.family=mlp", "is not an image-to-image family"),
                     ("student.args.scale=3", "fix student.args"), ("student.width=0.5", "remove student.width"),
                     ("student.args.in_channels=3", "student.args.in_channels=3 but the teacher's is 1"),
                     ("student.class=torch.nn:Identity", "both name the student")):
        with pytest.raises(KdgenError, match=why):
            kdgen.distill("configs/img2img/emoji-sr4-fast.yaml", [*base, f"out={tmp_path / 'x'}", arg])
    with pytest.raises(KdgenError, match="student.args are the arguments of student.family or student.class"):
        kdgen.distill("configs/img2img/emoji-sr4.yaml", [*base, f"out={tmp_path / 'y'}", "student.args={width: 0.5}"])


def test_unpaired_inputs_distil_from_the_teachers_outputs_alone(sr_teacher, tmp_path, monkeypatch):
    """data.task=none: the inputs are the images themselves; the adversarial term's real images are the teacher's outputs."""
    from kdgen.methods.adversarial import AdversarialTerm

    out, _ = sr_teacher
    teacher = kdgen.load_model(out / "teacher")
    seen = []
    plain = AdversarialTerm.discriminator_loss

    def spy(self, real, fake, condition=None):
        seen.append((real.detach().clone(), condition.detach().clone()))
        return plain(self, real, fake, condition=condition)

    monkeypatch.setattr(AdversarialTerm, "discriminator_loss", spy)
    with pytest.raises(KdgenError, match="colorize needs colour images"):  # a task the grey teacher cannot take
        kdgen.distill("configs/img2img/emoji-sr4.yaml", [f"out={tmp_path / 'x'}", "data.name=digits", "data.task=colorize",
                                                         "train.steps=1"], teacher=teacher)
    res = kdgen.distill("configs/img2img/emoji-sr4.yaml", [f"out={tmp_path / 'u'}", "data.name=digits", "data.image_size=16",
                                                           "data.channels=1", "data.task=none", "train.steps=2", "eval.enabled=false",
                                                           *QUIET], teacher=teacher)
    assert res.metrics["train"]["task"]["task"] == "none" and len(seen) == 2  # one discriminator phase per step
    for real, condition in seen:  # its real images were the teacher's outputs for the inputs, not the inputs themselves
        with torch.no_grad():
            assert torch.allclose(real, teacher(condition), atol=1e-6) and not torch.allclose(real, condition, atol=1e-2)


def test_an_image_teacher_without_a_task_is_a_sentence(tmp_path):
    with pytest.raises(KdgenError, match="set data.task to sr4, denoise or colorize"):
        kdgen.train_teacher("configs/img2img/emoji-sr4-teacher.yaml", [f"out={tmp_path}", "data.task=null"])


def test_an_image_to_image_student_exports_with_parity_and_int8_psnr(sr_teacher, tmp_path):
    from kdgen.onnx_sampler import OnnxStudent

    out, _ = sr_teacher
    run = tmp_path / "s"
    kdgen.distill("configs/img2img/emoji-sr4.yaml", [f"teacher.path={out / 'teacher'}", f"out={run}", "data.name=digits",
                                                     "data.image_size=16", "data.channels=1", "train.steps=2", "eval.enabled=false", *QUIET])
    block = kdgen.export(run, quantize="int8", calibration=32)["onnx"]
    assert block["parity"]["max_abs"] <= block["parity"]["tolerance"] and set(block["int8"]) >= {"dynamic", "static"}
    q = block["quality"]
    assert set(q) == {"pytorch", "onnx_fp32", "int8_dynamic", "int8_static"} and abs(q["onnx_fp32"]["psnr_drop_db"]) < 0.01
    onnx = OnnxStudent(run / "export" / "student.onnx")
    x = torch.rand(3, 1, 16, 16).numpy() * 2 - 1
    with torch.no_grad():
        want = kdgen.load_model(run / "student")(torch.from_numpy(x)).numpy()
    assert abs(onnx.map(x) - want).max() < 1e-4


def _make_video(path, w, h, n):
    import av
    import numpy as np

    c = av.open(str(path), "w")
    s = c.add_stream("mpeg4", rate=10)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    for i in range(n):
        f = np.full((h, w, 3), 255, np.uint8)
        f[2:8, i % (w - 6): i % (w - 6) + 6] = (200, 30, 30)  # a square moving right
        for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def test_video_runs_teacher_and_student_over_every_frame_side_by_side(sr_teacher, tmp_path, monkeypatch, capsys):
    """A 22x14 video (not the 16 px training size, not a multiple of the U-Net's stride): sr4 makes 88x56 inputs, run fully
    convolutionally in torch and in onnxruntime (the graphs have free H and W; a fixed-size one is tiled); the output
    shows input | teacher | student for every frame."""
    import av
    from test_cli import run_cli

    out, _ = sr_teacher
    run = tmp_path / "s"
    kdgen.distill("configs/img2img/emoji-sr4.yaml", [f"teacher.path={out / 'teacher'}", f"out={run}", "data.name=digits",
                                                     "data.image_size=16", "data.channels=1", "train.steps=2", "eval.enabled=false", *QUIET])
    clip = tmp_path / "clip.mp4"
    _make_video(clip, 22, 14, 7)
    code, _, err = run_cli(monkeypatch, capsys, "video", str(run), str(clip), "--runtime", "onnx")
    assert code == 2 and "run `kdgen export" in err  # the student's graph first
    code, stdout, err = run_cli(monkeypatch, capsys, "video", str(run), str(clip), "--out", str(tmp_path / "side.mp4"))
    assert code == 0, err
    assert "| teacher |" in stdout and "fully convolutional" in stdout
    with av.open(str(tmp_path / "side.mp4")) as c:
        frames = list(c.decode(c.streams.video[0]))
    assert len(frames) == 7 and (frames[0].width, frames[0].height) == (3 * 88, 56)
    from kdgen.video import video

    kdgen.export(run, measure_quality=False)
    with pytest.raises(KdgenError, match="--quantize int8` first"):
        video(run, clip, runtime="int8")
    kdgen.export(run, quantize="int8", calibration=16, measure_quality=False)
    rec8 = video(run, clip, runtime="int8", max_frames=2)
    assert rec8["frames"] == 2 and rec8["mode"]["teacher"] == "fully convolutional" and min(rec8["fps"].values()) > 0
    assert (run / "video" / "teacher-graph" / "student.int8-static.onnx").is_file()  # both static (QDQ) int8, calibrated

    ex = json.loads((run / "metrics.json").read_text())["export"]["onnx"]
    assert ex["free_size"] and ex["parity"]["batches"]["b1@40px"]["max_abs"] < 1e-4  # checked at another size than 16
    monkeypatch.setattr("kdgen.video.CHUNK", 2)  # chunks of 2, 2 and 1 frames: every frame once, in order, none lost
    before = torch.get_num_threads()
    rec = video(run, clip, runtime="onnx", max_frames=5, out=tmp_path / "five.mp4", threads=before + 1)
    assert torch.get_num_threads() == before  # the call's own threads, given back after it
    with av.open(str(tmp_path / "five.mp4")) as c:
        panels = [f.to_ndarray(format="gray")[:, :88].astype(float) for f in c.decode(c.streams.video[0])]
    dark = [(255 - p).sum(0) for p in panels]  # the moving square in each frame's input panel: where its columns are
    xs = [float((d * range(88)).sum() / d.sum()) for d in dark]
    assert len(xs) == 5 and all(b - a > 2 for a, b in zip(xs, xs[1:])), xs  # it moves right 4 px a frame: frames in order
    assert rec["frames"] == 5 and rec["threads"] == before + 1 and rec["mode"] == {"teacher": "fully convolutional", "student": "fully convolutional"}
    assert rec["model_input"] == [56, 88] and rec["output_size"] == [56, 88] and min(rec["fps"].values()) > 0
    assert (run / "video" / "teacher-graph" / "student.onnx").is_file()  # the teacher's own graph, same runtime
    from kdgen.models.loading import load_model
    from kdgen.video import _Runner

    student, frame = load_model(run / "student"), torch.rand(1, 1, 56, 88) * 2 - 1
    whole = _Runner(student, "onnx", run / "export" / "student.onnx", True)(frame)
    assert torch.allclose(whole, _Runner(student, "torch", None, True)(frame), atol=1e-4)  # the same frame as PyTorch's
    assert _Runner(student, "onnx", run / "export" / "student.onnx", False).mode == "tiled 16x16"
    opts = _Runner(student, "onnx", run / "export" / "student.onnx", True, 2).session.get_session_options()
    assert opts.intra_op_num_threads == 2 and opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    m = json.loads((run / "metrics.json").read_text())["video"]
    assert set(m) == {"torch", "onnx", "int8"} and m["torch"]["frames"] == 7
    (tmp_path / "not.mp4").write_text("hello")
    with pytest.raises(KdgenError, match="is not a video PyAV can read"):
        video(run, tmp_path / "not.mp4")
    (run / "export" / "student.onnx").write_bytes(b"broken")  # a damaged export: a sentence, not protobuf's traceback
    with pytest.raises(KdgenError, match="is not a readable ONNX graph"):
        video(run, clip, runtime="onnx")


def test_tiling_stitches_back_exactly():
    from kdgen.video import tiled

    x = torch.randn(1, 2, 21, 35)
    assert torch.equal(tiled(lambda b: b * 2, x, 8), x * 2)


@pytest.mark.parametrize("family, args", [("pix2pix-unet", {"depth": 3}), ("resnet-generator", {"n_blocks": 2}),
                                          ("subpixel-unet", SUBPIXEL_UNET)])
def test_students_are_pruned_from_either_family(family, args, tmp_path):
    """torch-pruning derives the narrower student from the teacher's weights (InstanceNorms included)."""
    from kdgen.models.loading import load_model, save_model
    from kdgen.models.students import build_student

    full = {"in_channels": 1, "out_channels": 1, "image_size": 16, "base_width": 8, **args}
    teacher = load_model(save_model(build_model(family, full), tmp_path / "t", family=family, args=full))
    student, s_args = build_student(teacher, width=0.5, init="prune")
    assert s_args["width"] == 0.5 and student.eval()(torch.zeros(2, 1, 16, 16)).shape == (2, 1, 16, 16)
    first = next(n for n, p in student.named_parameters() if p.dim() == 4)
    kept = dict(student.named_parameters())[first]
    assert kept.shape[0] < dict(teacher.named_parameters())[first].shape[0]  # fewer output channels, taken from the teacher


def test_the_shipped_sr_teacher_beats_bicubic_on_held_out_emoji(tmp_path):
    """builtin:sr4-emoji, measured by a one-step distillation run's protocol on the 360 held-out pairs."""
    res = kdgen.distill("configs/img2img/emoji-sr4.yaml", [f"out={tmp_path}", "train.steps=1", "data.batch_size=16",
                                                           "eval.latency_repeats=2", "train.sample_every=10"])
    t, floor = res.metrics["teacher"], res.metrics["input"]
    assert res.metrics["protocol"]["reference_count"] == 360
    assert t["psnr"] > floor["psnr"] + 3 and t["ssim"] > floor["ssim"] + 0.1  # 23.1 dB vs the bicubic input's 18.9
    assert res.metrics["student"]["macs"] * 20 <= t["macs"]  # the recipe's student: 20x fewer MACs


def test_a_task_for_a_model_that_takes_no_images_is_a_sentence(tiny_teacher, tmp_path):
    from conftest import tiny_overrides

    with pytest.raises(KdgenError, match="data.task makes .* this teacher is a generator - remove data.task"):
        kdgen.distill("configs/gan/mnist5k-demo.yaml", tiny_overrides(tiny_teacher, tmp_path / "g", steps=1, **{"data.task": "sr4"}))
    with pytest.raises(KdgenError, match="a 'dcgan-generator' teacher does not take them"):
        kdgen.train_teacher("configs/gan/mnist5k-teacher.yaml", [f"out={tmp_path / 't'}", "data.task=denoise"])


def test_lpips_is_measured_from_a_backbone_weights_file(sr_teacher, tmp_path):
    """eval.lpips: FILE (a torchvision AlexNet state dict; here a seeded untrained one, as no ImageNet weights ship offline)
    adds LPIPS for teacher, student, student vs teacher and the input; the file's weights are the ones used."""
    import torchvision

    from kdgen.metrics.restoration import Lpips

    files = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        features = {k: v for k, v in torchvision.models.alexnet(weights=None).state_dict().items() if k.startswith("features.")}
        files[seed] = tmp_path / f"alexnet-{seed}.pth"
        torch.save(features, files[seed])
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    y = (x + 0.5 * torch.randn_like(x)).clamp(-1, 1)
    a, b = Lpips(str(files[0])), Lpips(str(files[1]))
    assert a(x, x) == 0 and a(x, y) > 0 and a(x, y) != b(x, y)  # the file's backbone, not a fixed or random one
    out, _ = sr_teacher
    res = kdgen.distill("configs/img2img/emoji-sr4.yaml", [
        f"teacher.path={out / 'teacher'}", f"out={tmp_path / 's'}", "data.name=digits", "data.image_size=16", "data.channels=1",
        "train.steps=2", "student.width=0.5", f"eval.lpips={files[0]}", *QUIET])
    m = res.metrics
    assert all(0 < m[k]["lpips"] < 2 for k in ("teacher", "student", "input")) and m["student"]["vs_teacher"]["lpips"] > 0
    assert m["protocol"]["lpips"]["backbone"] == "alexnet" and m["protocol"]["lpips"]["compared_at"] == "64 px (bilinear up from 16)"
    assert "| LPIPS vs ground truth |" in res.table
    again = kdgen.evaluate(tmp_path / "s", [f"eval.lpips={files[1]}"]).metrics  # a finished run, re-measured with another file
    assert again["student"]["psnr"] == m["student"]["psnr"] and again["student"]["lpips"] != m["student"]["lpips"]
    assert again["train"]["steps"] == 2  # what training recorded is kept
    t = kdgen.train_teacher("configs/img2img/emoji-sr4-teacher.yaml", [
        f"out={tmp_path / 't'}", "data.name=digits", "data.image_size=16", "data.channels=1", "train.steps=2",
        "model.args={base_width: 8, depth: 3, dropout: 0.0}", f"eval.lpips={files[0]}", *QUIET]).metrics
    assert t["teacher"]["lpips"] > 0 and t["input"]["lpips"] > 0 and t["protocol"]["lpips"]["sha256"] == m["protocol"]["lpips"]["sha256"]
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    for arg, pattern in ((f"eval.lpips={tmp_path / 'other.pth'}", "is not a torchvision AlexNet, VGG16 or SqueezeNet 1.1 state dict"),
                         (f"eval.lpips={tmp_path / 'gone.pth'}", "does not exist")):
        with pytest.raises(KdgenError, match=pattern):  # refused before any training
            kdgen.distill("configs/img2img/emoji-sr4.yaml", [f"teacher.path={out / 'teacher'}", f"out={tmp_path / 'x'}", arg,
                                                             "data.name=digits", "data.image_size=16", "data.channels=1"])
    assert not (tmp_path / "x" / "state").exists()


def test_lpips_on_a_model_without_image_outputs_is_a_sentence(tiny_teacher, tmp_path):
    from conftest import tiny_overrides

    with pytest.raises(KdgenError, match="eval.lpips measures image-to-image outputs"):
        kdgen.distill("configs/gan/mnist5k-demo.yaml", [*tiny_overrides(tiny_teacher, tmp_path, steps=1), "eval.lpips=x.pth"])


def test_the_truth_term_pulls_the_student_to_the_ground_truth(sr_teacher, tmp_path, tiny_teacher):
    """methods.truth: L1 to the paired task's target (GAN Compression's paired reconstruction), beside the teacher's terms;
    refused where there is no ground truth (data.task=none, or a noise -> image generator)."""
    from conftest import tiny_overrides

    from kdgen.methods import METHODS, TermContext

    out, _ = sr_teacher
    base = [f"teacher.path={out / 'teacher'}", "data.name=digits", "data.image_size=16", "data.channels=1", "train.steps=2",
            "eval.enabled=false", *QUIET]
    res = kdgen.distill("configs/img2img/emoji-sr4.yaml", [*base, f"out={tmp_path / 's'}",
                                                           "methods={output: {weight: 1.0}, truth: {weight: 0.5}}"])
    assert (tmp_path / "s" / "student" / "model.json").is_file() and res.metrics["train"]["steps"] == 2
    term = METHODS.get("truth")(METHODS.get("truth").Options(), TermContext(student=None, teacher=None, paired=True))
    from kdgen.methods.base import GenBatch

    y = torch.rand(2, 1, 8, 8)
    b = GenBatch(z=torch.zeros(2, 1, 8, 8), real=y, student_images=y + 0.25, teacher_images=y)
    assert abs(float(term.student_loss(b)) - 0.25) < 1e-6  # the distance to the ground truth, not to the teacher's image
    with pytest.raises(KdgenError, match="methods.truth pulls the student to a paired task's ground truth"):
        kdgen.distill("configs/img2img/emoji-sr4.yaml", [*base, f"out={tmp_path / 'u'}", "data.task=none", "methods={truth: {}}"])
    with pytest.raises(KdgenError, match="methods.truth pulls the student"):
        kdgen.distill("configs/gan/mnist5k-demo.yaml", [*tiny_overrides(tiny_teacher, tmp_path / "g", steps=1), "methods={truth: {}}"])
