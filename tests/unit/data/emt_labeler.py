"""A cheap, deterministic labelling backend for tests (ASE's EMT), optionally slow, optionally failing."""

import time

import numpy as np
from ase.build import molecule
from ase.calculators.emt import EMT

from mlff.data.labelers.base import LabelResult


class EMTLabeler:
    name = "emt-test"

    def __init__(self, delay_s: float = 0.0, fail_every: int = 0):
        self.delay_s, self.fail_every, self.calls = delay_s, fail_every, 0

    def level(self) -> dict:
        return {"method": "EMT", "functional": "", "basis": "", "dispersion": "", "solvent": "gas",
                "code": "ase", "code_version": "test"}

    def compute(self, atoms) -> LabelResult:
        self.calls += 1
        time.sleep(self.delay_s)
        if self.fail_every and round(atoms.info["k"]) % self.fail_every == 0:
            return LabelResult(None, None, converged=False, reason="SCF not converged after 2 cycles")
        a = atoms.copy()
        a.calc = EMT()
        return LabelResult(a.get_potential_energy(), a.get_forces(), converged=True, wall_s=self.delay_s,
                           info={"cycles": 1})


def structures(n: int) -> list:
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        atoms = molecule("CH3OH")
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        atoms.info.update(k=k, source=f"test geometry {k}", charge=0, multiplicity=1)
        out.append(atoms)
    return out


if __name__ == "__main__":  # the run that the test kills: label 12 structures slowly into argv[1]
    import sys

    from mlff.data import label

    label(structures(12), EMTLabeler(delay_s=0.25, fail_every=5), sys.argv[1], progress=False)
