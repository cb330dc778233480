"""The PyTorch peers of `benchmarks.np_speed`: CNP and ANP written as the metajax models are
(same widths, depths, attention blocks, masks, bounded scale and losses), trained on the same
Gaussian-process batches sampled in PyTorch each step, with Adam. Run in ``.venv-bench``:

    .venv-bench/bin/python benchmarks/np_torch.py MODEL STEPS REPEATS

MODEL is ``cnp``, ``anp`` or ``block`` (one attention block alone). Prints one JSON line:
steps/s (median of the repeats, min, max) and the first step's time, or the block's
milliseconds.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time

import torch
from torch import nn

WIDTH, LATENT, HEADS, BATCH, POINTS = 128, 128, 8, 16, 50
MIN_SCALE, NOISE, LENGTH = 0.01, 2e-2, 0.6


def mlp(inp, width, depth, out):
    widths = [inp] + [width] * (depth - 1)
    layers = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], out))


class MAB(nn.Module):
    """The Set Transformer block of metajax.models.neural_process.MultiheadAttention."""

    def __init__(self, dim):
        super().__init__()
        self.q, self.k, self.v = (
            nn.Linear(dim, dim),
            nn.Linear(dim, dim, bias=False),
            nn.Linear(dim, dim),
        )
        self.out, self.norm1, self.norm2 = nn.Linear(dim, dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, q, k, v, mask):
        b, m, d = q.shape
        qp = self.q(q)
        qh = qp.view(b, m, HEADS, -1).transpose(1, 2)
        kh = self.k(k).view(b, k.shape[1], HEADS, -1).transpose(1, 2)
        vh = self.v(v).view(b, v.shape[1], HEADS, -1).transpose(1, 2)
        logits = qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1])
        logits = logits.masked_fill(~mask[:, None, None, :], -1e9)
        att = (logits.softmax(-1) @ vh).transpose(1, 2).reshape(b, m, d)
        h = self.norm1(qp + att)
        return self.norm2(h + torch.relu(self.out(h)))


class SetEncoder(nn.Module):
    def __init__(self, attention_layers):
        super().__init__()
        self.mlp = mlp(2, WIDTH, 4, WIDTH)
        self.attention = nn.ModuleList([MAB(WIDTH) for _ in range(attention_layers)])

    def forward(self, x, y, mask):
        h = self.mlp(torch.cat([x, y], -1))
        for layer in self.attention:
            h = layer(h, h, h, mask)
        return h


class Pooled(nn.Module):
    def __init__(self, out, attention_layers=0, latent=False):
        super().__init__()
        self.latent = latent
        self.set = SetEncoder(attention_layers)
        self.post = mlp(WIDTH, WIDTH, 2, 2 * out if latent else out)

    def forward(self, x, y, mask):
        w = mask.float()[..., None]
        pooled = (self.set(x, y, mask) * w).sum(1) / w.sum(1).clamp(min=1)
        out = self.post(pooled)
        if not self.latent:
            return out
        mean, raw = out.chunk(2, -1)
        return mean, 0.1 + 0.9 * torch.sigmoid(raw)


def decode(decoder, r, x):
    mean, raw = decoder(torch.cat([r, x], -1)).chunk(2, -1)
    return mean, MIN_SCALE + (1 - MIN_SCALE) * nn.functional.softplus(raw)


def log_prob(y, mean, scale):
    return (-0.5 * ((y - mean) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


class CNP(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder, self.decoder = Pooled(WIDTH), mlp(1 + WIDTH, WIDTH, 3, 2)

    def loss(self, c, p):
        r = self.encoder(*c)[:, None].expand(-1, p[0].shape[1], -1)
        ll = log_prob(p[1], *decode(self.decoder, r, p[0]))
        w = p[2].float()
        return -((ll * w).sum(1) / w.sum(1)).mean()


class ANP(nn.Module):
    def __init__(self):
        super().__init__()
        self.values = SetEncoder(2)
        self.embed = mlp(1, WIDTH, 2, WIDTH)
        self.cross = MAB(WIDTH)
        self.latent = Pooled(LATENT, 2, latent=True)
        self.decoder = mlp(1 + WIDTH + LATENT, WIDTH, 3, 2)

    def loss(self, c, p):
        xc, yc, mc = c
        r = self.cross(self.embed(p[0]), self.embed(xc), self.values(xc, yc, mc), mc)
        prior_m, prior_s = self.latent(*c)
        post_m, post_s = self.latent(*p)
        z = post_m + post_s * torch.randn_like(post_s)
        rz = torch.cat([r, z[:, None].expand(-1, p[0].shape[1], -1)], -1)
        ll = log_prob(p[1], *decode(self.decoder, rz, p[0]))
        ratio = (post_s / prior_s) ** 2
        kl = 0.5 * (ratio + ((post_m - prior_m) / prior_s) ** 2 - 1 - ratio.log()).sum(-1)
        w = p[2].float()
        return -(((ll * w).sum(1) - kl) / w.sum(1)).mean()


def sample_batch():
    """metajax.tasks.GaussianProcess's EQ sampler: the context (the first n points, masked
    past n) and all 50 points, the set the training objective scores (as metajax's GP tasks,
    whose context and targets share their points, and the ANP reference code lay them out)."""
    x = torch.rand(BATCH, POINTS, 1) * 4 - 2
    cov = torch.exp(-0.5 * ((x - x.transpose(1, 2)) / LENGTH) ** 2) + NOISE**2 * torch.eye(POINTS)
    y = torch.linalg.cholesky(cov) @ torch.randn(BATCH, POINTS, 1)
    n = torch.randint(3, 47, (BATCH, 1))
    context = torch.arange(POINTS)[None] < n
    return (x, y, context), (x, y, torch.ones_like(context))


def block_ms(steps, repeats):
    """Milliseconds of one `MAB` forward and backward (parameter and input gradients) on 16
    sets of 50 rows, half of them masked: the unit the ANP's step is made of."""
    block = MAB(WIDTH)
    h = torch.randn(BATCH, POINTS, WIDTH, requires_grad=True)
    mask = torch.arange(POINTS)[None].repeat(BATCH, 1) < POINTS // 2
    for _ in range(5):
        (block(h, h, h, mask) ** 2).sum().backward()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            (block(h, h, h, mask) ** 2).sum().backward()
        times.append((time.perf_counter() - t0) / steps * 1e3)
    return statistics.median(times)


