"""The training loss: weighted energy/force/stress terms normalised by the global batch; a batch mixing
clusters (no stress) with periodic cells (stress) gives finite gradients that include the stress term."""

import numpy as np
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from helpers import config, emt_records

from mlff import build_potential
from mlff.data import make_record
from mlff.train.config import train_config
from mlff.train.data import build_graphs
from mlff.train.loop import Trainer


def _periodic(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = bulk("C", "diamond", a=3.57).repeat(2)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        atoms.calc = EMT()
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = None
        out.append(make_record(atoms, energy=e, forces=f, stress=s))
    return out


def _trainer(small_config, records, tmp_path, stress_weight):
    graphs = build_graphs(records, small_config["r_max"])
    cfg = train_config(config(small_config, tmp_path / "unused.h5", tmp_path,
                              loss={"energy_weight": 2.0, "forces_weight": 10.0, "stress_weight": stress_weight},
                              optim={"clip_grad_norm": None, "lr": 1e-3}))
    potential = build_potential(small_config, seed=3)
    return Trainer(potential, graphs, np.arange(len(records)), [], cfg, tmp_path, seed=0), graphs, potential


def test_mixed_batch_loss_is_exact_and_gradients_finite(small_config, tmp_path):
    records = emt_records(2, seed=3) + _periodic(2, seed=4)
    trainer, graphs, potential = _trainer(small_config, records, tmp_path, stress_weight=50.0)
    batch = np.array([0, 2, 1, 3])
    expected, n_atoms = 0.0, sum(len(r) for r in records)
    for k in batch:
        out = potential.evaluate(graphs.batch([k])[0], stress=bool(graphs.has_stress[k]))
        ref = records[k].calc.results
        expected += 2.0 * ((float(out["energy"][0]) - ref["energy"]) / len(records[k])) ** 2 / 4
        expected += 10.0 * float(((out["forces"].numpy() - ref["forces"]) ** 2).sum()) / (3 * n_atoms)
        if "stress" in out:
            from ase.stress import voigt_6_to_full_3x3_stress

            expected += 50.0 * float(((out["stress"][0].numpy() - voigt_6_to_full_3x3_stress(ref["stress"])) ** 2).sum()) / 18
    loss = trainer._step(batch)
    assert abs(loss - expected) < 1e-10 * expected
    grads = [p.grad for _, p in trainer.named if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)


def test_stress_term_changes_the_gradient(small_config, tmp_path):
    records = emt_records(1, seed=5) + _periodic(1, seed=6)
    grads = []
    for weight in (0.0, 50.0):
        trainer, _, _ = _trainer(small_config, records, tmp_path, stress_weight=weight)
        trainer._step(np.array([0, 1]))
        grads.append(torch.cat([p.grad.reshape(-1) for _, p in trainer.named if p.grad is not None]))
    assert not torch.allclose(grads[0], grads[1])


def _bookkeeping_trainer(small_config, tmp_path, **overrides):
    records = emt_records(2, seed=7)
    graphs = build_graphs(records, small_config["r_max"])
    cfg = train_config(config(small_config, tmp_path / "unused.h5", tmp_path, patience=2, max_epochs=50,
                              optim={"lr": 0.01, "plateau_patience": 1, "plateau_factor": 0.5}, **overrides))
    trainer = Trainer(build_potential(small_config, seed=3), graphs, [0], [1], cfg, tmp_path, seed=0)
    return trainer


def _epochs(trainer, losses):
    for loss in losses:
        trainer.validate = lambda loss=loss: {"valid_loss": loss, "valid_energy_rmse_meV_atom": 1.0,
                                              "valid_forces_rmse_meV_A": 1.0}
        trainer._enter_stage_two()
        trainer._end_epoch(0.0)


def test_early_stopping_plateau_lr_and_best_weights(small_config, tmp_path):
    trainer = _bookkeeping_trainer(small_config, tmp_path)
    _epochs(trainer, [3.0, 1.0])
    best = {k: v.clone() for k, v in trainer.best.items()}
    with torch.no_grad():  # the weights move after the best epoch; the best snapshot must not
        for ema in trainer.ema.values():
            ema.add_(1.0)
    _epochs(trainer, [2.0])
    assert not trainer.state["early_stopped"] and trainer.opt.param_groups[0]["lr"] == 0.01
    _epochs(trainer, [2.5])
    assert trainer.state["early_stopped"] and trainer.state["since_best"] == 2
    assert trainer.opt.param_groups[0]["lr"] == 0.005  # plateau: 2 epochs > patience 1 without improvement
    assert all(torch.equal(best[k], trainer.best[k]) for k in best)
    trainer._finish()
    assert all(torch.equal(p, best[n]) for n, p in trainer.named)  # the run ends on the best weights


def test_patience_in_stage_one_starts_stage_two(small_config, tmp_path):
    trainer = _bookkeeping_trainer(small_config, tmp_path, stage_two={"start_epoch": 40, "lr": 0.001,
                                                                       "energy_weight": 500.0})
    _epochs(trainer, [1.0, 2.0, 2.0])
    assert not trainer.state["early_stopped"] and trainer.state["stage_two_from"] == 3
    _epochs(trainer, [5.0])  # the next epoch runs in stage two: new weights, lr, best loss
    assert trainer.state["stage"] == 2 and trainer.weights()[0] == 500.0
    assert trainer.opt.param_groups[0]["lr"] == 0.001 and trainer.state["best_loss"] == 5.0
