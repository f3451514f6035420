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
