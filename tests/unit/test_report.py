import torch
from PIL import Image

from kdgen.report import format_table, save_side_by_side


def test_table_shows_values_and_ratios():
    m = {"teacher": {"fid": 10.0, "kid": 0.002, "params": 1000, "macs": 4000, "latency_ms": {"b1": 2.0, "b64": 8.0}, "file_bytes": 2048},
         "student": {"fid": 12.0, "kid": 0.003, "params": 250, "macs": 250, "latency_ms": {"b1": 1.0, "b64": 2.0}, "file_bytes": 1024,
                     "fidelity": {"psnr_db": 21.5}}}
    table = format_table(m)
    assert "| FID | 10.00 | 12.00 | 1.200x |" in table
    assert "| MACs / image | 4,000 | 250 | 0.062x |" in table
    assert "| KID x1000 | 2.00 | 3.00 | 1.500x |" in table
    assert "21.50" in table


def test_side_by_side_is_two_grids_wide(tmp_path):
    a, b = -torch.ones(4, 1, 8, 8), torch.ones(4, 1, 8, 8)
    path = save_side_by_side({"teacher": a, "student": b}, tmp_path / "x.png", nrow=2)
    im = Image.open(path).convert("L")
    assert im.width == 2 * 22 + 12 and im.height == 22
    assert im.getpixel((5, 5)) == 0 and im.getpixel((22 + 12 + 5, 5)) == 255
