"""Image-to-image generators and their conditional discriminator: the families of pix2pix and GAN Compression.

    pix2pix-unet        Isola et al. (2017): an encoder-decoder with skip connections (U-Net), 4x4 stride-2 convs,
                        BatchNorm, LeakyReLU down / ReLU up, dropout in the innermost decoder stages, tanh out
    resnet-generator    Johnson et al. (2016) / CycleGAN / GAN Compression: 7x7 conv, two stride-2 downsamplings,
                        residual blocks, two upsamplings, 7x7 conv, tanh; InstanceNorm
    subpixel-net        a fast student for video (after ESPCN, Shi et al. 2016): the frame folded into s x s blocks
                        (pixel unshuffle), a few 3x3 convs at 1/s of its resolution, unfolded back (pixel shuffle) and
                        added to the input: it learns the correction, at a fraction of the per-pixel work
    subpixel-unet       the same fold and unfold around a small U-Net at 1/s of the resolution (channels doubling as it
                        halves): most of its weights sit where pixels are few, so it holds more per MAC
    patchgan-discriminator   a conditional PatchGAN on (input, output) pairs: one logit per patch (Isola et al. 2017)

The generators map an image [n, in_channels, H, W] in [-1, 1] to an image [n, out_channels, H, W] in [-1, 1]. They are
fully convolutional: any H and W divisible by 2**depth (U-Net), by 4 (ResNet), by `scale` (subpixel-net) or by
scale x 2^(levels-1) (subpixel-unet). They name their stages so feature taps and pruning can address them: `down.N` /
`up.N` (U-Net), `down.N`, `blocks.N`, `up.N` (ResNet), `body.N` (subpixel-net) and `head`, `down.N`, `up.N`, `tail`
(subpixel-unet). `width` scales every channel count, as in the other families. Activations are not in place: a U-Net's
skip keeps the encoder's tensor as it was, and torch-pruning traces an InstanceNorm only when the op after it leaves its
output alone.
"""

from __future__ import annotations

import torch
from torch import nn

from .gan import check_positive
from .registry import MODEL_FAMILIES

IMAGE_TO_IMAGE_FAMILIES = ("pix2pix-unet", "resnet-generator", "subpixel-net", "subpixel-unet")


def size_multiple(model: nn.Module) -> int | None:
    """What H and W must be a multiple of for a kdgen image-to-image family to run on any frame size (it is fully
    convolutional); None: a model kdgen does not know to be (a user's own), which runs at its training size only."""
    family = (getattr(model, "kdgen_meta", None) or {}).get("family")
    if family == "pix2pix-unet":
        return 2 ** int(model.depth)
    if family == "resnet-generator":
        return 4
    if family == "subpixel-net":
        return int(model.scale)
    if family == "subpixel-unet":
        return int(model.multiple)
    return None


def _ch(base: int, width: float, mult: int) -> int:
    return max(1, int(round(base * width * mult)))


