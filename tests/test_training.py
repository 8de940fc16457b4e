"""Tests for course_utils.training: the training loop, its NaN guard, and the checkpoint cache."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from course_utils.config import seed_everything
from course_utils.checkpoints import checkpoint_path, config_key, load_checkpoint, save_checkpoint, train_or_load
from course_utils.training import (
    History,
    NonFiniteLossError,
    train,
)

N_FEATURES = 8


def make_autoencoder() -> nn.Module:
    """A tiny linear autoencoder: 8 -> 3 -> 8."""
    return nn.Sequential(nn.Linear(N_FEATURES, 3), nn.Linear(3, N_FEATURES))


def make_data(n: int = 256) -> torch.Tensor:
    """(n, 8) values in [0, 1] that lie near a 3-d subspace, so a 3-d bottleneck can fit them."""
    generator = torch.Generator().manual_seed(123)
    codes = torch.rand(n, 3, generator=generator)
    mixing = torch.rand(3, N_FEATURES, generator=generator) / 3
    return (codes @ mixing).clamp(0, 1)


def mse_loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    (x,) = batch
    return F.mse_loss(model(x), x)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def quick_train(model: nn.Module, loss_fn, data, **kwargs) -> History:
    kwargs.setdefault("epochs", 2)
    kwargs.setdefault("batch_size", 64)
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("progress", False)
    return train(model, loss_fn, data, **kwargs)


# ----------------------------------------------------------------------------- training


def test_loss_decreases_and_history_is_filled():
    seed_everything(0)
    model = make_autoencoder()
    history = quick_train(model, mse_loss, make_data(256), epochs=5, lr=1e-2)

    assert history.epochs_run == 5
    assert len(history.losses) == 5
    assert history.losses[-1] < history.losses[0]
    assert len(history.step_losses) == 5 * 4  # 256 samples / 64 per batch
    assert history.logs["loss"] == history.losses
    assert history.seconds > 0
    assert not model.training  # left in eval() mode
    assert all(isinstance(v, float) for v in history.step_losses)


def test_dict_loss_logs_extra_terms_and_tuple_batches():
    seed_everything(0)
    model = make_autoencoder()
    x = make_data(100)
    labels = torch.arange(100)
    seen_batch_lengths = []

    def loss_fn(model, batch):
        images, batch_labels = batch
        seen_batch_lengths.append(len(batch))
        assert images.shape[0] == batch_labels.shape[0]
        recon = F.mse_loss(model(images), images)
        return {"loss": recon * 2, "recon": recon, "batch_size": float(images.shape[0])}

    history = quick_train(model, loss_fn, (x, labels), epochs=3, batch_size=32)

    assert set(history.logs) == {"loss", "recon", "batch_size"}
    assert all(len(values) == 3 for values in history.logs.values())
    assert history.logs["loss"] == pytest.approx([2 * r for r in history.logs["recon"]])
    # 100 samples in batches of 32: the last batch of each epoch has 4 samples (drop_last=False).
    assert history.logs["batch_size"][0] == pytest.approx((32 + 32 + 32 + 4) / 4)
    assert set(seen_batch_lengths) == {2}


def test_dataloader_data_callbacks_and_scheduler():
    seed_everything(0)
    model = make_autoencoder()
    loader = DataLoader(TensorDataset(make_data(64)), batch_size=16, shuffle=False)  # batches are lists
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    calls = []

    history = quick_train(
        model, mse_loss, loader, epochs=3, optimizer=optimizer, scheduler=scheduler,
        on_epoch_end=lambda epoch, hist: calls.append((epoch, hist.epochs_run)),
    )

    assert calls == [(1, 1), (2, 2), (3, 3)]
    assert len(history.step_losses) == 3 * 4
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_progress_bar_and_amp_request_on_cpu(capsys):
    seed_everything(0)
    model = make_autoencoder()
    with pytest.warns(UserWarning, match="only used on CUDA"):
        history = quick_train(model, mse_loss, make_data(32), epochs=1, amp=True, progress=True, desc="unit test")
    assert history.epochs_run == 1
    assert "unit test" in capsys.readouterr().err


def test_seeded_runs_are_bit_identical():
    def run() -> tuple[dict[str, torch.Tensor], History]:
        seed_everything(0)
        model = make_autoencoder()
        history = quick_train(model, mse_loss, make_data(200), epochs=3, batch_size=48, seed=7)
        return snapshot(model), history

    weights_a, history_a = run()
    weights_b, history_b = run()
    assert history_a.step_losses == history_b.step_losses
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key


def test_max_grad_norm_clips_the_update():
    x = make_data(64)

    def huge_loss(model, batch):
        return 1e6 * mse_loss(model, batch)

    def parameter_change(max_grad_norm):
        seed_everything(0)
        model = make_autoencoder()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        quick_train(model, huge_loss, x, epochs=1, batch_size=64, optimizer=optimizer, max_grad_norm=max_grad_norm)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        return float((after - before).norm())

    assert parameter_change(0.5) <= 1.0 * 0.5 + 1e-5
    assert parameter_change(None) > 10.0  # without clipping the same step is huge


# ----------------------------------------------------------------------------- NaN guard


class _InfGradient(torch.autograd.Function):
    """Identity forward; infinite gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, math.inf)


