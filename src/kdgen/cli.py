"""`kdgen` command line: parse, call the API, print. User errors end in one sentence and exit 2."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import KdgenError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="kdgen: distil image models into smaller students and prove the trade.")

OVERRIDES = typer.Argument(None, help="key=value overrides, e.g. train.steps=200 student.width=0.125", show_default=False)
RESUME = typer.Option(False, "--resume", help="continue from OUT/state/last.pt")
OVERWRITE = typer.Option(False, "--overwrite", help="replace the run already in OUT (without it, a folder that holds a run is refused)")


def _finish(result, title: str) -> None:
    if result.metrics.get("student"):
        typer.echo(f"\n{title}\n")
        typer.echo(result.table)
    typer.echo(f"\nrun folder: {result.out}")
    if (result.out / "report.html").exists():
        typer.echo(f"report: {result.out / 'report.html'}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="run folder"),
    overrides: Optional[List[str]] = OVERRIDES,
) -> None:
    """Distil the shipped MNIST GAN teacher into a width-0.25 pruned student, measure both, print the table."""
    from .api import distill

    result = distill(None, [f"out={out}", *(overrides or [])], overwrite=True)  # the demo's folder is its own: rerun, replace
    _finish(result, "teacher vs student (FID/KID in kdgen's mnist5k feature space, vs the 500 held-out test images)")


@app.command()
def distill(
    config: Path = typer.Argument(..., help="YAML recipe, e.g. configs/gan/mnist5k-demo.yaml"),
    overrides: Optional[List[str]] = OVERRIDES,
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
) -> None:
    """Distil a teacher into a student as the recipe says, then measure both."""
    from .api import distill as run

    _finish(run(config, overrides, resume=resume, overwrite=overwrite), "teacher vs student")


@app.command("train-teacher")
def train_teacher(config: Path = typer.Argument(..., help="YAML recipe with task: train-teacher"),
                  overrides: Optional[List[str]] = OVERRIDES, resume: bool = RESUME, overwrite: bool = OVERWRITE) -> None:
    """Train a teacher from scratch (GAN, diffusion model or classifier); writes OUT/teacher."""
    from .api import train_teacher as run

    result = run(config, overrides, resume=resume, overwrite=overwrite)
    scores = result.metrics.get("teacher") or {}
    tail = f", test accuracy {scores['accuracy']:.4f} ({scores['errors']} errors)" if "accuracy" in scores else ""
    typer.echo(f"teacher: {result.out / 'teacher'} ({result.train_seconds:.0f} s{tail})")


@app.command("train-features")
def train_features(config: Path = typer.Argument(..., help="YAML recipe with task: train-features"),
                   overrides: Optional[List[str]] = OVERRIDES, resume: bool = RESUME, overwrite: bool = OVERWRITE) -> None:
    """Train an evaluation feature network: a classifier on labelled images, SimCLR on unlabelled ones; prints how good it is."""
    from .api import train_features as run

    result = run(config, overrides, resume=resume, overwrite=overwrite)
    m = result.metrics
    if "test_accuracy" in m:
        typer.echo(f"feature net: {result.out / 'featnet'}  test accuracy {m['test_accuracy']:.4f}")
        return
    knn = f", k-NN accuracy {m['knn_accuracy']:.4f}" if "knn_accuracy" in m else ""
    typer.echo(f"feature net (SimCLR): {result.out / 'featnet'}  held-out pair accuracy {m['test_pair_accuracy']:.4f}{knn}")


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="a run folder written by kdgen distill, or one model folder (generator or classifier, or builtin:NAME)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="eval.* overrides, e.g. eval.num_samples=5000 eval.k=3", show_default=False),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="comma-separated evaluation seeds: every metric as mean +- std over them"),
    save_features: Optional[Path] = typer.Option(None, "--save-features", help="write real and generated feature matrices + seeds to this .npz"),
    inception_weights: Optional[Path] = typer.Option(None, "--inception-weights", help="measure in the standard FID Inception-v3 space, weights from this file (torch-fidelity weights-inception-2015-12-05-6726825d.pth)"),
    data: str = typer.Option("mnist5k", "--data", help="for a single model: the dataset whose test split it is measured on"),
    out: Optional[Path] = typer.Option(None, "--out", help="for a single model: where metrics.json goes (default runs/eval-NAME)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="for a single diffusion model: its sampling steps (default: the ones it records)"),
) -> None:
    """Re-measure a run's teacher and student (FID, KID, precision/recall/density/coverage, fidelity, cost), or one model."""
    from .api import evaluate as ev

    extra = list(overrides or [])
    if seeds:
        try:
            extra.append(f"eval.seeds=[{','.join(str(int(x)) for x in seeds.split(','))}]")
        except ValueError:
            raise KdgenError(f"--seeds must be comma-separated integers like 0,1,2, got '{seeds}'") from None
    if inception_weights:
        extra.append(f"eval.features=inception:{inception_weights}")
    result = ev(str(run), extra, save_features=save_features, data=data, out=out, steps=steps)
    if "model" in result.metrics:
        m = result.metrics["model"]
        keys = ("sampling_steps", "fid", "kid", "precision", "recall", "density", "coverage", "accuracy", "macro_f1", "errors", "params", "macs")
        for key in keys:
            if key in m:
                typer.echo(f"{key:10s} {m[key]:.4g}" if isinstance(m[key], float) else f"{key:10s} {m[key]:,}")
        typer.echo(f"latency    b1 {m['latency_ms']['b1']:.2f} ms, b64 {m['latency_ms']['b64']:.2f} ms")
        typer.echo(f"\nmetrics: {result.out / 'metrics.json'}")
        return
    _finish(result, "teacher vs student")


