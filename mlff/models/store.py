"""A potential on disk is a directory: ``potential.json`` (config, card, checksums), one safetensors file per
committee member, and a human-readable ``MODEL_CARD.md``. Loading never unpickles anything."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


from mlff.errors import MLFFError
from mlff.models.config import model_config
from mlff.models.potential import Potential, _build_member, _dtype
from mlff.provenance import provenance, sha256_file

__all__ = ["save_potential", "load_potential", "resolve_potential_path", "shipped_potentials", "potential_level",
           "set_card_section"]

FORMAT = "mlff.potential"
FORMAT_VERSION = 1
SHIPPED = Path(__file__).resolve().parents[2] / "potentials"


def _member_file(k: int) -> str:
    return f"member_{k:02d}.safetensors"


def save_potential(potential: Potential, path, *, name: str | None = None) -> Path:
    """Write ``potential`` to directory ``path`` (created; existing member files are replaced)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for k, member in enumerate(potential.members):
        tensors = {key: value.detach().cpu().contiguous().clone() for key, value in member.state_dict().items()}
        save_file(tensors, str(path / _member_file(k)), metadata={"format": FORMAT})
        checksums[_member_file(k)] = sha256_file(path / _member_file(k))
    card = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name or path.name,
        "model": potential.config.to_dict(), "committee_size": potential.committee_size,
        "dtype": str(potential.dtype).removeprefix("torch."), "head": potential.head,
        "n_parameters_per_member": sum(p.numel() for p in potential.members[0].parameters()),
        "metadata": potential.metadata, "provenance": provenance(), "sha256": checksums,
    }
    if potential.base is not None:  # a residual model: the frozen base it adds to, pinned by its weights
        if not potential.base_source:
            raise MLFFError("a residual model is saved with its base's directory or shipped name (base_source)")
        card["base"] = {"potential": str(potential.base_source),
                        "sha256": weights_pins(potential.base_source).get("potential_sha256")}
    (path / "potential.json").write_text(json.dumps(card, indent=2) + "\n")
    (path / "MODEL_CARD.md").write_text(model_card(card))
    return path


def load_potential(path, *, device="cpu", dtype=None, verify: bool = True) -> Potential:
    """Read a potential directory. ``dtype`` ("float32"/"float64") overrides the stored one."""
    from safetensors.torch import load_file

    path = resolve_potential_path(path)
    card_file = path / "potential.json"
    if not path.exists():
        shipped = ", ".join(shipped_potentials()) or "none yet"
        raise MLFFError(f"potential {str(path)!r} not found: not a potential directory, nor the name of one shipped "
                        f"in {SHIPPED} (shipped: {shipped}); give a potential directory or shipped name, train one "
                        f"with `mlff train`, or use a model config mapping for an untrained speed test")
    if not card_file.is_file():
        raise MLFFError(f"not a potential directory (no potential.json): {path}")
    try:
        card = json.loads(card_file.read_text())
    except json.JSONDecodeError as err:
        raise MLFFError(f"{card_file}: not valid JSON ({err})") from err
    if card.get("format") != FORMAT or card.get("format_version") != FORMAT_VERSION:
        raise MLFFError(f"{card_file}: not an {FORMAT} v{FORMAT_VERSION} file")
    config = model_config(card["model"])
    members = []
    for k in range(int(card["committee_size"])):
        file = path / _member_file(k)
        if not file.is_file():
            raise MLFFError(f"missing weights file {file}")
        if verify and sha256_file(file) != card["sha256"].get(file.name):
            raise MLFFError(f"checksum mismatch for {file}: the weights changed since they were saved")
        member = _build_member(config, 0, _dtype(card["dtype"]))
        missing, unexpected = member.load_state_dict(load_file(str(file)), strict=False)
        if missing or unexpected:
            raise MLFFError(f"{file} does not match the config: missing {missing[:3]}, unexpected {unexpected[:3]}")
        members.append(member.to(dtype=_dtype(dtype or card["dtype"])))
    base = None
    if card.get("base"):
        source = card["base"]["potential"]
        pinned = weights_pins(source).get("potential_sha256") if resolve_potential_path(source).is_dir() else None
        if verify and pinned != card["base"].get("sha256"):
            raise MLFFError(f"{card_file}: this residual model adds to the base potential {source!r}, whose weights "
                            f"{'are missing' if pinned is None else 'changed since it was trained'}")
        base = load_potential(source, dtype=dtype or card["dtype"], verify=verify)
    potential = Potential(config, members, card.get("metadata"), base=base,
                          base_source=card["base"]["potential"] if base is not None else None)
    potential.head = card.get("head", potential.head)
    return potential.to(device)