def _bad_on_third_call(kind: str):
    """A loss_fn that misbehaves on its 3rd call, and records the weights at that moment."""
    state = {"calls": 0, "weights_before_bad_step": None}

    def loss_fn(model, batch):
        state["calls"] += 1
        (x,) = batch
        bad = state["calls"] == 3
        if bad:
            state["weights_before_bad_step"] = snapshot(model)  # = the weights after step 2
        output = model(x)
        if bad and kind == "gradient":
            output = _InfGradient.apply(output)  # finite loss, infinite gradients
        loss = F.mse_loss(output, x)
        if bad and kind == "loss":
            loss = loss * math.nan
        logged = torch.tensor(math.inf) if bad and kind == "term" else loss.detach()
        return {"loss": loss, "nll": logged}

    return loss_fn, state


@pytest.mark.parametrize(
    ("kind", "quantity"),
    [("loss", "loss"), ("term", "logged term 'nll'"), ("gradient", "gradient norm")],
)
def test_non_finite_values_stop_before_the_bad_step(kind, quantity):
    seed_everything(0)
    model = make_autoencoder()
    loss_fn, state = _bad_on_third_call(kind)

    with pytest.raises(NonFiniteLossError) as caught:
        quick_train(model, loss_fn, make_data(64), epochs=2, batch_size=16)

    error = caught.value
    message = str(error)
    assert f"non-finite {quantity}" in message
    assert "epoch 1/2" in message and "step 3/4" in message
    assert "learning rate" in message and "max_grad_norm" in message
    assert (error.epoch, error.step, error.quantity) == (1, 3, quantity)
    assert len(error.history.step_losses) == 2
    assert_same_weights(model, state["weights_before_bad_step"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"lr": math.nan}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    kwargs.setdefault("epochs", 1)
    with pytest.raises(ValueError, match=match):
        quick_train(make_autoencoder(), mse_loss, make_data(8), **kwargs)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (torch.empty(0, N_FEATURES), "empty"),
        ((torch.rand(8, N_FEATURES), torch.rand(7)), "different first dimensions"),
        ((), "empty"),
        ([[1.0, 2.0]], "not a tensor"),
        ("images.npy", "DataLoader"),
        (DataLoader(TensorDataset(torch.empty(0, N_FEATURES)), batch_size=4), "no batches"),
    ],
)
def test_bad_data_raise_value_error(data, match):
    with pytest.raises(ValueError, match=match):
        quick_train(make_autoencoder(), mse_loss, data, epochs=1)


@pytest.mark.parametrize(
    ("loss_fn", "match"),
    [
        (lambda model, batch: {"recon": mse_loss(model, batch)}, "'loss'"),
        (lambda model, batch: (model(batch[0]) - batch[0]) ** 2, "scalar"),
        (lambda model, batch: mse_loss(model, batch).detach(), "requires_grad"),
    ],
)
def test_malformed_losses_raise_value_error(loss_fn, match):
    with pytest.raises(ValueError, match=match):
        quick_train(make_autoencoder(), loss_fn, make_data(8), epochs=1)


