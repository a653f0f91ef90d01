"""Tiny diffusers UNets for tests: a few ten thousand parameters, 16x16, random weights."""

import torch

SCHED = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1024, "beta_schedule": "squaredcos_cap_v2",
         "prediction_type": "v_prediction", "clip_sample": True}


def tiny_unet_args(size=16, num_class_embeds=None):
    return dict(sample_size=size, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                norm_num_groups=4, attention_head_dim=4, num_class_embeds=num_class_embeds)


def tiny_diffusion(steps=8, size=16, num_classes=None, guidance_scale=1.0, seed=0):
    from diffusers import UNet2DModel

    from kdgen.models.unet import DiffusionModel

    torch.manual_seed(seed)
    unet = UNet2DModel(**tiny_unet_args(size, num_classes + 1 if num_classes else None))
    extra = {"null_class": num_classes} if num_classes else None
    return DiffusionModel(unet, SCHED, steps=steps, guidance_scale=guidance_scale, num_classes=num_classes, extra=extra)
