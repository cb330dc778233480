"""The PyTorch peers of the suite, run in the benchmark environment (``.venv-bench``).

    .venv-bench/bin/python benchmarks/torch_peers.py IMPL WORKLOAD STEPS SHARED.npz

``SHARED.npz`` holds the workload's fixed meta-batch (NHWC) and metajax's initial weights
(``param:convs/0/kernel`` in HWIO, ...), written by `benchmarks.suite`. Implementations:

- ``torch``: plain PyTorch autograd, a Python loop over the meta-batch's tasks, inner
  gradients by ``torch.autograd.grad(create_graph=True)`` (second order) or detached.
- ``torchfunc``: ``torch.func``: ``vmap`` over tasks, ``grad`` of ``grad``.
- ``torchopt``: TorchOpt's differentiable functional optimizer (``torchopt.sgd`` with
  ``update(..., inplace=False)`` and ``apply_updates``) in a task loop, as its MAML examples.
- ``learn2learn``: ``learn2learn.algorithms.MAML`` around an ``nn.Module`` holding the same
  weights, ``clone()`` and ``adapt()`` per task, as its MAML examples (MAML workloads only).

Runs on CUDA when PyTorch sees a GPU (``BENCH_DEVICE=cpu`` forces the CPU), and then reports
the device's peak allocated memory too.

Prints one JSON line with the suite's fields. The models are written functionally on the
shared weights, with the same transductive batch norm, pooling and losses as metajax's.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.workloads import WORKLOADS, timed_steps  # noqa: E402

DEVICE = os.environ.get("BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def load_params(z):
    params = {}
    for key in z.files:
        if key.startswith("param:"):
            name, value = key[len("param:") :], torch.from_numpy(z[key])
            if name.startswith("convs/") and name.endswith("kernel"):
                value = value.permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
            params[name] = value.to(DEVICE).clone().requires_grad_(True)
    return params


def load(path):
    z = np.load(path)
    data = {k: torch.from_numpy(z[k]).to(DEVICE) for k in ("sx", "sy", "qx", "qy")}
    params = load_params(z)
    for k in ("sx", "qx"):
        if data[k].ndim == 5:
            data[k] = data[k].permute(0, 1, 4, 2, 3).contiguous()  # NHWC -> NCHW
    for k in ("sy", "qy"):
        if data[k].dtype == torch.int32:
            data[k] = data[k].long()
    return data, params


def conv4(p, x, features_only):
    for i in range(4):
        x = F.conv2d(x, p[f"convs/{i}/kernel"], p[f"convs/{i}/bias"], padding=1)
        mean = x.mean((0, 2, 3), keepdim=True)
        var = x.var((0, 2, 3), keepdim=True, unbiased=False)
        x = (x - mean) * torch.rsqrt(var + 1e-5)
        x = x * p[f"norms/{i}/scale"].view(1, -1, 1, 1) + p[f"norms/{i}/bias"].view(1, -1, 1, 1)
        x = F.max_pool2d(F.relu(x), 2)
    x = x.flatten(1)
    return x if features_only else x @ p["head/kernel"] + p["head/bias"]


def mlp(p, x):
    x = F.relu(x @ p["hidden/0/kernel"] + p["hidden/0/bias"])
    x = F.relu(x @ p["hidden/1/kernel"] + p["hidden/1/bias"])
    return x @ p["out/kernel"] + p["out/bias"]


def make_task_loss(w, inner_step):
    """The per-task meta-loss; ``inner_step(loss, phi, create_graph) -> phi`` is one step of
    the inner SGD."""

    def loss(p, x, y):
        if w.kind == "sinusoid":
            return ((mlp(p, x) - y) ** 2).mean()
        return F.cross_entropy(conv4(p, x, False), y)

    def task_loss(p, sx, sy, qx, qy):
        if w.kind == "protonet":
            s, q = conv4(p, sx, True), conv4(p, qx, True)
            onehot = F.one_hot(sy, w.way).to(s.dtype)
            protos = (onehot.T @ s) / onehot.sum(0)[:, None]
            return F.cross_entropy(-((q[:, None] - protos[None]) ** 2).sum(-1), qy)
        phi = p
        for _ in range(w.inner_steps):
            phi = inner_step(lambda q: loss(q, sx, sy), phi, not w.first_order)
        return loss(phi, qx, qy)

    return task_loss


def autograd_step(w):
    def step(f, phi, create_graph):
        names = list(phi)
        gs = torch.autograd.grad(f(phi), [phi[k] for k in names], create_graph=create_graph)
        return {k: phi[k] - w.inner_lr * g for k, g in zip(names, gs, strict=True)}

    return step


def func_step(w):
    def step(f, phi, create_graph):
        g = torch.func.grad(f)(phi)
        g = g if create_graph else {k: v.detach() for k, v in g.items()}
        return {k: phi[k] - w.inner_lr * g[k] for k in phi}

    return step


def torchopt_step(w):
    """TorchOpt's differentiable functional optimizer, as in its MAML examples."""
    import torchopt

    inner = torchopt.sgd(w.inner_lr)

    def step(f, phi, create_graph):
        names = list(phi)
        leaves = tuple(phi[k] for k in names)
        grads = torch.autograd.grad(f(phi), leaves, create_graph=create_graph)
        updates, _ = inner.update(grads, inner.init(leaves), inplace=False)
        new = torchopt.apply_updates(leaves, updates, inplace=False)
        return dict(zip(names, new, strict=True))

    return step