# ----------------------------------------------------------------------------- History


def test_history_round_trips_through_json():
    history = History(losses=[1.0, 0.5], logs={"loss": [1.0, 0.5], "nll": [3.0, 2.0]},
                      step_losses=[1.2, 0.8, 0.6, 0.4], epochs_run=2, seconds=1.5)
    restored = History.from_dict(json.loads(json.dumps(history.to_dict())))
    assert restored == history
    with pytest.raises(ValueError, match="missing"):
        History.from_dict({"losses": []})


# ----------------------------------------------------------------------------- checkpoints

CONFIG = {"method": "ae", "dataset": "toy", "epochs": 2, "hidden": [3], "extra": {"beta": 0.5, "note": None}}


def test_config_key_ignores_order_and_rejects_non_json_values():
    reordered = dict(reversed(list(CONFIG.items())))
    assert config_key(reordered) == config_key(CONFIG)
    assert len(config_key(CONFIG)) == 64
    assert config_key({**CONFIG, "epochs": 3}) != config_key(CONFIG)

    with pytest.raises(ValueError, match="'device'"):
        config_key({"device": torch.device("cpu")})
    with pytest.raises(ValueError, match="extra.fn"):
        config_key({"extra": {"fn": print}})
    with pytest.raises(ValueError, match="not a string"):
        config_key({1: "a"})


def test_checkpoint_path_names(tmp_path, monkeypatch):
    path = checkpoint_path("ae-mnist_0.v1", CONFIG, tmp_path)
    assert path.parent == tmp_path
    assert path.name == f"ae-mnist_0.v1-{config_key(CONFIG)[:16]}.pt"
    assert checkpoint_path("ae", {**CONFIG, "epochs": 9}, tmp_path) != checkpoint_path("ae", CONFIG, tmp_path)

    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    assert checkpoint_path("ae", CONFIG).parent == tmp_path / "cache"
    for bad_name in ["../evil", "a/b", "", "a b"]:
        with pytest.raises(ValueError, match="safe file name"):
            checkpoint_path(bad_name, CONFIG, tmp_path)


def test_train_or_load_trains_once_then_loads(tmp_path, capsys):
    calls = []

    def make_train_fn(model):
        def train_fn():
            calls.append(1)
            return quick_train(model, mse_loss, make_data(64), epochs=2)
        return train_fn

    seed_everything(0)
    trained = make_autoencoder()
    history, cached = train_or_load(trained, "ae", CONFIG, make_train_fn(trained), directory=tmp_path)
    assert (cached, len(calls)) == (False, 1)
    assert "saved checkpoint" in capsys.readouterr().out
    assert checkpoint_path("ae", CONFIG, tmp_path).is_file()

    seed_everything(1)  # a different initialisation, overwritten by the load
    fresh = make_autoencoder()
    fresh.train()
    loaded_history, cached = train_or_load(fresh, "ae", CONFIG, make_train_fn(fresh), directory=tmp_path)
    assert (cached, len(calls)) == (True, 1)
    assert "loaded cached checkpoint" in capsys.readouterr().out
    assert loaded_history == history
    assert_same_weights(fresh, snapshot(trained))
    assert not fresh.training

    # Another config is another file, so it trains again; retrain=True trains regardless.
    _, cached = train_or_load(fresh, "ae", {**CONFIG, "epochs": 3}, make_train_fn(fresh), directory=tmp_path)
    assert (cached, len(calls)) == (False, 2)
    _, cached = train_or_load(
        fresh, "ae", CONFIG, make_train_fn(fresh), directory=tmp_path, retrain=True, verbose=False
    )
    assert (cached, len(calls)) == (False, 3)
    assert len(list(tmp_path.glob("*.pt"))) == 2  # (plus the hidden lock files of the two trainings)


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = checkpoint_path("ae", CONFIG, tmp_path)
    seed_everything(0)
    good_model = make_autoencoder()
    save_checkpoint(path, good_model, None, CONFIG)
    good_bytes = path.read_bytes()

    real_save = torch.save

    def half_save_then_fail(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", half_save_then_fail)
    other_model = make_autoencoder()
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, other_model, None, CONFIG)
    assert path.read_bytes() == good_bytes  # the previous good checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left

    new_path = checkpoint_path("new", CONFIG, tmp_path)
    with pytest.raises(OSError, match="disk full"):
        train_or_load(other_model, "new", CONFIG, lambda: None, directory=tmp_path)
    assert not new_path.exists()
    # no temp files left; only the (empty, hidden) lock file of the failed training
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, f".{new_path.name}.lock"])

    monkeypatch.setattr(torch, "save", real_save)
    fresh = make_autoencoder()
    load_checkpoint(path, fresh, expected_config=CONFIG)
    assert_same_weights(fresh, snapshot(good_model))