def shipped_potentials() -> list[str]:
    """Names of the potentials shipped in the repository's potentials/ folder."""
    return sorted(p.parent.name for p in SHIPPED.glob("*/potential.json"))


def resolve_potential_path(path) -> Path:
    """A directory path as given, or the name of a potential shipped in the repository's potentials/."""
    path = Path(path)
    shipped = SHIPPED / str(path)
    if not path.exists() and shipped.is_dir():
        return shipped
    return path


def weights_pins(potential: str | Path) -> dict:
    """The sha256 of every weights file of a potential (a name or a directory, from its potential.json) and one
    digest of them all: what pins a run to the weights it used. {} where it has no readable potential.json."""
    path = resolve_potential_path(potential)
    try:
        files = json.loads((path / "potential.json").read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # load_potential names what is wrong with it
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"potential": str(path), "potential_sha256": digest, "potential_files_sha256": files}


def check_weights(inputs: dict | None, potential: str | Path, what: str, used_by: str) -> None:
    """Refuse ``what`` where the weights of ``potential`` (a name or directory) are not those a run recorded
    (``inputs``: the pins in its run.json, see ``weights_pins``); a run from before pins were recorded passes."""
    before = (inputs or {}).get("potential_sha256")
    now = weights_pins(potential).get("potential_sha256")
    if before and before != now:
        raise MLFFError(f"cannot {what}: its weights are not those {used_by} (sha256 {before[:16]} then, "
                        f"{str(now)[:16]} now); run it again with these weights")


def potential_level(path) -> str | None:
    """The level of theory of a saved potential's training labels (from its card, without loading weights);
    None when ``path`` (a directory or shipped name) holds no potential."""
    card = resolve_potential_path(path) / "potential.json"
    if not card.is_file():
        return None
    meta = json.loads(card.read_text()).get("metadata", {})
    return meta.get("level_of_theory", "level of theory not recorded in the potential's card")



def set_card_section(path, title: str, body: str) -> None:
    """Write ``body`` as the section ``## title`` of the markdown card at ``path``: in place of that section (up to
    the next ``## `` heading, which stays), or at the end. The checks that add to a card (stability, refinement)
    write their sections this way, so none drops another's."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    head = f"\n## {title}\n"
    before, found, after = text.partition(head)
    rest = after.split("\n## ", 1)[1] if found and "\n## " in after else ""
    path.write_text(before.rstrip("\n") + "\n" + head + "\n" + body.strip("\n") + "\n" + (f"\n## {rest}" if rest else ""))

def model_card(card: dict) -> str:
    m = card["model"]
    meta = card.get("metadata", {})
    prov = card["provenance"]
    lines = [
        f"# Potential `{card['name']}`", "",
        "| | |", "|---|---|",
        f"| model | MACE (mace-torch ScaleShiftMACE), {m['num_interactions']} interactions, hidden `{m['hidden_irreps']}`, "
        f"max_ell {m['max_ell']}, correlation {m['correlation']} |",
        f"| species | {', '.join(map(str, m['species']))} |",
        f"| cutoff | {m['r_max']} Å |",
        f"| committee | {card['committee_size']} member(s), {card['n_parameters_per_member']:,} parameters each |",
        f"| dtype | {card['dtype']} |",
        f"| origin | {meta.get('origin', 'unknown')} |",
        f"| level of theory | {meta.get('level_of_theory', 'none: untrained')} |",
        f"| training data | {meta.get('training_data', 'none: untrained')} |",
        f"| metrics | {meta.get('metrics', 'none recorded')} |",
        f"| created | {prov['created_utc']} on {prov['host']} with {', '.join(f'{k} {v}' for k, v in prov['versions'].items())} |",
        "", "## Use", "",
        "```python", "from mlff import MLFFCalculator", f"atoms.calc = MLFFCalculator({card['name']!r})", "```", "",
        "Energies in eV, forces in eV/Å, stress in eV/Å³ (ASE units). Committee potentials also report",
        "`energy_std` and `forces_std`, the spread over members: large values flag structures outside the data.", "",
        "## Files", "",
        *[f"- `{f}` sha256 `{h}`" for f, h in card["sha256"].items()], "",
    ]
    return "\n".join(lines)