class SharedWeights(torch.nn.Module):
    """The workload's model as an ``nn.Module`` over the shared weights, for learn2learn
    (its ``clone``/``adapt`` swap the module's parameters for their adapted values)."""

    def __init__(self, w, params):
        super().__init__()
        self.kind, self.names = w.kind, list(params)
        for k, v in params.items():
            self.register_parameter(k.replace("/", "__"), torch.nn.Parameter(v.detach()))

    def forward(self, x):
        p = {k: getattr(self, k.replace("/", "__")) for k in self.names}
        return mlp(p, x) if self.kind == "sinusoid" else conv4(p, x, False)


def _learn2learn_core():
    """Imports learn2learn's torch-only modules without its package ``__init__`` where that
    fails (it imports torchvision for its vision data sets; PyPI's torchvision wheels are CUDA
    builds that pull in another torch). The same code runs."""
    try:
        import learn2learn  # noqa: F401
    except ImportError:
        import importlib.util
        import types

        root = importlib.util.find_spec("learn2learn").submodule_search_locations[0]
        for name, path in (("learn2learn", root), ("learn2learn.algorithms", f"{root}/algorithms")):
            package = types.ModuleType(name)
            package.__path__ = [path]
            sys.modules[name] = package


def learn2learn_maml():
    """``learn2learn.algorithms.MAML`` (see `_learn2learn_core`)."""
    _learn2learn_core()
    from learn2learn.algorithms.maml import MAML

    return MAML


def learn2learn_episodes(images, counts, w, data):
    """learn2learn's own episode pipeline: a ``MetaDataset`` over the images and a
    ``TaskDataset`` with ``NWays``, ``KShots``, ``LoadData`` and ``RemapLabels``, one
    ``sample()`` per task and ``partition_task`` into support and query, as its examples.
    Returns ``next_batch()``, which fills ``data`` with a meta-batch."""
    _learn2learn_core()
    from learn2learn.data import MetaDataset, TaskDataset
    from learn2learn.data.transforms import KShots, LoadData, NWays, RemapLabels
    from learn2learn.data.utils import partition_task

    x = np.concatenate([images[c, :n] for c, n in enumerate(counts)])
    x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    y = torch.cat([torch.full((int(n),), c) for c, n in enumerate(counts)])
    meta = MetaDataset(torch.utils.data.TensorDataset(x, y))
    tasks = TaskDataset(meta, [NWays(meta, w.way), KShots(meta, w.shot + w.query),
                               LoadData(meta), RemapLabels(meta)])  # fmt: skip

    def next_batch():
        splits = [partition_task(*tasks.sample(), shots=w.shot) for _ in range(w.meta_batch)]
        data.update(sx=[s[0][0] for s in splits], sy=[s[0][1] for s in splits],
                    qx=[s[1][0] for s in splits], qy=[s[1][1] for s in splits])  # fmt: skip

    return next_batch


def learn2learn_build(w, data, params):

    if w.kind == "protonet":
        raise SystemExit("learn2learn: the suite runs its MAML only (workloads a, b, c, e)")
    maml = learn2learn_maml()(SharedWeights(w, params), lr=w.inner_lr,
                              first_order=w.first_order)  # fmt: skip
    opt = torch.optim.Adam(maml.parameters(), lr=w.outer_lr)

    def loss(out, y):
        return ((out - y) ** 2).mean() if w.kind == "sinusoid" else F.cross_entropy(out, y)

    def task_loss(i):
        learner = maml.clone()
        for _ in range(w.inner_steps):
            learner.adapt(loss(learner(data["sx"][i]), data["sy"][i]))
        return loss(learner(data["qx"][i]), data["qy"][i])

    def mean_loss(p):  # the step-0 check: metajax's initial weights are the module's
        return sum(task_loss(i) for i in range(w.meta_batch)) / w.meta_batch

    def step():
        opt.zero_grad()
        for i in range(w.meta_batch):
            (task_loss(i) / w.meta_batch).backward()
        opt.step()

    return step, mean_loss


