"""timm's DeiT (`VisionTransformer` as `deit_{tiny,small,base}_patch16_224` build it), transcribed
in PyTorch for the conversion tests, with timm's module names so that `state_dict()` has its keys.

Written from timm's `timm/models/vision_transformer.py` (`VisionTransformer`, `Block`), `deit.py`
and `timm/layers` (`Attention`, `Mlp`, `PatchEmbed`, `LayerNorm`): a Conv2d patch embedding with
stride = patch size, the class token concatenated before the position embedding is added (its row
is row 0), pre-norm blocks `x + attn(norm1(x))`, `x + mlp(norm2(x))` with a fused qkv Linear whose
output is read as `[3, heads, head_dim]`, exact GELU, LayerNorm eps 1e-6, the final norm on every
token and the class token's features to the head. Inputs are NCHW, as in timm.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

EPS = 1e-6  # timm's LayerNorm default, which its ViT uses


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) * self.head_dim ** -0.5, dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=EPS), Attention(dim, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=EPS), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TimmDeiT(nn.Module):
    """timm's DeiT at `img_size`; `pos_embed` has one row per patch of that grid plus the class row."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=192, depth=12,
                 num_heads=3, mlp_ratio=4.0):
        super().__init__()
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=EPS)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, images):
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Weights far from the init (whose tiny weights would hide layout mistakes): normal with a
    scale that keeps every block's activations of order one; norms around 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.dtype)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            elif name.endswith("weight") and p.ndim >= 2:
                p.copy_(noise / np.sqrt(p[0].numel()))
            else:
                p.copy_(0.1 * noise if name.endswith("bias") else noise)
    return model


def state_dict_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state dict as float32 numpy arrays (what a `.pth` of it holds)."""
    return {k: v.detach().to(torch.float32).numpy().copy() for k, v in model.state_dict().items()}
