"""Distillation losses as pure functions of tensors. Each docstring gives the formula and source."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def output_distance(student: torch.Tensor, teacher: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean pixel distance between student and teacher images for the same latent.

    l1: mean |s - t|;  l2: mean (s - t)^2.  [n, C, H, W] x2 -> scalar.
    The output term of GAN Compression (Li et al. 2020) and TinyGAN (Chang & Lu 2020).
    """
    if kind == "l1":
        return (student - teacher).abs().mean()
    if kind == "l2":
        return (student - teacher).pow(2).mean()
    raise ValueError(f"distance must be 'l1' or 'l2', got {kind!r}")


def feature_mse(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Mean squared error between (adapted) student features and teacher features: mean (f_s - f_t)^2.

    Same shapes required, e.g. [n, C, H, W]. FitNets hints (Romero et al. 2015); GAN Compression
    applies it to generator activations after a learnable 1x1 conv adapter.
    """
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(f"feature shapes differ: student {tuple(student_feat.shape)} vs teacher {tuple(teacher_feat.shape)}")
    return F.mse_loss(student_feat, teacher_feat)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge discriminator loss: mean relu(1 - D(x)) + mean relu(1 + D(G(z))) (Lim & Ye 2017; Miyato et al. 2018)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss: -mean D(G(z))."""
    return -fake_logits.mean()
