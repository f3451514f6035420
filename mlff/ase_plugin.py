"""ASE plugin registration (entry point group ``ase.plugins``): makes ``mlff`` known to ASE's plugin list."""

try:
    from ase._4.plugins.plugin import CalculatorPlugin
except ImportError:  # ASE without the plugin system: nothing to register
    __ase_plugins__ = set()
else:
    __ase_plugins__ = {
        CalculatorPlugin(
            name="mlff",
            citation="mlff: MACE force fields and GPU molecular dynamics for enzyme active sites",
            implementation="mlff.calculator.MLFFCalculator",
        )
    }

# ``ase.io.read(path, ":", format="h5md")`` / ``ase.io.write(path, images, format="h5md")``: ASE reads the
# ``ase.ioformats`` entry point (pyproject.toml) naming this object; the module is imported only when used.
from ase.utils.plugins import ExternalIOFormat  # noqa: E402  (ASE >= 3.23, a dependency)

h5md = ExternalIOFormat(desc="H5MD trajectory (mlff)", code="+S", module="mlff.md.h5md", ext="h5md")