@app.command()
def report(run: Path = typer.Argument(..., help="a run folder")) -> None:
    """Rebuild RUN/report.html: metrics table, teacher | student samples, training curves, Pareto plot, protocol."""
    from .api import report as build

    typer.echo(f"report: {build(run)}")


@app.command()
def compare(
    runs: List[Path] = typer.Argument(..., help="run folders to put side by side"),
    out: Path = typer.Option(Path("runs/compare"), "--out", help="where compare.md, compare.csv and pareto.png go"),
    separate: bool = typer.Option(False, "--separate", help="runs measured in different feature spaces or references: a table and plot each"),
) -> None:
    """One table (markdown and CSV) of every run's teacher and student, and a Pareto plot (FID vs MACs and latency)."""
    from .api import compare as cmp

    result = cmp(runs, out, separate=separate)
    typer.echo(result["markdown"])
    typer.echo(f"\ntable: {out / 'compare.md'}, {result['csv']}\nplot: {result['pareto']}")


@app.command()
def sample(
    model: Optional[str] = typer.Argument(None, help="a model folder (kdgen or diffusers), a run folder's student, or builtin:NAME"),
    n: int = typer.Option(64, "-n", help="how many images"),
    steps: Optional[int] = typer.Option(None, "--steps", help="diffusion: sampling steps (default: the ones the model records)"),
    seed: int = typer.Option(0, "--seed", help="the noise seed (the same seed gives teacher and student the same noise)"),
    out: Path = typer.Option(Path("samples.png"), "--out", help="where the image grid goes"),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="sample an exported student in onnxruntime instead: RUN/export/student.onnx"),
) -> None:
    """Sample a generator or diffusion model into a PNG grid (or an exported student, with --onnx)."""
    from .api import sample as run_sample

    path = run_sample(model, n=n, steps=steps, seed=seed, out=out, onnx=onnx)
    typer.echo(f"{n} samples{' (onnxruntime)' if onnx else ''}: {path}")