@MODEL_FAMILIES.register("pix2pix-unet")
class UNetGenerator(nn.Module):
    """pix2pix's U-Net: `depth` stride-2 downsamplings (channels base, 2 base, 4 base, 8 base, 8 base ...), mirrored up with
    the encoder's activations concatenated at each resolution."""

    face_kind = "image-to-image"

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, image_size: int = 32, base_width: int = 64, depth: int = 4,
                 width: float = 1.0, dropout: float = 0.5):
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels, image_size=image_size, base_width=base_width, depth=depth,
                       width=width)
        if image_size % 2**depth:
            raise ValueError(f"image_size {image_size} is not divisible by 2**depth = {2**depth}; lower depth or pad the images")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels, self.out_channels, self.image_size, self.depth = in_channels, out_channels, image_size, depth
        chans = [_ch(base_width, width, min(2**i, 8)) for i in range(depth)]
        self.down = nn.ModuleList()
        prev = in_channels
        for i, c in enumerate(chans):
            norm = nn.Identity() if i in (0, depth - 1) else nn.BatchNorm2d(c)  # none on the outermost and the innermost
            act = nn.Identity() if i == 0 else nn.LeakyReLU(0.2)
            self.down.append(nn.Sequential(act, nn.Conv2d(prev, c, 4, 2, 1, bias=i in (0, depth - 1)), norm))
            prev = c
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            c_in = chans[i] if i == depth - 1 else chans[i] * 2  # the innermost takes the bottleneck alone, the rest a concat
            if i == 0:
                self.up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(c_in, out_channels, 4, 2, 1), nn.Tanh()))
            else:
                c_out = chans[i - 1]
                # pix2pix's dropout: the 8x-wide decoder stages below the innermost, at most three (none when depth < 6)
                drop = nn.Dropout(dropout) if dropout and 4 <= i and depth - 4 <= i <= depth - 2 else nn.Identity()
                self.up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), drop))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.up[0](skips[-1])
        for block, skip in zip(self.up[1:], reversed(skips[:-1])):
            x = block(torch.cat([x, skip], 1))
        return x


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), nn.InstanceNorm2d(channels, affine=True), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@MODEL_FAMILIES.register("resnet-generator")
class ResnetGenerator(nn.Module):
    """The CycleGAN / GAN Compression ResNet generator: 7x7 stem, 2 downsamplings, `n_blocks` residual blocks, 2 up."""

    face_kind = "image-to-image"

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, image_size: int = 32, base_width: int = 64, n_blocks: int = 6,
                 width: float = 1.0):
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels, image_size=image_size, base_width=base_width, n_blocks=n_blocks,
                       width=width)
        if image_size % 4:
            raise ValueError(f"image_size {image_size} is not divisible by 4 (two stride-2 downsamplings); pad the images")
        self.in_channels, self.out_channels, self.image_size = in_channels, out_channels, image_size
        c = [_ch(base_width, width, m) for m in (1, 2, 4)]
        norm = lambda n: nn.InstanceNorm2d(n, affine=True)  # noqa: E731
        self.stem = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_channels, c[0], 7, bias=False), norm(c[0]), nn.ReLU())
        self.down = nn.Sequential(*[nn.Sequential(nn.Conv2d(c[i], c[i + 1], 3, 2, 1, bias=False), norm(c[i + 1]), nn.ReLU())
                                    for i in range(2)])
        self.blocks = nn.Sequential(*[ResidualBlock(c[2]) for _ in range(n_blocks)])
        self.up = nn.Sequential(*[nn.Sequential(nn.ConvTranspose2d(c[i + 1], c[i], 3, 2, 1, output_padding=1, bias=False), norm(c[i]),
                                                nn.ReLU()) for i in (1, 0)])
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(c[0], out_channels, 7), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.up(self.blocks(self.down(self.stem(x)))))


def _check_addable(in_channels: int, out_channels: int) -> None:
    if out_channels % in_channels:
        raise ValueError(f"out_channels {out_channels} is not a multiple of in_channels {in_channels}: the input cannot be added")


def _zero(conv: nn.Conv2d) -> None:
    """The last conv of a residual student starts at zero: the net is the identity (its input) before any training."""
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)


