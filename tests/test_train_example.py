"""The training example: BatchNorm must beat no normalization in the same steps."""

import importlib.util
import pathlib

import numpy as np
import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_mlp.py"


@pytest.fixture(scope="module")
def train_mlp():
    spec = importlib.util.spec_from_file_location("train_mlp", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batchnorm_reaches_lower_loss_than_no_normalization(train_mlp):
    curves = train_mlp.run(epochs=4, seed=0, n_samples=1024, verbose=False)
    assert sorted(curves) == ["batchnorm", "layernorm", "none"]
    for losses in curves.values():
        assert len(losses) == 4 and np.isfinite(losses).all()
    # Without normalization the deep sigmoid stack stays near chance, log(4) = 1.386;
    # with BatchNorm the same steps get far below it.
    assert curves["batchnorm"][-1] < 0.8 * curves["none"][-1]
    assert curves["batchnorm"][-1] < curves["batchnorm"][0]


def test_runs_are_reproducible(train_mlp):
    a = train_mlp.run(epochs=1, seed=3, n_samples=256, norms=("batchnorm",), verbose=False)
    b = train_mlp.run(epochs=1, seed=3, n_samples=256, norms=("batchnorm",), verbose=False)
    assert a == b


def test_main_prints_losses_and_saves_plot(train_mlp, tmp_path, capsys):
    plot = tmp_path / "loss.png"
    train_mlp.main(["--epochs", "1", "--samples", "256", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert "batchnorm" in out and "layernorm" in out
    if importlib.util.find_spec("matplotlib") is None:
        assert not plot.exists()
    else:
        assert plot.stat().st_size > 0