def build(impl, w, data, params):
    if impl == "learn2learn":
        return learn2learn_build(w, data, params)
    opt = torch.optim.Adam(params.values(), lr=w.outer_lr)
    n = w.meta_batch
    if impl in ("torch", "torchopt"):
        task_loss = make_task_loss(w, (autograd_step if impl == "torch" else torchopt_step)(w))

        def mean_loss(p):
            return (
                sum(
                    task_loss(p, data["sx"][i], data["sy"][i], data["qx"][i], data["qy"][i])
                    for i in range(n)
                )
                / n
            )

        def step():
            opt.zero_grad()
            # One backward per task keeps one task's graph alive at a time.
            for i in range(n):
                loss = task_loss(params, data["sx"][i], data["sy"][i], data["qx"][i], data["qy"][i])
                (loss / n).backward()
            opt.step()

    elif impl == "torchfunc":
        task_loss = make_task_loss(w, func_step(w))

        def mean_loss(p):
            losses = torch.func.vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(
                p, data["sx"], data["sy"], data["qx"], data["qy"]
            )
            return losses.mean()

        def step():
            detached = {k: v.detach() for k, v in params.items()}
            grads = torch.func.grad(mean_loss)(detached)
            for k, v in params.items():
                v.grad = grads[k]
            opt.step()

    else:
        raise SystemExit(f"unknown PyTorch implementation {impl!r}")
    return step, mean_loss


class EpisodeDataset(torch.utils.data.Dataset):
    """One N-way K-shot Q-query episode per item, drawn on the host from class-grouped
    images ``[classes, examples, H, W, C]`` (float32), as torchmeta's and learn2learn's
    task datasets do; a ``DataLoader`` batches episodes into meta-batches."""

    def __init__(self, images, counts, w, length=10**9):
        self.images, self.counts, self.w, self.length = images, counts, w, length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        w = self.w
        rng = np.random.default_rng(index)
        classes = rng.choice(len(self.images), w.way, replace=False)
        picks = [rng.choice(self.counts[c], w.shot + w.query, replace=False) for c in classes]
        x = np.stack([self.images[c][i] for c, i in zip(classes, picks, strict=True)])
        x = torch.from_numpy(x).permute(1, 0, 4, 2, 3)  # [shot+query, way, C, H, W]
        y = torch.arange(w.way).repeat(w.shot + w.query, 1)
        n = w.shot
        return (x[:n].reshape(-1, *x.shape[2:]), y[:n].reshape(-1),
                x[n:].reshape(-1, *x.shape[2:]), y[n:].reshape(-1))  # fmt: skip


def main_episodes(impl, workload, steps, path, workers):
    """End-to-end: a fresh meta-batch from the DataLoader before every meta-step."""
    torch.set_num_threads(os.cpu_count())
    w = WORKLOADS[workload]
    z = np.load(path)
    params = load_params(z)
    data = {}
    if impl == "learn2learn":
        next_batch = learn2learn_episodes(z["images"], z["counts"], w, data)
    else:
        loader = torch.utils.data.DataLoader(
            EpisodeDataset(z["images"], z["counts"], w), batch_size=w.meta_batch,
            num_workers=workers, shuffle=False,
        )  # fmt: skip
        batches = iter(loader)

        def next_batch():
            sx, sy, qx, qy = next(batches)
            data.update(sx=sx.to(DEVICE), sy=sy.to(DEVICE), qx=qx.to(DEVICE), qy=qy.to(DEVICE))

    next_batch()
    step, mean_loss = build(impl, w, data, params)
    with torch.no_grad() if w.kind == "protonet" else torch.enable_grad():
        loss0 = float(mean_loss({k: v.detach().requires_grad_(True) for k, v in params.items()}))

    def loaded_step(_):
        next_batch()
        step()

    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    _, per_s = timed_steps(loaded_step, None, steps, lambda _: sync())
    print(json.dumps({"impl": impl, "workload": workload, "meta_loss_first": loss0,
                      "steps_per_s": per_s, "tasks_per_s": per_s * w.meta_batch,
                      "compile_s": first, "loader_workers": workers,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))  # fmt: skip


def main():
    impl, workload, steps, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if len(sys.argv) > 6 and sys.argv[5] == "--episodes":
        return main_episodes(impl, workload, steps, path, int(sys.argv[6]))
    torch.set_num_threads(os.cpu_count())
    w = WORKLOADS[workload]
    data, params = load(path)
    step, mean_loss = build(impl, w, data, params)
    with torch.no_grad() if w.kind == "protonet" else torch.enable_grad():
        loss0 = float(mean_loss({k: v.detach().requires_grad_(True) for k, v in params.items()}))
    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    _, per_s = timed_steps(lambda _: step(), None, steps, lambda _: sync())
    row = {"impl": impl, "workload": workload, "meta_loss_0": loss0,
           "steps_per_s": per_s, "tasks_per_s": per_s * w.meta_batch, "compile_s": first,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu"}  # fmt: skip
    if DEVICE == "cuda":
        row["device"] = torch.cuda.get_device_name()
        row["device_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(row))


if __name__ == "__main__":
    main()
