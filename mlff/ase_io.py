"""The ``h5md`` trajectory format for ``ase.io``: ``ase.io.read(path, ":", format="h5md")`` and ``ase.io.write``.

ASE loads the ``ase.ioformats`` entry point (pyproject.toml) naming ``h5md`` below when ``ase.io`` is first
imported, then calls ``read_h5md`` / ``write_h5md`` of this module; mlff.md.h5md is imported only then. This
lives apart from mlff.ase_plugin on purpose: that module imports ``ase._4.plugins``, which itself loads the
``ase.ioformats`` entry points, so serving both from one module is a circular import while ``ase.io`` loads.
"""

from ase.utils.plugins import ExternalIOFormat

__all__ = ["h5md", "read_h5md", "write_h5md"]

h5md = ExternalIOFormat(desc="H5MD trajectory (mlff)", code="+S", module="mlff.ase_io", ext="h5md")


def read_h5md(filename, index=None, **kwargs):
    """ASE's reader for the h5md format: ``mlff.md.h5md.read_h5md`` (keyword ``group=`` picks a system)."""
    from mlff.md.h5md import read_h5md as read

    return read(filename, ":" if index is None else index, **kwargs)


def write_h5md(filename, images, **kwargs) -> None:
    """ASE's writer for the h5md format: one group "all"; positions and cell, velocities and forces when the
    first image has them, the calculator's energy as potential_energy; steps and times from ``info["step"]``
    and ``info["time_fs"]`` (else the frame number and 0). Keyword arguments go to ``H5MDWriter``."""
    from ase import Atoms, units

    from mlff.md.h5md import H5MDWriter

    images = [images] if isinstance(images, Atoms) else list(images)
    first = images[0]
    results = first.calc.results if first.calc is not None else {}
    kwargs.setdefault("fields", ("position", *(["velocity"] if first.has("momenta") else []),
                                 *(["force"] if "forces" in results else [])))
    kwargs.setdefault("observables", ("potential_energy",) if "energy" in results else ())
    with H5MDWriter(filename, first.numbers, first.get_masses(), first.pbc, **kwargs) as writer:
        for i, atoms in enumerate(images):
            results = atoms.calc.results if atoms.calc is not None else {}
            energy = {"potential_energy": results.get("energy")} if "potential_energy" in writer.observables else {}
            writer.write(atoms.info.get("step", i), atoms.info.get("time_fs", 0.0), atoms.positions, atoms.cell.array,
                         velocities=atoms.get_velocities() * units.fs, forces=results.get("forces"),
                         observables=energy)