def gemm_us(steps: int, repeats: int) -> float:
    """Microseconds of one ``[800, 128] @ [128, 128]`` product (a layer of the NP models on a
    meta-batch of 16 sets of 50 points), chained ``steps`` times."""
    a, w = torch.randn(BATCH * POINTS, WIDTH), torch.randn(WIDTH, WIDTH) / WIDTH**0.5
    c = a
    for _ in range(10):
        c = c @ w
    times = []
    for _ in range(repeats):
        c = a
        t0 = time.perf_counter()
        for _ in range(steps):
            c = c @ w
        times.append((time.perf_counter() - t0) / steps * 1e6)
    return statistics.median(times)


def main():
    name, steps, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(0)
    if name == "gemm":
        print(json.dumps({"impl": "pytorch", "part": "matmul 800x128x128",
                          "us": gemm_us(steps, repeats)}))  # fmt: skip
        return
    if name == "block":
        print(
            json.dumps(
                {"impl": "pytorch", "part": "attention block", "ms": block_ms(steps, repeats)}
            )
        )
        return
    model = {"cnp": CNP, "anp": ANP}[name]()
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)

    def step():
        c, p = sample_batch()
        loss = model.loss(c, p)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    for _ in range(5):
        step()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        float(loss.detach())
        rates.append(steps / (time.perf_counter() - t0))
    print(
        json.dumps(
            {
                "impl": "pytorch",
                "model": name,
                "steps_per_s": statistics.median(rates),
                "steps_per_s_min": min(rates),
                "steps_per_s_max": max(rates),
                "first_step_s": first,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
