"""The Neural Process family through the command line: gp-* and sinusoid-cnp train, plot and
evaluate with the family's metrics; settings that cannot work are refused."""

import json

import pytest

from metajax.cli import main
from metajax.config import get_config, override

SMALL = ["--no-progress", "--set", "steps=60", "eval_tasks=20", "steps_per_dispatch=30",
         "width=16", "log_every=30"]  # fmt: skip


def test_gp_cnp_trains_plots_and_evaluates(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main(["train", "gp-cnp", "--workdir", str(workdir), *SMALL]) == 0
    assert (workdir / "predictions.png").stat().st_size > 10_000
    capsys.readouterr()
    assert main(["eval", str(workdir), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert set(metrics) == {"log_likelihood", "context_log_likelihood", "mse",
                            "all_points_log_likelihood",
                            "log_likelihood_context_3", "log_likelihood_context_10",
                            "log_likelihood_context_20", "log_likelihood_context_40"}  # fmt: skip
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["metrics"] == metrics
    # More context, better predictions of the rest.
    assert (
        metrics["log_likelihood_context_40"]["mean"] > metrics["log_likelihood_context_3"]["mean"]
    )


@pytest.mark.parametrize("config", ["gp-np", "gp-anp", "gp-convcnp", "sinusoid-cnp"])
def test_every_np_config_runs(config, tmp_path, capsys):
    sets = SMALL + (["heads=2"] if config == "gp-anp" else [])
    sets = sets + (["latent_dim=4"] if config in ("gp-np", "gp-anp") else [])
    if config == "gp-convcnp":
        sets = [s for s in sets if s != "width=16"] + ["channels=8", "conv_layers=2"]
    assert main(["train", config, "--workdir", str(tmp_path / "run"), *sets]) == 0
    out = capsys.readouterr().out
    assert "context_log_likelihood" in out and (tmp_path / "run" / "predictions.png").exists()
    if config in ("gp-np", "gp-anp"):
        assert "iw_log_likelihood" in out and "elbo" in out


@pytest.mark.parametrize("kernel", ["matern", "periodic"])
def test_kernel_is_a_setting(kernel):
    config = override(get_config("gp-cnp"), [f"kernel={kernel}", "random_hyperparameters=true"])
    train, _ = config.build().train_tasks, None
    assert train.kernel == kernel and train.random_hyperparameters


NPF_SETS = ["length_scale=0.2", "noise=0", "num_points=128", "min_context=1", "max_context=51",
            "meta_batch_size=32", "outer_lr=1e-3", "log_every=1000"]  # fmt: skip


@pytest.mark.parametrize("algorithm", ["cnp", "np", "anp", "convcnp"])
def test_npf_configs_are_the_gp_configs_on_the_npf_data(algorithm):
    # experiments/RESULTS.md records these runs as `gp-ALG --set ...`; the named configs must
    # be exactly those settings.
    npf = get_config(f"gp-npf-{algorithm}")
    steps = npf.trainer.steps
    by_hand = override(get_config(f"gp-{algorithm}"), NPF_SETS + [f"steps={steps}"])
    fields = ("benchmark", "learner", "trainer")
    assert [getattr(npf, f) for f in fields] == [getattr(by_hand, f) for f in fields]
    tasks = npf.build().train_tasks
    assert (tasks.length_scale, tasks.num_points, tasks.observation_noise) == (0.2, 128, 1e-3)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "algorithm=maml"], "maml handles regression and classification tasks, and this "
                                      "benchmark's are process"),
        (["--set", "eval_context_sizes=10,50"], "eval_context_sizes (10, 50) must be below"),
        (["--set", "kernel=rbf"], "kernel must be one of eq, matern, periodic"),
        (["--set", "min_scale=0"], "min_scale must be in (0, 1)"),
        (["--set", "heads=3"], "'heads' is a setting of anp"),
    ],
)  # fmt: skip
def test_impossible_settings_are_refused(argv, message, tmp_path, capsys):
    assert main(["train", "gp-cnp", "--workdir", str(tmp_path / "run"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
