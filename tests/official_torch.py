"""The official Vim forward pass in PyTorch float64, written from the official model's definition.

What it reproduces is described in `docs/official_model.md`, from the official repository
(hustvl/Vim: `vim/models_mamba.py` and its bundled `mamba-1p1p1/mamba_ssm/modules/mamba_simple.py`).

An independent oracle for checkpoint parity: it reads official parameter names and layouts
(NCHW, Linear weight = [out, in]) and computes the way upstream does — flipping the sequence for
the backward direction and for bidirectional layers, a sequential scan, class tokens inserted by
concatenation. `random_official_state_dict` makes a state dict with upstream's names and shapes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from vim_jax.config import VimConfig

# The oracle runs many tiny ops; PyTorch's intra-op threads only add overhead to them.
torch.set_num_threads(1)


def _num_cls(cfg):
    return {"none": 0, "head_tail": 2}.get(cfg.cls_token, 1)


def random_official_state_dict(cfg: VimConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Official keys and shapes, values at the scale of trained weights (float32 numpy)."""
    rng = np.random.default_rng(seed)
    d, e, n, r, k = cfg.embed_dim, cfg.d_inner, cfg.d_state, cfg.dt_rank_, cfg.d_conv
    p = cfg.patch_size

    def normal(*shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    sd = {
        "patch_embed.proj.weight": normal(d, cfg.in_chans, p, p, std=1 / math.sqrt(3 * p * p)),
        "patch_embed.proj.bias": normal(d, std=0.02),
        "pos_embed": normal(1, cfg.seq_len, d, std=0.02),
        "norm_f.weight": (1 + normal(d, std=0.1)),
        "head.weight": normal(cfg.num_classes, d, std=0.02),
        "head.bias": normal(cfg.num_classes, std=0.02),
    }
    if cfg.norm == "layernorm":
        sd["norm_f.bias"] = normal(d, std=0.05)
    if cfg.cls_token == "head_tail":
        sd["cls_token_head"] = normal(1, 1, d, std=0.02)
        sd["cls_token_tail"] = normal(1, 1, d, std=0.02)
    elif cfg.cls_token != "none":
        sd["cls_token"] = normal(1, 1, d, std=0.02)
    suffixes = {"none": [""], "v1": [""], "v2": ["", "_b"]}[cfg.bimamba]
    for i in range(cfg.depth):
        m = f"layers.{i}.mixer."
        sd[f"layers.{i}.norm.weight"] = 1 + normal(d, std=0.1)
        if cfg.norm == "layernorm":
            sd[f"layers.{i}.norm.bias"] = normal(d, std=0.05)
        sd[m + "in_proj.weight"] = normal(2 * e, d, std=1 / math.sqrt(d))
        sd[m + "out_proj.weight"] = normal(d, e, std=0.5 / math.sqrt(e * cfg.depth))
        for s in suffixes:
            sd[m + f"conv1d{s}.weight"] = normal(e, 1, k, std=0.3)
            sd[m + f"conv1d{s}.bias"] = normal(e, std=0.1)
            sd[m + f"x_proj{s}.weight"] = normal(r + 2 * n, e, std=1 / math.sqrt(e))
            sd[m + f"dt_proj{s}.weight"] = normal(e, r, std=1 / math.sqrt(r))
            dt = np.exp(rng.uniform(math.log(1e-3), math.log(0.1), e))
            sd[m + f"dt_proj{s}.bias"] = (dt + np.log(-np.expm1(-dt))).astype(np.float32)
            sd[m + f"D{s}"] = 1 + normal(e, std=0.1)
        for s in (["", "_b"] if cfg.bimamba != "none" else [""]):
            a_log = np.log(np.arange(1, n + 1, dtype=np.float32))[None] + normal(e, n, std=0.1)
            sd[m + ("A_log" if s == "" else "A_b_log")] = a_log
        if cfg.layer_scale_init is not None:
            sd[m + "gamma"] = 1 + normal(d, std=0.1)
    return sd


def _norm(x, sd, prefix, cfg):
    if cfg.norm == "layernorm":
        return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"], eps=cfg.norm_eps)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.norm_eps) * sd[prefix + ".weight"]


def _rope_tables(cfg):
    """Upstream's VisionRotaryEmbeddingFast(dim=D/2, pt_seq_len=14, ft_seq_len=img//patch)."""
    dim, ft, pt = cfg.embed_dim // 2, cfg.img_size // cfg.patch_size, cfg.rope_pt_grid
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].double() / dim))
    freqs = torch.einsum("i,f->if", torch.arange(ft).double() / ft * pt, freqs).repeat_interleave(2, -1)
    grid = torch.cat([freqs[:, None, :].expand(ft, ft, dim), freqs[None, :, :].expand(ft, ft, dim)], -1)
    return grid.cos().reshape(-1, 2 * dim), grid.sin().reshape(-1, 2 * dim)


def _rope(t, tables):
    """Upstream applies it to tokens 1: when the length is odd (right for a head class token only)."""
    cos, sin = tables
    pairs = t.reshape(*t.shape[:-1], -1, 2)
    rot = torch.stack([-pairs[..., 1], pairs[..., 0]], -1).reshape(t.shape)
    if t.shape[1] % 2:
        return torch.cat([t[:, :1], t[:, 1:] * cos + rot[:, 1:] * sin], 1)
    return t * cos + rot * sin


