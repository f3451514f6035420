"""The FDH active-site QM cluster: formate (or CO2), the nicotinamide end of NAD+ (or NADH) and side-chain models.

Non-metal formate dehydrogenase moves a hydride from the formate C-H to C4 of the NAD+ nicotinamide ring,
HCOO- + NAD+ -> CO2 + NADH. The reaction coordinate is xi = d(C_formate-H) - d(H-C4) in Å: about -1.1 for the
reactant, +1.1 for the product.

The geometry is a model built from chemical rules (fragments from SMILES with RDKit ETKDG + MMFF, placed by
explicit H-bond and stacking rules) and relaxed with GFN2-xTB (ALPB-type implicit solvent, eps = 4) with the
capping methyl groups fixed: it is not taken from a crystal structure. Frame of the build: C4 at the origin,
the nicotinamide ring in the xy plane with N1 on -x and the carboxamide on +y, the formate above it on +z.
See data/fdh-cluster/README.md for every fragment, distance and choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

from mlff.errors import MLFFError

__all__ = ["SIZES", "STATES", "build_cluster", "isolated_atoms", "load_cluster", "reaction_coordinate"]

SIZES = ("small", "medium", "large")
STATES = ("reactant", "product")
CH_A = 1.10  # C-H bond of formate and of C4-H in NADH
C_C4_REACTANT_A = 3.30  # C(formate)...C4, formate C-H pointing at C4 along the ring normal
NH_O_A = 2.85  # N...O of the N-H...O hydrogen bonds imposed before relaxation
OH_O_A = 2.80  # O...O of the water O-H...O hydrogen bond
RELAX_FMAX_EV_PER_A = 0.03
RELAX_STEPS = 600
SHIPPED = Path(__file__).resolve().parents[2] / "data" / "fdh-cluster"  # cluster_<size>_<state>.xyz

# fragment SMILES: heavy atoms in SMILES order, then RDKit's explicit H atoms
SMILES = {
    "nicotinamide": "C[n+]1cccc(C(N)=O)c1",  # 0 CH3 (ribose C1'), 1 N1, 2 C6, 3 C5, 4 C4, 5 C3, 6 C7, 7 N7, 8 O7, 9 C2
    "guanidinium": "CNC(N)=[NH2+]",  # 0 Cd (cap), 1 Ne, 2 Cz, 3 Nh1, 4 Nh2
    "imidazole": "Cc1c[nH]cn1",  # 0 Cb (cap), 1 Cg, 2 Cd2, 3 Ne2-H, 4 Ce1, 5 Nd1
    "acetamide": "CC(N)=O",  # 0 Cb/Cg (cap), 1 C, 2 N, 3 O
    "nma": "CC(=O)NC",  # 0 Ca(121) (cap), 1 C, 2 O, 3 N, 4 Ca(122) (cap)
    "propane": "CCC",
}
_cache: dict = {}


@dataclass
class _Fragment:
    name: str  # what it stands for
    symbols: list
    positions: np.ndarray  # [n, 3] Å
    charge: int = 0
    fixed: list = field(default_factory=list)  # local indices of capping atoms
    mol: object = None  # the RDKit molecule, for neighbour look-ups


def reaction_coordinate(atoms: Atoms) -> float:
    """xi = d(C_formate-H) - d(H-C4) in Å, from ``atoms.info["xi_atoms"]`` = [c_formate, h_transfer, c4]."""
    indices = atoms.info.get("xi_atoms")
    if indices is None or len(indices) != 3:
        raise MLFFError(f"{atoms.get_chemical_formula()} has no info['xi_atoms'] = [c_formate, h, c4]; "
                        "build it with mlff.data.cluster.build_cluster")
    c, h, c4 = (int(i) for i in indices)
    p = atoms.positions
    return float(np.linalg.norm(p[c] - p[h]) - np.linalg.norm(p[h] - p[c4]))


def isolated_atoms() -> dict:
    """Single H, C, N, O atoms in their ground-state multiplicities (2, 3, 4, 3), neutral, for the E0s."""
    out = {}
    for symbol, multiplicity in (("H", 2), ("C", 3), ("N", 4), ("O", 3)):
        atoms = Atoms(symbol, positions=[[0.0, 0.0, 0.0]])
        atoms.info.update(charge=0, multiplicity=multiplicity, source=f"isolated {symbol} atom for E0")
        out[symbol] = atoms
    return out


def load_cluster(size: str = "small", state: str = "reactant") -> Atoms:
    """The shipped relaxed cluster (data/fdh-cluster/cluster_<size>_<state>.xyz, made by ``build_cluster``
    with seed 0): no RDKit or xTB needed. Capping atoms come back fixed (FixAtoms) and ``info`` carries
    charge, multiplicity, xi_atoms, fixed, fragment names and starts."""
    from ase.io import read

    _check_size_state(size, state)
    path = SHIPPED / f"cluster_{size}_{state}.xyz"
    if not path.is_file():
        raise MLFFError(f"shipped cluster {path} not found; regenerate it with "
                        "'python workflows/fdh_dataset.py --stage clusters' or use build_cluster")
    atoms = read(path, format="extxyz")
    atoms.set_constraint(FixAtoms(indices=[int(i) for i in atoms.info["fixed"]]))
    for key in ("xi_atoms", "fixed", "fragment_starts"):
        atoms.info[key] = [int(i) for i in atoms.info[key]]
    return atoms


def _check_size_state(size: str, state: str) -> None:
    if size not in SIZES:
        raise MLFFError(f"cluster size {size!r} unknown; expected one of {', '.join(SIZES)}")
    if state not in STATES:
        raise MLFFError(f"cluster state {state!r} unknown; expected one of {', '.join(STATES)}")


def build_cluster(size: str = "small", state: str = "reactant", seed: int = 0) -> Atoms:
    """The FDH active-site cluster, GFN2-xTB relaxed with the caps fixed; deterministic for a given seed.

    small (39 atoms): formate, 1-methylnicotinamide, methylguanidinium (Arg284), water.
    medium (60): + 4-methylimidazole (His332), acetamide (Asn146).
    large (92): + N-methylacetamide (Ile122 backbone N-H), acetamide (Gln313), propane (hydrophobic wall).
    The product has the same atoms in the same order, with the hydride moved onto C4 and relaxed again.
    """
    _check_size_state(size, state)
    key = (size, state, int(seed))
    if key not in _cache:
        if state == "reactant":
            atoms = _relaxed(_assemble(size, int(seed)), seed=int(seed))
        else:
            atoms = _relaxed(_to_product(build_cluster(size, "reactant", seed)), seed=int(seed))
        atoms.info["source"] = f"build_cluster {size} {state} seed {seed}, GFN2-xTB (eps=4 ALPB) relaxed"
        _cache[key] = atoms
    return _cache[key].copy()


# ---- fragments --------------------------------------------------------------------------------------------


def _rdkit():
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError as error:
        raise MLFFError("building the FDH cluster needs RDKit: pip install 'mlff[data]'") from error
    return Chem, AllChem


def _from_smiles(key: str, name: str, seed: int, charge: int = 0, caps=(0,), dihedral=None) -> _Fragment:
    """A fragment from SMILES: ETKDG embedding and MMFF relaxation; caps = methyl carbons, fixed with their H."""
    Chem, AllChem = _rdkit()
    from rdkit.Chem import rdMolTransforms

    mol = Chem.AddHs(Chem.MolFromSmiles(SMILES[key]))
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed) + 1
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise MLFFError(f"RDKit could not embed {SMILES[key]} (seed {seed})")
    if dihedral is not None:
        rdMolTransforms.SetDihedralDeg(mol.GetConformer(), *dihedral)
    AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    fixed = []
    for cap in caps:
        fixed += [cap] + [n.GetIdx() for n in mol.GetAtomWithIdx(cap).GetNeighbors() if n.GetSymbol() == "H"]
    symbols = [a.GetSymbol() for a in mol.GetAtoms()]
    return _Fragment(name, symbols, mol.GetConformer().GetPositions(), charge, sorted(fixed), mol)


def _hydrogens(fragment: _Fragment, heavy: int) -> list:
    return [n.GetIdx() for n in fragment.mol.GetAtomWithIdx(heavy).GetNeighbors() if n.GetSymbol() == "H"]


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _rotation(axis, angle_rad: float) -> np.ndarray:
    """Rodrigues rotation matrix [3, 3] about ``axis``."""
    k = _unit(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * kx + (1 - np.cos(angle_rad)) * kx @ kx


def _align(a, b) -> np.ndarray:
    """The smallest rotation [3, 3] taking direction ``a`` onto direction ``b``."""
    a, b = _unit(a), _unit(b)
    axis = np.cross(a, b)
    if np.linalg.norm(axis) < 1e-8:
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
    return _rotation(axis, np.arccos(np.clip(a @ b, -1.0, 1.0)))


def _kabsch(moving, target) -> tuple:
    """Rotation [3, 3] and translation [3] that best map points ``moving`` [k, 3] onto ``target`` [k, 3]."""
    cm, ct = moving.mean(0), target.mean(0)
    u, _, vt = np.linalg.svd((moving - cm).T @ (target - ct))
    d = np.sign(np.linalg.det(u @ vt))
    rot = (u @ np.diag([1.0, 1.0, d]) @ vt).T
    return rot, ct - rot @ cm


def _dock(fragment, donor, hydrogen, acceptor_xyz, direction, cap, out, distance_A) -> None:
    """Put ``donor`` at ``acceptor + distance * direction`` with donor-H pointing at the acceptor and ``cap``
    turned, about that line, as far as it goes towards ``out``. Moves the fragment in place."""
    d = _unit(direction)
    p = fragment.positions - fragment.positions[donor]
    p = p @ _align(p[hydrogen], -d).T
    c, o = p[cap] - (p[cap] @ d) * d, np.asarray(out, float) - (np.asarray(out, float) @ d) * d
    p = p @ _rotation(d, np.arctan2(d @ np.cross(c, o), c @ o)).T
    fragment.positions = p + np.asarray(acceptor_xyz) + distance_A * d


# ---- placement rules ---------------------------------------------------------------------------------------


def _nicotinamide(seed: int) -> _Fragment:
    """1-methylnicotinamide cation, carbonyl O syn to C4, ring in the xy plane, C4 at 0, N1 on -x, C3 on +y."""
    frag = _from_smiles("nicotinamide", "nicotinamide of NAD+ (N1-methyl: ribose C1')", seed, charge=1,
                        dihedral=(4, 5, 6, 8, 0.0))
    p = frag.positions - frag.positions[4]
    x = _unit(-p[1])
    z = _unit(np.cross(p[5], p[3]))
    z = z - (z @ x) * x
    y = np.cross(_unit(z), x)
    frame = np.array([x, y, _unit(z)])
    frag.positions = p @ frame.T
    if frag.positions[5, 1] < 0:  # C3 on +y: mirror through the xz plane (the fragment is planar)
        frag.positions[:, 1] *= -1
    return frag


def _formate() -> _Fragment:
    """HCOO- above C4: C at z = 3.3 Å, C-H pointing down the ring normal, O1 on -y, O2 on +y (O-C-H 115°)."""
    c = np.array([0.0, 0.0, C_C4_REACTANT_A])
    half = np.deg2rad(180.0 - 115.0)
    o1 = c + 1.25 * np.array([0.0, -np.sin(half), np.cos(half)])
    o2 = c + 1.25 * np.array([0.0, np.sin(half), np.cos(half)])
    return _Fragment("formate", ["C", "O", "O", "H"], np.array([c, o1, o2, c - [0, 0, CH_A]]), charge=-1)


def _guanidinium(seed: int, formate: _Fragment) -> _Fragment:
    """Methylguanidinium (Arg284, methyl = Cd) bidentate: Nh1-H...O1 and Nh2-H...O2, coplanar, above formate."""
    frag = _from_smiles("guanidinium", "Arg284 side chain (methylguanidinium, methyl = Cd)", seed, charge=1)
    c_f, o1 = formate.positions[0], formate.positions[1]
    cz = c_f + np.array([0.0, 0.0, (o1[2] - c_f[2]) + NH_O_A + 1.33 * 0.5])
    s, c = 1.33 * np.sin(np.pi / 3), 1.33 * np.cos(np.pi / 3)
    target = np.array([cz, cz + [0, -s, -c], cz + [0, s, -c], cz + [0, 0, 1.33]])
    rot, shift = _kabsch(frag.positions[[2, 3, 4, 1]], target)
    frag.positions = frag.positions @ rot.T + shift
    return frag


def _lone_pair(formate: _Fragment, oxygen: int, down: bool = True) -> np.ndarray:
    """Direction of an in-plane sp2 lone pair of a formate O, 60° from C=O: the one pointing down (or up)."""
    c, o = formate.positions[0], formate.positions[oxygen]
    normal = np.array([1.0, 0.0, 0.0])  # the formate plane is the yz plane
    pairs = [_rotation(normal, a) @ _unit(o - c) for a in (np.pi / 3, -np.pi / 3)]
    return min(pairs, key=lambda v: v[2]) if down else max(pairs, key=lambda v: v[2])


def _water(formate: _Fragment) -> _Fragment:
    """Water donating to O1 along its outer lone pair (down and out on -y), O...O 2.8 Å."""
    half = np.deg2rad(104.5) / 2
    pos = 0.96 * np.array([[0, 0, 0], [np.sin(half), np.cos(half), 0], [-np.sin(half), np.cos(half), 0]])
    frag = _Fragment("water", ["O", "H", "H"], pos)
    _dock(frag, 0, 1, formate.positions[1], _lone_pair(formate, 1), 2, [0.0, -1.0, 0.0], OH_O_A)
    return frag


def _medium_extras(seed: int, formate: _Fragment) -> list:
    """His332 (4-methylimidazole, Ne2-H...O2, beyond C4) and Asn146 (acetamide N-H...O1, over the ring)."""
    o1, o2 = formate.positions[1], formate.positions[2]
    his = _from_smiles("imidazole", "His332 side chain (4-methylimidazole, Ne2-H tautomer, methyl = Cb)", seed)
    _dock(his, 3, _hydrogens(his, 3)[0], o2, [1.0, 0.5, 0.3], 0, [1.0, 0.0, 0.0], NH_O_A)
    asn = _from_smiles("acetamide", "Asn146 side chain (acetamide, methyl = Cb)", seed)
    _dock(asn, 2, _anti_h(asn), o1, [-1.0, -0.5, 0.3], 0, [0.0, -1.0, 1.0], NH_O_A)
    return [his, asn]


def _anti_h(amide: _Fragment, n: int = 2, o: int = 3) -> int:
    """The amide N-H pointing away from the carbonyl O (anti to it)."""
    p = amide.positions
    return max(_hydrogens(amide, n), key=lambda h: np.linalg.norm(p[h] - p[o]))


def _large_extras(seed: int, formate: _Fragment, nic: _Fragment) -> list:
    """Ile122 backbone N-H...O2 (N-methylacetamide), Gln313 (acetamide, amide dimer with the carboxamide) and
    a propane (hydrophobic wall, all C fixed) beside the formate C-H on the +x/-y side."""
    o2 = formate.positions[2]
    nma = _from_smiles("nma", "Ile122 backbone N-H (N-methylacetamide, methyls = Ca121, Ca122)", seed,
                       caps=(0, 4))
    _dock(nma, 3, _hydrogens(nma, 3)[0], o2, [-1.0, 0.5, 0.3], 1, [0.0, 1.0, 1.0], NH_O_A)
    gln = _from_smiles("acetamide", "Gln313 side chain (acetamide, methyl = Cg)", seed)
    p = nic.positions
    h_syn = min(_hydrogens(nic, 7), key=lambda h: np.linalg.norm(p[h] - p[8]))  # carboxamide N-H syn to O
    d = _unit(p[h_syn] - p[7])
    h_gln = min(_hydrogens(gln, 2), key=lambda h: np.linalg.norm(gln.positions[h] - gln.positions[3]))
    _dock(gln, 2, h_gln, p[8], d, 3, p[h_syn] - (p[8] + NH_O_A * d), NH_O_A)
    wall = _from_smiles("propane", "hydrophobic wall (propane)", seed, caps=(0, 1, 2))
    wall.positions = wall.positions - wall.positions[1] + np.array([3.3, -2.6, 3.4])
    return [nma, gln, wall]


def _assemble(size: str, seed: int) -> Atoms:
    """The unrelaxed reactant: fragments placed by the rules above, joined in a fixed order."""
    formate, nic = _formate(), _nicotinamide(seed)
    fragments = [formate, nic, _guanidinium(seed, formate), _water(formate)]
    if size in ("medium", "large"):
        fragments += _medium_extras(seed, formate)
    if size == "large":
        fragments += _large_extras(seed, formate, nic)
    atoms, fixed, starts = Atoms(), [], []
    for frag in fragments:
        starts.append(len(atoms))
        fixed += [len(atoms) + i for i in frag.fixed]
        atoms += Atoms(frag.symbols, positions=frag.positions)
    atoms.info.update(charge=int(sum(f.charge for f in fragments)), multiplicity=1, cluster_size=size,
                      state="reactant", xi_atoms=[0, 3, starts[1] + 4], fixed=sorted(fixed),
                      fragment_names=[f.name for f in fragments], fragment_starts=starts)
    atoms.set_constraint(FixAtoms(indices=sorted(fixed)))
    atoms.info["hbonds"] = _designed_hbonds(atoms)
    _check_contacts(atoms, 0.9, "assembled")
    return atoms


def _designed_hbonds(atoms: Atoms) -> list:
    """[H, acceptor] pairs of the imposed hydrogen bonds: every H within 2.3 Å of a formate O (or, in the
    large cluster, of the carboxamide O), in the unrelaxed geometry."""
    acceptors = [1, 2] + ([atoms.info["fragment_starts"][1] + 8] if atoms.info["cluster_size"] == "large" else [])
    out = []
    for h in np.flatnonzero(atoms.numbers == 1):
        for a in acceptors:
            if h != 3 and atoms.get_distance(int(h), a) < 2.3:
                out.append([int(h), int(a)])
    return out


def _check_contacts(atoms: Atoms, min_A: float, what: str) -> None:
    d = atoms.get_all_distances() + np.eye(len(atoms)) * 10
    if d.min() < min_A:
        i, j = np.unravel_index(np.argmin(d), d.shape)
        raise MLFFError(f"{what} FDH cluster has atoms {i} and {j} {d.min():.2f} Å apart (minimum {min_A} Å)")


def _to_product(reactant: Atoms) -> Atoms:
    """The hydride moved onto C4, 1.1 Å along the ring normal on the formate side; CO2 left where it is."""
    atoms = reactant.copy()
    c, h, c4 = atoms.info["xi_atoms"]
    nic = atoms.info["fragment_starts"][1]
    ring = atoms.positions[[nic + i for i in (1, 2, 3, 4, 5, 9)]]
    normal = _unit(np.cross(ring[1] - ring[4], ring[2] - ring[5]))
    if normal @ (atoms.positions[c] - atoms.positions[c4]) < 0:
        normal = -normal
    atoms.positions[h] = atoms.positions[c4] + CH_A * normal
    atoms.info.update(state="product", charge=int(reactant.info["charge"]))
    names = list(atoms.info["fragment_names"])
    names[0], names[1] = "carbon dioxide", "dihydronicotinamide of NADH (N1-methyl: ribose C1')"
    atoms.info["fragment_names"] = names
    return atoms


def _relaxed(atoms: Atoms, seed: int) -> Atoms:
    """GFN2-xTB relaxation (caps fixed) after a 0.02 Å rattle of the free atoms drawn from ``seed``."""
    from ase.optimize import BFGS

    from mlff.data.sampling import xtb_calculator

    atoms = atoms.copy()
    atoms.rattle(0.02, seed=seed)  # FixAtoms keeps the caps where they are
    atoms.calc = xtb_calculator(atoms)
    optimizer = BFGS(atoms, logfile=None, maxstep=0.15)
    if not optimizer.run(fmax=RELAX_FMAX_EV_PER_A, steps=RELAX_STEPS):
        raise MLFFError(f"GFN2-xTB relaxation of the {atoms.info['cluster_size']} {atoms.info['state']} cluster "
                        f"did not reach fmax {RELAX_FMAX_EV_PER_A} eV/Å in {RELAX_STEPS} steps")
    atoms.calc = None
    _check_contacts(atoms, 0.7, "relaxed")
    return atoms
