"""GFN2-xTB labels (tblite) in the implicit solvent of the sampling: the cheap level of theory that the
FDH foundation potential is pre-trained on, before DFT fine-tuning.

The level is recorded as GFN2-xTB (not DFT) in every record's provenance; tblite's ALPB-type generalized
Born solvation (P16 kernel, polar part only) with dielectric constant ``solvent_eps`` (4 by default, as the
C-PCM of the DFT labels); ``None`` for the gas phase. SCF failures become recorded failures, never data.
"""

from __future__ import annotations

from mlff.data.labelers.ase_calc import ASELabeler
from mlff.data.labelers.base import charge_and_multiplicity
from mlff.errors import MLFFError

__all__ = ["SOLVENT_EPS", "XTBLabeler", "xtb_calculator", "xtb_level"]

SOLVENT_EPS = 4.0  # dielectric constant of the implicit solvent (protein-like; the DFT labels use C-PCM eps=4)


def xtb_calculator(atoms, *, solvent_eps: float | None = SOLVENT_EPS):
    """A quiet tblite GFN2-xTB ASE calculator for ``atoms.info`` charge and multiplicity (uhf = multiplicity - 1)."""
    try:
        from tblite.ase import TBLite
    except ImportError as error:
        raise MLFFError("GFN2-xTB needs tblite: pip install 'mlff[data]'") from error
    charge, multiplicity = charge_and_multiplicity(atoms)
    solvation = None if solvent_eps is None else ("gbe", float(solvent_eps), "p16")
    return TBLite(method="GFN2-xTB", charge=charge, multiplicity=multiplicity, verbosity=0, solvation=solvation)


def xtb_level(solvent_eps: float | None = SOLVENT_EPS) -> dict:
    """The provenance of a GFN2-xTB label (the keys of ``ASELabeler.level``)."""
    try:
        from importlib.metadata import version

        code_version = version("tblite")
    except Exception:  # noqa: BLE001 - tblite missing: the calculator itself says so when used
        code_version = ""
    solvent = "none (gas phase)" if solvent_eps is None else \
        f"tblite ALPB-type generalized Born (GBE, P16 kernel, polar), eps={float(solvent_eps):g}"
    return {"method": "GFN2-xTB", "functional": "", "basis": "", "dispersion": "D4 (part of GFN2-xTB)",
            "solvent": solvent, "code": "tblite", "code_version": code_version}


class XTBLabeler(ASELabeler):
    """GFN2-xTB energies (eV) and forces (eV/Å) with tblite, one fresh calculator per structure."""

    def __init__(self, *, solvent_eps: float | None = SOLVENT_EPS, forces: bool = True):
        if solvent_eps is not None and not solvent_eps >= 1.0:
            raise MLFFError(f"solvent_eps must be >= 1 (or None for the gas phase), got {solvent_eps}")
        self.solvent_eps = solvent_eps
        super().__init__(lambda atoms: xtb_calculator(atoms, solvent_eps=solvent_eps), name="gfn2-xtb",
                         level=xtb_level(solvent_eps), forces=forces)

    def __repr__(self) -> str:
        return f"XTBLabeler(solvent_eps={self.solvent_eps!r})"

    def check(self, structures) -> None:
        """Refuse now, without a calculation, what would fail every label: tblite missing, an impossible charge
        or multiplicity of one of ``structures``."""
        try:
            import tblite.ase  # noqa: F401
        except ImportError as error:
            raise MLFFError(f"GFN2-xTB needs tblite: pip install 'mlff[data]' ({error})") from None
        for k, atoms in enumerate(structures):
            try:
                charge_and_multiplicity(atoms)
            except MLFFError as err:
                raise MLFFError(f"structure {k}: {err}") from None