def _plus_input(x: torch.Tensor, correction: torch.Tensor) -> torch.Tensor:
    """The input (repeated to the correction's channels when it has fewer) plus the correction, clamped to [-1, 1]."""
    base = x if x.shape[1] == correction.shape[1] else x.repeat(1, correction.shape[1] // x.shape[1], 1, 1)
    return (base + correction).clamp(-1, 1)


@MODEL_FAMILIES.register("subpixel-net")
class SubpixelNet(nn.Module):
    """`depth` convs of base_width x width channels at 1/scale of the resolution (ReLU between), pixel shuffle back up, plus
    the input (repeated to out_channels when it has fewer), clamped to [-1, 1]. The first conv is a 3 scale x 3 scale one
    of stride `scale`: the same map as pixel unshuffle and a 3x3 conv (one op instead of a 6-d transpose, which
    onnxruntime runs slowly). Its convs never see the full resolution: ~depth x channels^2 x 9 / scale^2 MACs a pixel."""

    face_kind = "image-to-image"

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, image_size: int = 32, scale: int = 4, base_width: int = 32,
                 depth: int = 3, width: float = 1.0):
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels, image_size=image_size, scale=scale, base_width=base_width,
                       depth=depth, width=width)
        if image_size % scale:
            raise ValueError(f"image_size {image_size} is not divisible by scale {scale}; pick a scale that divides it")
        if depth < 2:
            raise ValueError(f"depth must be at least 2 (one conv in, one out), got {depth}")
        _check_addable(in_channels, out_channels)
        self.in_channels, self.out_channels, self.image_size, self.scale = in_channels, out_channels, image_size, scale
        c = _ch(base_width, width, 1)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3 * scale, scale, scale), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(c, c, 3, 1, 1), nn.ReLU()]
        layers += [nn.Conv2d(c, out_channels * scale**2, 3, 1, 1), nn.PixelShuffle(scale)]
        self.body = nn.Sequential(*layers)
        _zero(self.body[-2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _plus_input(x, self.body(x))


def _convs(c: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[m for _ in range(n) for m in (nn.Conv2d(c, c, 3, 1, 1), nn.ReLU())])


@MODEL_FAMILIES.register("subpixel-unet")
class SubpixelUNet(nn.Module):
    """A small U-Net run wholly at 1/scale of the resolution: subpixel-net's fold and unfold around an encoder-decoder.
    In: one scale x scale conv of stride scale (pixel unshuffle and a 1x1 conv) to base_width channels. Then `levels`
    levels, each half the resolution and twice the channels of the one above (a 2x2 stride-2 conv down, a 2x2 transposed
    conv up, the skip added): blocks[i] 3x3 convs at level i on the way down (the last entry is the bottom's),
    up_blocks[i] on the way back up. Out: a 1x1 conv to out_channels x scale^2, pixel shuffle, plus the input, clamped
    to [-1, 1]. A 3x3 conv costs the same MACs at every level (a quarter of the pixels, four times the weights), so
    the deeper levels hold most of its parameters for few of its MACs; its last conv starts at zero (the identity)."""

    face_kind = "image-to-image"

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, image_size: int = 32, scale: int = 4, base_width: int = 16,
                 levels: int = 3, blocks: tuple[int, ...] | list[int] = (1, 1, 1), up_blocks: tuple[int, ...] | list[int] = (1, 0),
                 width: float = 1.0):
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels, image_size=image_size, scale=scale, base_width=base_width,
                       levels=levels, width=width)
        blocks, up_blocks = [int(b) for b in blocks], [int(b) for b in up_blocks]
        if len(blocks) != levels or len(up_blocks) != levels - 1 or min(blocks + up_blocks, default=0) < 0:
            raise ValueError(f"blocks needs one count per level ({levels}) and up_blocks one per level above the bottom "
                             f"({levels - 1}), none negative; got blocks={blocks}, up_blocks={up_blocks}")
        self.multiple = scale * 2 ** (levels - 1)
        if image_size % self.multiple:
            raise ValueError(f"image_size {image_size} is not divisible by scale x 2^(levels-1) = {self.multiple}; "
                             "pick a smaller scale or fewer levels")
        _check_addable(in_channels, out_channels)
        self.in_channels, self.out_channels, self.image_size, self.scale, self.levels = in_channels, out_channels, image_size, scale, levels
        c = [_ch(base_width, width, 2**i) for i in range(levels)]
        self.head = nn.Sequential(nn.Conv2d(in_channels, c[0], scale, scale), nn.ReLU())
        self.down = nn.ModuleList(_convs(c[i], blocks[i]) for i in range(levels))
        self.pool = nn.ModuleList(nn.Sequential(nn.Conv2d(c[i], c[i + 1], 2, 2), nn.ReLU()) for i in range(levels - 1))
        self.unpool = nn.ModuleList(nn.Sequential(nn.ConvTranspose2d(c[i + 1], c[i], 2, 2), nn.ReLU()) for i in range(levels - 1))
        self.up = nn.ModuleList(_convs(c[i], up_blocks[i]) for i in range(levels - 1))
        self.tail = nn.Conv2d(c[0], out_channels * scale**2, 1)
        self.shuffle = nn.PixelShuffle(scale)
        _zero(self.tail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, skips = self.head(x), []
        for i in range(self.levels):
            h = self.down[i](h)
            if i + 1 < self.levels:
                skips.append(h)
                h = self.pool[i](h)
        for i in reversed(range(self.levels - 1)):
            h = self.up[i](self.unpool[i](h) + skips[i])
        return _plus_input(x, self.shuffle(self.tail(h)))


@MODEL_FAMILIES.register("patchgan-discriminator")
class PatchDiscriminator(nn.Module):
    """A conditional PatchGAN: (input, output) concatenated on channels -> a grid of real/fake logits, one per patch.
    `n_layers` stride-2 convs (3 gives pix2pix's 70x70 receptive field; 2 suits 32 px images)."""

    def __init__(self, *, in_channels: int = 6, base_width: int = 64, n_layers: int = 2, width: float = 1.0):
        super().__init__()
        check_positive(in_channels=in_channels, base_width=base_width, n_layers=n_layers, width=width)
        self.in_channels = in_channels
        c = [_ch(base_width, width, min(2**i, 8)) for i in range(n_layers + 1)]
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, c[0], 4, 2, 1), nn.LeakyReLU(0.2))]
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            layers.append(nn.Sequential(nn.Conv2d(c[i - 1], c[i], 4, stride, 1, bias=False), nn.BatchNorm2d(c[i]), nn.LeakyReLU(0.2)))
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Conv2d(c[-1], 1, 4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))