def test_corrupt_checkpoint_raises_runtime_error_naming_the_file(tmp_path):
    path = checkpoint_path("ae", CONFIG, tmp_path)
    random_bytes = torch.randint(0, 256, (2000,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    path.write_bytes(random_bytes.numpy().tobytes())
    with pytest.raises(RuntimeError, match="delete it to retrain") as caught:
        load_checkpoint(path, make_autoencoder())
    assert str(path) in str(caught.value)
    with pytest.raises(RuntimeError, match="delete it to retrain"):
        train_or_load(make_autoencoder(), "ae", CONFIG, lambda: pytest.fail("must not train"), directory=tmp_path)

    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt", make_autoencoder())


def test_mismatched_weights_or_config_raise_value_error(tmp_path):
    path = tmp_path / "ae.pt"
    save_checkpoint(path, make_autoencoder(), None, CONFIG)

    wider = nn.Sequential(nn.Linear(N_FEATURES, 4), nn.Linear(4, N_FEATURES))
    with pytest.raises(ValueError, match="another model version") as caught:
        load_checkpoint(path, wider)
    assert "0.weight" in str(caught.value)

    deeper = nn.Sequential(nn.Linear(N_FEATURES, 3), nn.Linear(3, N_FEATURES), nn.Linear(N_FEATURES, N_FEATURES))
    with pytest.raises(ValueError, match="missing keys: 2.bias, 2.weight"):
        load_checkpoint(path, deeper)

    with pytest.raises(ValueError, match="differing keys: \\['epochs'\\]"):
        load_checkpoint(path, make_autoencoder(), expected_config={**CONFIG, "epochs": 5})

    with pytest.raises(ValueError, match="'device'"):
        save_checkpoint(tmp_path / "x.pt", make_autoencoder(), None, {"device": torch.device("cpu")})
    assert not (tmp_path / "x.pt").exists()


def test_checkpoint_file_is_plain_weights_only_data(tmp_path):
    path = tmp_path / "ae.pt"
    history = History(losses=[1.0], logs={"loss": [1.0]}, step_losses=[1.0], epochs_run=1, seconds=0.1)
    save_checkpoint(path, make_autoencoder(), history, CONFIG)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == 1
    assert payload["config"] == json.loads(json.dumps(CONFIG))
    assert payload["history"] == history.to_dict()
    assert set(payload["state_dict"]) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert isinstance(payload["torch_version"], str)


# ----------------------------------------------------------------------------- several objectives, steps budget


def _two_objectives(model, every_second=2, max_abs_loss=None, second_loss=None):
    """Objective "a" trains the encoder half of the autoencoder, "b" the decoder half."""
    from course_utils.training import Objective

    encoder, decoder = model[0], model[1]
    opt_a = torch.optim.SGD(encoder.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(decoder.parameters(), lr=0.1)
    return [
        Objective("a", lambda m, b: {"loss": mse_loss(m, b), "half": 0.5 * mse_loss(m, b).detach()}, opt_a,
                  max_abs_loss=max_abs_loss),
        Objective("b", second_loss or mse_loss, opt_b, every=every_second),
    ]


def test_objectives_alternate_on_their_schedule_and_log_separately():
    seed_everything(0)
    model = make_autoencoder()
    calls = []

    def counted(m, b):
        calls.append(len(b[0]))
        return mse_loss(m, b)

    decoder_before = snapshot(model[1])
    history = quick_train(model, _two_objectives(model, every_second=3, second_loss=counted), make_data(256),
                          epochs=3, batch_size=64)  # 4 batches per epoch, 12 loader steps
    assert len(calls) == 4  # steps 3, 6, 9, 12
    assert len(history.step_losses) == 12  # the first objective's loss at every step
    assert set(history.logs) == {"loss", "a/loss", "a/half", "b/loss"}
    assert history.logs["loss"] == history.logs["a/loss"] == history.losses
    assert history.logs["a/half"] == pytest.approx([0.5 * v for v in history.logs["a/loss"]])
    assert history.losses[-1] < history.losses[0]
    assert any(not torch.equal(v, decoder_before[k]) for k, v in model[1].state_dict().items())


def test_objectives_touch_only_their_own_parameters():
    seed_everything(0)
    model = make_autoencoder()
    decoder_before = snapshot(model[1])
    # "b" every 100 steps never runs in 4 steps: the decoder must keep its weights exactly.
    quick_train(model, _two_objectives(model, every_second=100), make_data(256), epochs=1, batch_size=64)
    assert_same_weights(model[1], decoder_before)


def test_steps_budget_cycles_the_data_and_stops_exactly():
    seed_everything(0)
    model = make_autoencoder()
    history = quick_train(model, mse_loss, make_data(100), epochs=None, steps=7, batch_size=32)  # 4 batches / epoch
    assert len(history.step_losses) == 7
    assert history.epochs_run == 2  # one full epoch and a partial one
    with pytest.raises(ValueError, match="exactly one of epochs"):
        quick_train(model, mse_loss, make_data(100), epochs=2, steps=7)
    with pytest.raises(ValueError, match="steps"):
        quick_train(model, mse_loss, make_data(100), epochs=None, steps=0)


def test_exploding_loss_raises_divergence_error_before_the_step():
    from course_utils.training import DivergenceError

    seed_everything(0)
    model = make_autoencoder()
    state = {"calls": 0, "weights": None}

    def exploding(m, b):
        state["calls"] += 1
        loss = mse_loss(m, b)
        if state["calls"] == 3:
            state["weights"] = snapshot(m)
            return loss + 1e6
        return loss

    objectives = _two_objectives(model, max_abs_loss=100.0)
    objectives[0].loss_fn = exploding
    with pytest.raises(DivergenceError) as caught:
        quick_train(model, objectives, make_data(64), epochs=2, batch_size=16)
    error = caught.value
    assert isinstance(error, NonFiniteLossError)  # callers that catch NonFiniteLossError catch this too
    assert "training diverged" in str(error) and "a loss" in str(error) and "100" in str(error)
    assert "learning rate" in str(error) and "[0, 1]" in str(error)
    assert (error.epoch, error.step, error.quantity) == (1, 3, "a loss")
    assert_same_weights(model, state["weights"])


def test_non_finite_loss_of_a_second_objective_names_it():
    seed_everything(0)
    model = make_autoencoder()
    objectives = _two_objectives(model, every_second=1, second_loss=lambda m, b: mse_loss(m, b) * math.nan)
    with pytest.raises(NonFiniteLossError, match="non-finite b loss"):
        quick_train(model, objectives, make_data(64), epochs=1, batch_size=16)


def test_objectives_bad_arguments():
    from course_utils.training import Objective

    model = make_autoencoder()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="every"):
        Objective("a", mse_loss, opt, every=0)
    with pytest.raises(ValueError, match="max_abs_loss"):
        Objective("a", mse_loss, opt, max_abs_loss=-1.0)
    with pytest.raises(ValueError, match="name"):
        Objective("a/b", mse_loss, opt)
    with pytest.raises(ValueError, match="distinct"):
        quick_train(model, [Objective("a", mse_loss, opt), Objective("a", mse_loss, opt)], make_data(8))
    with pytest.raises(ValueError, match="optimizer"):
        quick_train(model, [Objective("a", mse_loss, opt)], make_data(8), optimizer=opt)
    with pytest.raises(ValueError, match="amp"):
        quick_train(model, [Objective("a", mse_loss, opt)], make_data(8), amp=True)