def _ssm(u, delta, A, B, C, D, z):
    """u, delta, z: [b, l, e]; A: [e, n]; B, C: [b, l, n]. Sequential, first token to last."""
    h = torch.zeros(u.shape[0], u.shape[2], A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append(torch.einsum("ben,bn->be", h, C[:, t]))
    y = torch.stack(ys, 1) + D * u
    return y * F.silu(z)


def _conv(x, w, b):
    """Upstream's Conv1d(groups=E, padding=K-1) truncated to the first L outputs: causal."""
    L = x.shape[1]
    return F.conv1d(x.transpose(1, 2), w, b, padding=w.shape[-1] - 1, groups=w.shape[0])[..., :L].transpose(1, 2)


def _mixer(h, sd, i, cfg):
    m = f"layers.{i}.mixer."
    n, r = cfg.d_state, cfg.dt_rank_
    x, z = (h @ sd[m + "in_proj.weight"].T).chunk(2, dim=-1)

    def project(xc, s):
        p = xc @ sd[m + f"x_proj{s}.weight"].T
        dt, B, C = p[..., :r], p[..., r:r + n], p[..., r + n:]
        return F.softplus(dt @ sd[m + f"dt_proj{s}.weight"].T + sd[m + f"dt_proj{s}.bias"]), B, C

    def direction(x, z, s, a_key):
        xc = F.silu(_conv(x, sd[m + f"conv1d{s}.weight"], sd[m + f"conv1d{s}.bias"]))
        delta, B, C = project(xc, s)
        return _ssm(xc, delta, -torch.exp(sd[m + a_key]), B, C, sd[m + f"D{s}"], z)

    if cfg.bimamba == "v2":
        y = direction(x, z, "", "A_log") + direction(x.flip(1), z.flip(1), "_b", "A_b_log").flip(1)
        if cfg.divide_out:
            y = y / 2
    elif cfg.bimamba == "v1":
        xc = F.silu(_conv(x, sd[m + "conv1d.weight"], sd[m + "conv1d.bias"]))
        delta, B, C = project(xc, "")
        D = sd[m + "D"]
        y = _ssm(xc, delta, -torch.exp(sd[m + "A_log"]), B, C, D, z)
        y = y + _ssm(xc.flip(1), delta.flip(1), -torch.exp(sd[m + "A_b_log"]), B.flip(1), C.flip(1), D,
                     z.flip(1)).flip(1)
    else:
        y = direction(x, z, "", "A_log")
    out = y @ sd[m + "out_proj.weight"].T
    if cfg.layer_scale_init is not None:
        out = out * sd[m + "gamma"]
    return out


def official_logits(state_dict: dict[str, np.ndarray], cfg: VimConfig, images_nhwc: np.ndarray) -> np.ndarray:
    """Logits of the official model (float64) for channels-last images."""
    sd = {k: torch.as_tensor(np.asarray(v), dtype=torch.float64) for k, v in state_dict.items()}
    with torch.no_grad():
        img = torch.as_tensor(np.asarray(images_nhwc), dtype=torch.float64).permute(0, 3, 1, 2)
        x = F.conv2d(img, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=cfg.stride)
        x = x.flatten(2).transpose(1, 2)
        b, M, _ = x.shape
        if cfg.cls_token == "middle":
            x = torch.cat([x[:, :M // 2], sd["cls_token"].expand(b, -1, -1), x[:, M // 2:]], 1)
            positions = [M // 2]
        elif cfg.cls_token == "head":
            x = torch.cat([sd["cls_token"].expand(b, -1, -1), x], 1)
            positions = [0]
        elif cfg.cls_token == "head_tail":
            x = torch.cat([sd["cls_token_head"].expand(b, -1, -1), x, sd["cls_token_tail"].expand(b, -1, -1)], 1)
            positions = [0, M + 1]
        else:
            positions = []
        if cfg.abs_pos_embed:
            x = x + sd["pos_embed"]
        residual, hidden = None, x
        tables = _rope_tables(cfg) if cfg.rope else None

        def rope(hidden, residual):
            if tables is None:
                return hidden, residual
            if residual is not None and cfg.rope_residual:
                residual = _rope(residual, tables)
            return _rope(hidden, tables), residual

        if not cfg.bidirectional_layers:
            for i in range(cfg.depth):
                hidden, residual = rope(hidden, residual)
                residual = hidden if residual is None else residual + hidden
                hidden = _mixer(_norm(residual, sd, f"layers.{i}.norm", cfg), sd, i, cfg)
        else:
            for i in range(cfg.depth // 2):
                hidden, residual = rope(hidden, residual)
                res_f = hidden if residual is None else residual + hidden
                h_f = _mixer(_norm(res_f, sd, f"layers.{2 * i}.norm", cfg), sd, 2 * i, cfg)
                res_b = hidden.flip(1) if residual is None else residual.flip(1) + hidden.flip(1)
                h_b = _mixer(_norm(res_b, sd, f"layers.{2 * i + 1}.norm", cfg), sd, 2 * i + 1, cfg)
                hidden, residual = h_f + h_b.flip(1), res_f + res_b.flip(1)
        f = _norm(residual + hidden, sd, "norm_f", cfg)
        head = lambda t: t @ sd["head.weight"].T + sd["head.bias"]
        if cfg.pool == "token":
            logits = head(sum(f[:, p] for p in positions) / len(positions))
        elif cfg.pool == "mean":
            logits = head(f.mean(1))
        elif cfg.pool == "max":
            logits = head(f).max(1).values
        else:
            logits = head(f[:, -1])
    return logits.numpy()
