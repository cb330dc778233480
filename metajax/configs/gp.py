"""Gaussian-process regression with the Neural Process family (`metajax.tasks.gp`).

``gp-{cnp,np,anp,convcnp}`` train on EQ functions with the published benchmark's sampler
(Kim et al. 2019, Lee et al. 2020): length 0.6 and scale 1, noise 2e-2, 50 points with 3 to
46 of them as the context. ``random_hyperparameters=true`` draws the length from U[0.1, 0.6]
and the scale from U[0.1, 1] for each function, as Lee et al.'s code always does
(github.com/juho-lee/bnp, ``regression/data/gp.py``). ``--set kernel=matern|periodic``
swaps the kernel. The trainer is that code's and Nguyen & Grover 2022's on this sampler:
Adam from 5e-4 with a cosine decay, meta-batch 16 (Nguyen & Grover's; Lee et al. use 100);
the step counts are sized for a 2-core CPU (experiments/RESULTS.md records each run's time).

``gp-npf-{cnp,np,anp,convcnp}`` use the data and trainer of the Neural-Process-Family
repository (Dubois et al. 2020, github.com/YannDubs/Neural-Process-Family), which differ from
the sampler above (experiments/RESULTS.md compares both with the published figures):
EQ length 0.2, no noise, 128 points, 0-50 of them as the context (here
1-50: a CNP needs one), every point a target; meta-batch 32, Adam 1e-3 decayed tenfold over
50 epochs of 50,000 functions (about 70,000 steps; here a cosine decay).

``sinusoid-cnp`` is a CNP on Finn et al.'s sinusoids (`metajax.configs.sinusoid`).
"""

from __future__ import annotations

import dataclasses

from metajax.config import (
    Benchmark,
    BuildEnv,
    Config,
    ConfigError,
    LearnerConfig,
    TrainerConfig,
    algorithm_config,
    function_env,
    register_config,
)
from metajax.tasks.gp import KERNELS, GaussianProcess


@dataclasses.dataclass(frozen=True)
class GPBenchmark(Benchmark):
    """Functions from a Gaussian process (fields of `metajax.tasks.gp.GaussianProcess`)."""

    kernel: str = "eq"
    length_scale: float = 0.6
    scale: float = 1.0
    random_hyperparameters: bool = False
    noise: float = 2e-2
    num_points: int = 50
    min_context: int = 3
    max_context: int = 47
    kind = "process"

    def validate(self, name: str) -> None:
        super().validate(name)
        if self.kernel not in KERNELS:
            raise ConfigError(f"Config {name}: kernel must be one of {', '.join(KERNELS)}, "
                              f"got {self.kernel!r}.")  # fmt: skip
        if not 1 <= self.min_context < self.max_context <= self.num_points:
            raise ConfigError(
                f"Config {name}: needs 1 <= min_context < max_context <= num_points, got "
                f"{self.min_context}, {self.max_context}, {self.num_points}."
            )
        if min(self.length_scale, self.scale) <= 0 or self.noise < 0:
            raise ConfigError(f"Config {name}: length_scale and scale must be > 0, noise >= 0.")

    def check_learner(self, learner: LearnerConfig, trainer: TrainerConfig, name: str) -> None:
        del trainer
        sizes = getattr(learner, "eval_context_sizes", ())
        if sizes and max(sizes) >= self.num_points:
            raise ConfigError(
                f"Config {name}: eval_context_sizes {sizes} must be below num_points="
                f"{self.num_points} (targets are the points left over)."
            )

    def distribution(self) -> GaussianProcess:
        return GaussianProcess(
            kernel=self.kernel, length_scale=self.length_scale, scale=self.scale,
            random_hyperparameters=self.random_hyperparameters, noise=self.noise,
            num_points=self.num_points, min_context=self.min_context,
            max_context=self.max_context,
        )  # fmt: skip

    def tasks(self) -> tuple[GaussianProcess, GaussianProcess]:
        return self.distribution(), self.distribution()

    def env(self, learner: LearnerConfig, trainer: TrainerConfig, name: str) -> BuildEnv:
        del learner, trainer
        return function_env(
            name, 1, 1, (-2.0, 2.0), "a Neural Process learner (algorithm=cnp, np, anp or convcnp)"
        )


# Meta-steps of each model, sized from its step time on a 2-core CPU (RESULTS.md).
GP_STEPS = {"cnp": 30_000, "np": 30_000, "anp": 15_000, "convcnp": 15_000}


def gp_config(name: str, algorithm: str, description: str = "") -> Config:
    """A GP config with ``algorithm``'s learner and Lee et al. 2020's trainer."""
    trainer = TrainerConfig(steps=GP_STEPS[algorithm], meta_batch_size=16, outer_lr=5e-4,
                            lr_schedule="cosine", checkpoint_every=5000, log_every=500,
                            eval_tasks=2000)  # fmt: skip
    return Config(name, GPBenchmark(), algorithm_config(algorithm)(), trainer, description)


# The Neural-Process-Family benchmarks' sampler and trainer (module docstring).
NPF_BENCHMARK = GPBenchmark(length_scale=0.2, noise=0.0, num_points=128, min_context=1,
                            max_context=51)  # fmt: skip
NPF_STEPS = {"cnp": 70_000, "np": 70_000, "anp": 20_000, "convcnp": 20_000}


def npf_config(name: str, algorithm: str, description: str = "") -> Config:
    """A GP config with the Neural-Process-Family benchmarks' data and trainer."""
    config = gp_config(name, algorithm, description)
    trainer = dataclasses.replace(config.trainer, steps=NPF_STEPS[algorithm],
                                  meta_batch_size=32, outer_lr=1e-3, log_every=1000)  # fmt: skip
    return dataclasses.replace(config, benchmark=NPF_BENCHMARK, trainer=trainer)


_CONFIGS = {
    "gp-cnp": ("cnp", "CNP, Garnelo et al. 2018a, on EQ Gaussian-process functions"),
    "gp-np": ("np", "latent NP, Garnelo et al. 2018b (ELBO), on EQ GP functions"),
    "gp-anp": ("anp", "ANP, Kim et al. 2019 (self- and cross-attention), on EQ GP functions"),
    "gp-convcnp": ("convcnp", "ConvCNP, Gordon et al. 2020 (SetConv + CNN), on EQ GP functions"),
}

for _name, (_algorithm, _description) in _CONFIGS.items():
    register_config(_name, lambda n=_name, a=_algorithm, d=_description: gp_config(n, a, d))
    _npf_name = _name.replace("gp-", "gp-npf-")
    _npf_description = f"{_description.split(', on ')[0]}, on the Neural-Process-Family GP data"
    register_config(_npf_name, lambda n=_npf_name, a=_algorithm, d=_npf_description:
                    npf_config(n, a, d))  # fmt: skip