@app.command()
def export(
    run: Path = typer.Argument(..., help="a run folder written by kdgen distill"),
    format: str = typer.Option("onnx", "--format", help="onnx or torchscript"),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8: also onnxruntime dynamic and static (calibrated) int8 graphs"),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default: the exporter's)"),
    calibration: int = typer.Option(256, "--calibration", help="int8 static: how many real inputs calibrate the activations"),
    no_quality: bool = typer.Option(False, "--no-quality", help="skip re-measuring FID/accuracy of every exported variant"),
    steps: Optional[int] = typer.Option(None, "--steps", help="diffusion: the step count the ONNX sampler runs (default: the recorded one)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="comma-separated evaluation seeds of the quality re-measure (default: the run's)"),
) -> None:
    """Export RUN/student into RUN/export/ (ONNX or TorchScript), prove parity with PyTorch, optionally int8; into metrics.json."""
    from .export import export as run_export
    from .report.tables import export_table

    try:
        seed_list = [int(x) for x in seeds.split(",")] if seeds else None
    except ValueError:
        raise KdgenError(f"--seeds must be comma-separated integers like 0,1,2, got '{seeds}'") from None
    block = run_export(run, format=format, quantize=quantize, opset=opset, calibration=calibration, measure_quality=not no_quality,
                       steps=steps, seeds=seed_list)
    typer.echo(export_table(block))
    typer.echo(f"\nfiles: {run / 'export'}\nmetrics: {run / 'metrics.json'} (export)")


@app.command("bench-latency")
def bench_latency(
    run: Path = typer.Argument(..., help="an exported run folder (kdgen export RUN first)"),
    repeats: int = typer.Option(20, "--repeats", help="timed repeats per row and batch size (median), after warm-up"),
) -> None:
    """Latency of the teacher (PyTorch eager) and the student (eager, TorchScript, onnxruntime fp32 / int8), batch 1 and 64."""
    from .export import bench_latency as bench
    from .report.tables import latency_table

    if repeats < 1:
        raise KdgenError(f"--repeats must be at least 1, got {repeats}")
    typer.echo(latency_table(bench(run, repeats=repeats)))
    typer.echo(f"\nmetrics: {run / 'metrics.json'} (latency)")


@app.command()
def video(
    run: Path = typer.Argument(..., help="an image-to-image run folder (kdgen distill wrote it)"),
    input: Path = typer.Argument(..., help="the video to run teacher and student over (.mp4, .mkv, .webm ...)"),
    out: Optional[Path] = typer.Option(None, "--out", help="the side-by-side video (default RUN/video/INPUT-RUNTIME.mp4)"),
    runtime: str = typer.Option("torch", "--runtime", help="torch | onnx | int8 (onnx and int8 need `kdgen export RUN` first)"),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="stop after this many frames"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads of torch and onnxruntime alike (default: torch's own)"),
) -> None:
    """Teacher and student over every frame of a video: input | teacher | student side by side, and each one's frames/s."""
    from .video import video as run_video

    r = run_video(run, input, out=out, runtime=runtime, max_frames=max_frames, threads=threads)
    typer.echo(f"| model | frames/s (batch 1, {r['runtime']}) | how frames of {r['model_input'][0]}x{r['model_input'][1]} ran |\n|---|---:|---|")
    for name in ("teacher", "student"):
        typer.echo(f"| {name} | {r['fps'][name]:.1f} | {r['mode'][name]} |")
    s = r["seconds"]
    typer.echo(f"\n{r['frames']} frames; student {r['student_vs_teacher_fps']:.1f}x the teacher's frames/s; decoding {s['decode']:.2f} s, "
               f"encoding {s['encode']:.2f} s (not in the frames/s)\nvideo: {r['output']}\nmetrics: {Path(run) / 'metrics.json'} (video)")


data_app = typer.Typer(no_args_is_help=True, help="Datasets built from installed packages.")
app.add_typer(data_app, name="data")


@data_app.command("install")
def data_install(
    name: str = typer.Argument(..., help="the dataset: emoji"),
    source: Optional[Path] = typer.Option(None, "--from", help="the package tarball (npm pack emoji-datasource-google@16.0.0) instead of the npm registry"),
    root: str = typer.Option("~/.cache/kdgen/datasets", "--root", help="where datasets live (data.root)"),
) -> None:
    """Build a dataset from its package once (emoji: npm emoji-datasource-google 16.0.0, Apache-2.0), so runs read it offline."""
    from .data import emoji

    if name != "emoji":
        raise KdgenError(f"unknown installable dataset '{name}'; the one kdgen installs is 'emoji' (mnist5k and digits ship with the Python packages)")
    typer.echo(f"dataset emoji: {emoji.install(root, source)}")


@app.command()
def methods() -> None:
    """List the registered distillation methods, one line each."""
    from .methods import METHODS

    for name in METHODS.names():
        typer.echo(f"{name:12s} {METHODS.summary(name)}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        app(standalone_mode=False)
    except KdgenError as e:
        typer.echo(f"error: {e.cli_message}", err=True)  # the flags as typed, not the Python parameter names
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; the last checkpoint in OUT/state is intact (continue with --resume)", err=True)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except OSError as e:  # a disk full, read-only or a folder in the way: a sentence (atomic writes left nothing half-written)
        from .errors import os_error_sentence

        typer.echo(f"error: {os_error_sentence(e)}", err=True)
        sys.exit(2)
    except Exception as e:
        usage, abort = _click_errors()
        if isinstance(e, usage):  # a usage error: the usage and one line, exit 2, no traceback
            e.show()
            sys.exit(2)
        if isinstance(e, abort):
            sys.exit(1)
        raise
    finally:
        _close_distributed()


def _close_distributed() -> None:
    """Destroy the process group of a torchrun run before the interpreter exits: gloo's worker threads, left joinable at
    exit, abort the process ("terminate called without an active exception", SIGABRT), pytorch/pytorch#190489."""
    dist = sys.modules.get("torch.distributed")  # never imported: no group to close (and `--help` stays fast)
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _click_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """Click's exception classes, typer's bundled copy first: typer 0.29 raises its own click's (`typer._click`), which
    `isinstance` against the separately installed click never matches."""
    import click

    usage, abort = [click.exceptions.ClickException], [click.exceptions.Abort]
    try:
        from typer._click.exceptions import ClickException

        usage.insert(0, ClickException)
    except ImportError:  # a typer that uses the installed click
        pass
    try:
        from typer.exceptions import Abort

        abort.insert(0, Abort)
    except ImportError:
        pass
    return tuple(usage), tuple(abort)


if __name__ == "__main__":
    main()
