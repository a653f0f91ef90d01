"""`emoji`: a labelled RGB dataset built from a package on the npm registry, so nothing downloads at run time.

Source: npm `emoji-datasource-google` 16.0.0 (iamcal/emoji-data): Google's Noto Color Emoji images, Apache
License 2.0 (the package's README: "Android/Google/Noto images, are available under the Apache License 2.0";
the package's own code and data are MIT). It holds one 64x64 RGBA PNG per emoji and skin-tone variant, and
`emoji.json` gives each its Unicode category.

`kdgen data install emoji` (run by `make venv`) fetches the package tarball from the npm registry (or reads one
given with --from, e.g. made by `npm pack emoji-datasource-google@16.0.0`), checks its sha1 against the one the
registry publishes, and writes one npz into data.root:
    images [N, 64, 64, 3] uint8 (alpha composited over white), labels [N] (category index), groups [N]
    (the base emoji: a skin-tone variant shares its base's group), names [N].
Classes: the nine categories below ("Component", five skin-tone swatches and hair parts, is left out).
The held-out split is by group, so no emoji is in both splits as two skin tones: per category, a seeded
10% of the base emoji (numpy default_rng(0)) and all their variants are the test split.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import urllib.request
from hashlib import sha1
from pathlib import Path

import numpy as np
import torch

from ..errors import KdgenError
from ..io import atomic_write_bytes

log = logging.getLogger("kdgen")

PACKAGE, VERSION = "emoji-datasource-google", "16.0.0"
SHA1 = "a80ac3e8106cbd4d8648ce758aa099e8827b6157"  # the registry's dist.shasum for this version
TARBALL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"
LICENCE = "Apache-2.0 (Google Noto Color Emoji images); package data MIT (iamcal/emoji-data)"
CATEGORIES = ["Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places", "Activities",
              "Objects", "Symbols", "Flags"]
TEST_FRACTION, SPLIT_SEED = 0.1, 0
FILE = f"emoji-google-{VERSION}.npz"
DEFAULT_ROOT = "~/.cache/kdgen/datasets"  # data.root's default
INSTALL_HINT = "run `kdgen data install emoji` (it fetches the npm package emoji-datasource-google 16.0.0 from the npm registry)"


def cache_file(root: str | Path) -> Path:
    return Path(root).expanduser() / FILE


def install(root: str | Path, source: str | Path | None = None) -> Path:
    """Fetch (or read) the package tarball, check it, and write the dataset npz into `root`; returns its path."""
    if source is None:
        try:
            with urllib.request.urlopen(TARBALL, timeout=60) as r:
                blob = r.read()
        except OSError as e:
            raise KdgenError(f"could not fetch {TARBALL} ({type(e).__name__}); on a machine without the npm registry, run "
                             f"`npm pack {PACKAGE}@{VERSION}` elsewhere and give the file: kdgen data install emoji --from FILE.tgz") from None
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise KdgenError(f"--from '{path}' is not a file; give the .tgz that `npm pack {PACKAGE}@{VERSION}` writes")
        blob = path.read_bytes()
    digest = sha1(blob).hexdigest()
    if digest != SHA1:
        raise KdgenError(f"the tarball's sha1 is {digest}, not {SHA1} ({PACKAGE} {VERSION} as the npm registry publishes it); "
                         "it is another version or damaged - fetch it again")
    arrays = _build(blob)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    out = cache_file(root)
    atomic_write_bytes(out, buf.getvalue())
    log.info("wrote %s: %d images in %d classes", out, len(arrays["labels"]), len(CATEGORIES))
    return out


def _build(blob: bytes) -> dict[str, np.ndarray]:
    from PIL import Image

    table, pngs = None, {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r|gz") as tar:  # one pass: a gzip stream does not seek back cheaply
        for m in tar:
            if m.name == "package/emoji.json":
                table = json.load(tar.extractfile(m))
            elif m.name.startswith("package/img/google/64/") and m.isfile():
                pngs[Path(m.name).name] = tar.extractfile(m).read()
    if table is None:
        raise KdgenError(f"the tarball has no package/emoji.json; it is not {PACKAGE} {VERSION}")
    images, labels, groups, names = [], [], [], []
    for group, entry in enumerate(sorted(table, key=lambda e: e["sort_order"])):
        if entry["category"] not in CATEGORIES:
            continue
        variants = [entry] + sorted((entry.get("skin_variations") or {}).values(), key=lambda v: v["unified"])
        for v in variants:
            if not v.get("has_img_google") or v["image"] not in pngs:
                continue
            with Image.open(io.BytesIO(pngs[v["image"]])) as im:
                rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            images.append(np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8))
            labels.append(CATEGORIES.index(entry["category"]))
            groups.append(group)
            names.append(entry["short_name"])
    return {"images": np.stack(images), "labels": np.asarray(labels, dtype=np.int64), "groups": np.asarray(groups, dtype=np.int64),
            "names": np.asarray(names), "meta": np.asarray(json.dumps({"package": PACKAGE, "version": VERSION, "sha1": SHA1,
                                                                         "licence": LICENCE, "categories": CATEGORIES}))}


def test_mask(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """True for the held-out images: per category, a seeded TEST_FRACTION of the base emoji and all their variants."""
    rng = np.random.default_rng(SPLIT_SEED)
    test_groups: list[int] = []
    for c in range(len(CATEGORIES)):
        g = np.unique(groups[labels == c])
        test_groups += rng.permutation(g)[: max(1, round(len(g) * TEST_FRACTION))].tolist()
    return np.isin(groups, test_groups)


def arrays(split: str, root: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in [-1, 1] as [n, 3, 64, 64], labels) of the split."""
    path = cache_file(root)
    if not path.is_file():
        where = "" if str(root) == DEFAULT_ROOT else f" --root {root}"
        raise KdgenError(f"dataset 'emoji' is not installed in {path.parent}; {INSTALL_HINT.replace('emoji`', 'emoji' + where + '`')}")
    try:
        with np.load(path) as z:
            images, labels, groups = z["images"], z["labels"], z["groups"]
    except Exception:
        raise KdgenError(f"'{path}' is damaged; {INSTALL_HINT} again") from None
    mask = test_mask(labels, groups)
    mask = mask if split == "test" else ~mask
    x = torch.from_numpy(images[mask]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x.contiguous(), torch.from_numpy(labels[mask])
