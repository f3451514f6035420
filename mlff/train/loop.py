"""The trainer of one model: weighted energy/force/stress loss through ``Potential.evaluate(training=True)``,
AMSGrad/AdamW, EMA, plateau or cosine LR, a second stage, early stopping, gradient clipping, data parallel
over processes, and checkpoints from which a run resumes exactly (every epoch, and on SIGTERM/SIGUSR1).
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from mlff.errors import MLFFError
from mlff.signals import SignalFlag
from mlff.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from mlff.train.ddp import Dist
from mlff.train.metrics import predict

__all__ = ["Trainer"]



def _optimizer(params, c):
    if c.name == "adamw":
        return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
    return torch.optim.Adam(params, lr=c.lr, amsgrad=True, weight_decay=c.weight_decay)


def _scheduler(opt, config, stage: int):
    c = config.optim
    if stage == 2 or c.scheduler == "none":
        return None  # stage two runs at the constant stage_two.lr
    if c.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(config.max_epochs, 1), eta_min=c.min_lr)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=c.plateau_factor, patience=c.plateau_patience,
                                                      min_lr=c.min_lr)


class Trainer:
    """Trains member 0 of ``potential`` on records ``train_idx`` of ``graphs`` (a GraphSet on the device).

    ``train_idx`` may repeat records (a bootstrap resample). ``run_dir`` receives ``checkpoint.pt``.
    ``heads`` ([R] indices into the model's heads, or None: the potential's head) is the head each record trains.
    ``on_step(trainer)`` is called after every optimizer step (tests use it to stop a run midway).
    """

    def __init__(self, potential, graphs, train_idx, valid_idx, config, run_dir, *, seed: int,
                 dist: Dist | None = None, on_step=None, progress=None, heads=None):
        self.potential, self.graphs, self.config, self.seed = potential, graphs, config, seed
        self.model = potential.members[0]
        self.train_idx, self.valid_idx = np.asarray(train_idx, np.int64), np.asarray(valid_idx, np.int64)
        self.dist = dist or Dist()
        self.on_step, self.progress = on_step, progress
        self.heads = None if heads is None else torch.as_tensor(heads, dtype=torch.int64, device=potential.device)
        self.checkpoint_path = Path(run_dir) / "checkpoint.pt"
        self.n_atoms = graphs.n_atoms.cpu().numpy()
        self.has_stress = graphs.has_stress.cpu().numpy()
        self.named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.opt = _optimizer([p for _, p in self.named], config.optim)
        self.sched = _scheduler(self.opt, config, 1)
        self.ema = {n: p.detach().clone() for n, p in self.named} if config.optim.ema_decay else None
        self.best: dict | None = None
        self.log: list[dict] = []
        self.state = {"epoch": 0, "step": 0, "global_step": 0, "stage": 1, "stage_two_from": config.stage_two.start_epoch,
                      "best_loss": None, "since_best": 0, "train_sum": 0.0, "train_batches": 0, "done": False,
                      "early_stopped": False}
        self.stop_requested = False
        self._signal = SignalFlag()  # SIGTERM / SIGUSR1 during run()

    # ---- state -------------------------------------------------------------------------------
    def request_stop(self, *_) -> None:
        """Write a checkpoint after the current step and return (as SIGTERM/SIGUSR1 do during ``run``)."""
        self.stop_requested = True

    def _payload(self) -> dict:
        return {"format": "mlff.train.checkpoint", "model": self.model.state_dict(), "ema": self.ema,
                "best": self.best, "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict() if self.sched is not None else None,
                "state": dict(self.state), "log": list(self.log), "rng": rng_state()}

    def save(self) -> None:
        if self.dist.main:
            from mlff.train.report import write_log

            save_checkpoint(self.checkpoint_path, self._payload())
            write_log(self.checkpoint_path.parent / "log.csv", self.log)
        self.dist.barrier()

    def resume(self) -> None:
        """Continue from ``checkpoint.pt`` exactly where it was written."""
        ck = load_checkpoint(self.checkpoint_path)
        self.state = dict(ck["state"])
        self.model.load_state_dict(ck["model"])
        if self.state["stage"] == 2:
            self.sched = _scheduler(self.opt, self.config, 2)
        self.opt.load_state_dict(ck["optimizer"])
        if self.sched is not None and ck["scheduler"] is not None:
            self.sched.load_state_dict(ck["scheduler"])
        device = self.potential.device
        to_device = (lambda d: None if d is None else {n: t.to(device) for n, t in d.items()})
        self.ema, self.best, self.log = to_device(ck["ema"]), to_device(ck["best"]), list(ck["log"])
        set_rng_state(ck["rng"])

    @contextmanager
    def ema_weights(self):
        """The EMA weights in the model for evaluation, the training weights back afterwards."""
        if self.ema is None:
            yield
            return
        saved = {n: p.detach().clone() for n, p in self.named}
        with torch.no_grad():
            for n, p in self.named:
                p.copy_(self.ema[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.named:
                    p.copy_(saved[n])

    # ---- one step ----------------------------------------------------------------------------
    def weights(self) -> tuple[float, float, float]:
        c = self.config.stage_two if self.state["stage"] == 2 else self.config.loss
        return c.energy_weight, c.forces_weight, c.stress_weight

    def _loss(self, out: dict, labels: dict, n_sys: int, n_atoms: int, n_stress: int) -> torch.Tensor:
        w_e, w_f, w_s = self.weights()
        de = (out["energy"] - labels["energy"]) / labels["n_atoms"]
        loss = w_e * de.pow(2).sum() / n_sys + w_f * (out["forces"] - labels["forces"]).pow(2).sum() / (3 * n_atoms)
        if "stress" in out:  # only systems with stress labels are evaluated with stress
            loss = loss + w_s * (out["stress"] - labels["stress"]).pow(2).sum() / (9 * n_stress)
        return loss

    def _step(self, batch: np.ndarray) -> float:
        """One optimizer step on the global batch ``batch``; this process takes its share of it."""
        local = np.array_split(batch, self.dist.world)[self.dist.rank]
        n_atoms, n_stress = int(self.n_atoms[batch].sum()), int(self.has_stress[batch].sum())
        self.opt.zero_grad(set_to_none=True)
        loss = torch.zeros((), dtype=self.potential.dtype, device=self.potential.device)
        # systems with and without stress labels go through separate evaluations: a cluster has no volume, and
        # its (undefined) stress would turn the gradient into NaN even when masked out of the loss
        with_stress = self.has_stress[local] if self.weights()[2] > 0 else np.zeros(len(local), bool)
        for part, stress in ((local[with_stress], True), (local[~with_stress], False)):
            if len(part):
                graph, labels = self.graphs.batch(part)
                heads = None if self.heads is None else self.heads[torch.as_tensor(part, device=self.heads.device)]
                out = self.potential.evaluate(graph, forces=True, stress=stress, training=True, heads=heads)
                part_loss = self._loss(out, labels, len(batch), n_atoms, n_stress)
                part_loss.backward()
                loss = loss + part_loss.detach()
        loss = self.dist.allreduce_grads([p for _, p in self.named], loss)
        if self.config.optim.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for _, p in self.named], self.config.optim.clip_grad_norm)
        self.opt.step()
        self.state["global_step"] += 1
        self._update_ema()
        return float(loss)

    def _update_ema(self) -> None:
        if self.ema is None:
            return
        n = self.state["global_step"]
        decay = min(self.config.optim.ema_decay, (1 + n) / (10 + n))
        with torch.no_grad():
            for name, p in self.named:
                self.ema[name].lerp_(p.detach(), 1.0 - decay)

    def _batches(self, epoch: int) -> list[np.ndarray]:
        """The global batches of ``epoch``: a permutation that depends only on (seed, epoch)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = self.train_idx[torch.randperm(len(self.train_idx), generator=g).numpy()]
        size = self.config.batch_size
        return [order[k:k + size] for k in range(0, len(order), size)]

    # ---- validation and epoch bookkeeping ----------------------------------------------------
    def validate(self) -> dict:
        """Validation loss and RMSEs with the EMA weights; under DDP each process scores its share of the
        validation records and the sums of squares are added up over processes."""
        if len(self.valid_idx) == 0:
            return {}
        mine = np.array_split(self.valid_idx, self.dist.world)[self.dist.rank]
        sums = np.zeros(4)  # [sum (dE/N)^2 eV^2, systems, sum dF^2 (eV/Å)^2, force components]
        if len(mine):
            with self.ema_weights():
                p = predict(self.potential, self.graphs, mine, self.config.valid_batch_size)
            sums[:] = (np.sum(((p.energy - p.energy_ref) / p.n_atoms) ** 2), len(mine),
                       np.sum((p.forces - p.forces_ref) ** 2), p.forces.size)
        sums = self.dist.sum(sums)
        w_e, w_f, _ = self.weights()
        mse_e, mse_f = sums[0] / sums[1], sums[2] / sums[3]
        return {"valid_loss": float(w_e * mse_e + w_f * mse_f), "valid_energy_rmse_meV_atom": 1000 * float(np.sqrt(mse_e)),
                "valid_forces_rmse_meV_A": 1000 * float(np.sqrt(mse_f))}

    def _enter_stage_two(self) -> None:
        start = self.state["stage_two_from"]
        if self.state["stage"] == 2 or start is None or self.state["epoch"] < start:
            return
        self.state.update(stage=2, best_loss=None, since_best=0)
        for group in self.opt.param_groups:
            group["lr"] = self.config.stage_two.lr
        self.sched = _scheduler(self.opt, self.config, 2)

    def _end_epoch(self, seconds: float) -> None:
        st = self.state
        st["epoch"] += 1
        row = {"epoch": st["epoch"], "stage": st["stage"], "lr": self.opt.param_groups[0]["lr"],
               "train_loss": st["train_sum"] / max(st["train_batches"], 1), "epoch_time_s": seconds}
        if st["epoch"] % self.config.eval_every == 0 or st["epoch"] == self.config.max_epochs:
            row.update(self.validate())
        st.update(step=0, train_sum=0.0, train_batches=0)
        if isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if "valid_loss" in row:
                self.sched.step(row["valid_loss"])
        elif self.sched is not None:
            with warnings.catch_warnings():  # after a resume at the end of an epoch no step ran in this process
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                self.sched.step()
        if "valid_loss" in row:
            if st["best_loss"] is None or row["valid_loss"] < st["best_loss"]:
                st.update(best_loss=row["valid_loss"], since_best=0)
                src = self.ema if self.ema is not None else {n: p.detach() for n, p in self.named}
                self.best = {n: t.clone() for n, t in src.items()}
            else:
                st["since_best"] += self.config.eval_every
        patience = self.config.patience
        if patience is not None and st["since_best"] >= patience:
            if st["stage"] == 1 and self.config.stage_two.start_epoch is not None:
                st["stage_two_from"] = st["epoch"]  # stage one has converged: go on with stage two
            else:
                st["early_stopped"] = True
        self.log.append(row)

    # ---- the run -----------------------------------------------------------------------------
    def run(self) -> str:
        """Train to the end ("done"), or until a stop request ("stopped": a checkpoint was written)."""
        self._agree()
        if not self.log and self.state["global_step"] == 0:
            self.log.append({"epoch": 0, "stage": 1, "lr": self.opt.param_groups[0]["lr"], **self.validate()})
        with self._signal:
            while not self.state["done"]:
                if self.state["epoch"] >= self.config.max_epochs or self.state["early_stopped"]:
                    self._finish()
                    break
                if self._run_epoch() == "stopped":
                    return "stopped"
        self.save()
        return "done"

    def _agree(self) -> None:
        """Every process starts from the same point of the run. Its all-reduce is also a barrier that keeps
        rank 0 from writing the next checkpoint before every process has read this one: a run resumed at the
        end of an epoch writes one at once, with no collective before it, and a slower process would read that
        one instead, run one epoch ahead and leave both waiting for each other forever."""
        here = np.array([self.state["epoch"], self.state["step"], self.state["global_step"], len(self.log)], float)
        total = self.dist.sum(np.concatenate([here, here ** 2]))  # all equal <=> (sum x)^2 == n sum x^2, on every rank
        if not np.array_equal(total[:4] ** 2, self.dist.world * total[4:]):
            raise MLFFError(f"the {self.dist.world} processes do not start from the same point of the run (this one, "
                            f"rank {self.dist.rank}: epoch {self.state['epoch']}, step {self.state['step']}, global step "
                            f"{self.state['global_step']}): did every process read {self.checkpoint_path}?")

    def _run_epoch(self) -> str:
        self._enter_stage_two()
        batches = self._batches(self.state["epoch"])
        t0 = time.perf_counter()
        for b in range(self.state["step"], len(batches)):
            loss = self._step(batches[b])
            self.state.update(step=b + 1, train_sum=self.state["train_sum"] + loss,
                              train_batches=self.state["train_batches"] + 1)
            if self.on_step is not None:
                self.on_step(self)
            if self.progress is not None:
                self.progress.step(self.state["epoch"] + 1, self.config.max_epochs, b + 1, len(batches))
            if self.dist.any(self.stop_requested or self._signal.received is not None):
                self.save()
                return "stopped"
        self._end_epoch(time.perf_counter() - t0)
        if self.progress is not None:
            self.progress(self.log[-1], self.config.max_epochs)
        self.save()
        return "epoch"

    def _finish(self) -> None:
        """Final weights: the best validated (EMA) weights, else the EMA, else the trained ones."""
        final = self.best if self.best is not None else self.ema
        if final is not None:
            with torch.no_grad():
                for n, p in self.named:
                    p.copy_(final[n])
        self.state["done"] = True
