"""An independent, functional re-statement of the public reference network, written from SPEC.md.

It runs straight off a state dict with plain torch.nn.functional calls (no colorizer modules), in
the reference's order of random draws, so tests can check that our modules give the reference's
outputs for the same weights and noise.
"""

import torch
import torch.nn.functional as F


def ws(w, eps=1e-5):
    m = w.mean(dim=(1, 2, 3), keepdim=True)
    w = w - m
    std = w.reshape(w.shape[0], -1).std(dim=1).reshape(-1, 1, 1, 1) + eps
    return w / std


def conv(sd, key, x, padding=0, bias=False):
    b = sd[key + ".bias"] if bias else None
    return F.conv2d(x, ws(sd[key + ".weight"]), b, padding=padding)


def gn(sd, key, x):
    return F.group_norm(x, 32, sd[key + ".weight"], sd[key + ".bias"], 1e-5)


def block(sd, key, x, sample):
    ic = x.shape[1]
    oc = sd[key + ".conv1.weight"].shape[0]
    res = gn(sd, key + ".bnr", conv(sd, key + ".convr", x)) if ic != oc else x
    out = F.relu(gn(sd, key + ".bn1", conv(sd, key + ".conv1", x, padding=1)))
    out = gn(sd, key + ".bn2", conv(sd, key + ".conv2", out, padding=1))
    out = F.relu(out + res)
    if sample == "down":
        out = F.max_pool2d(out, 3, 2, 1)
    elif sample == "up":
        out = F.interpolate(out, scale_factor=2, mode="nearest")
    return out


def att(sd, key, g, x):
    g1 = gn(sd, key + ".W_g.1", conv(sd, key + ".W_g.0", g, bias=True))
    x1 = gn(sd, key + ".W_x.1", conv(sd, key + ".W_x.0", x, bias=True))
    p = conv(sd, key + ".psi.0", F.relu(g1 + x1), bias=True)
    return x * torch.sigmoid(F.instance_norm(p, eps=1e-5))


def noise(sd, key, x, maps):
    n = maps.pop(0) if maps is not None else torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], dtype=x.dtype)
    return x + sd[key + ".weight"].view(1, -1, 1, 1) * n


def generator(sd, x, maps=None):
    """maps: list of 8 noise tensors (noise7 .. noise0) or None to draw from the global RNG."""
    maps = list(maps) if maps is not None else None
    skips = []
    for i in range(1, 8):
        x = block(sd, f"encoder.layer{i}", x, "down")
        skips.append(x)
    x = noise(sd, "decoder.noise7", skips[6], maps)
    x = block(sd, "decoder.layer7_up", x, "up")
    for k in range(6, 0, -1):
        s = att(sd, f"decoder.Att{k}", x, skips[k - 1])
        x = block(sd, f"decoder.layer{k}", torch.cat((x, s), 1), None)
        x = noise(sd, f"decoder.noise{k}", x, maps)
        x = block(sd, f"decoder.layer{k}_up", x, "up")
    x = noise(sd, "decoder.noise0", x, maps)
    return torch.tanh(conv(sd, "decoder.layer0", x, padding=1, bias=True))
