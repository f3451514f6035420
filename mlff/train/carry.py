"""A training run's resumable state in one small file, to carry a training across machines or sessions.

A run directory holds far more than a resume needs (plots, the written potential, metrics). ``pack_run`` writes
what ``train(..., resume=True)`` reads: ``config.json``, ``data.json`` (the datasets' checksums: a resume refuses
changed data) and every member's latest ``checkpoint.pt`` (weights, optimizer, scheduler, EMA, RNG states and
the position in the run) with its ``log.csv``, into one gzip'd tar with a manifest (sha256 of every file,
epoch and step of every member, provenance). ``unpack_run`` checks the manifest and restores the files in an
empty run directory; the resumed run then neither repeats nor skips a step (``tests/unit/train/test_carry.py``:
weights equal to an uninterrupted run's).

Each checkpoint is replaced atomically, so packing a run that is still training takes every member's last
finished checkpoint: a consistent state to resume from.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

from mlff.errors import MLFFError

__all__ = ["pack_run", "read_manifest", "unpack_run"]

_MANIFEST = "manifest.json"
_FORMAT = "mlff-train-carry/1"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _member_position(data: bytes) -> dict:
    import torch

    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True).get("state", {})
    return {key: state[key] for key in ("epoch", "global_step", "stage", "done") if key in state}


def pack_run(run_dir: str | Path, bundle: str | Path) -> dict:
    """Write the resumable state of the training run in ``run_dir`` to ``bundle`` (a .tar.gz, replaced
    atomically); returns the manifest."""
    from mlff.provenance import provenance

    run_dir, bundle = Path(run_dir), Path(bundle)
    for name in ("config.json", "data.json"):
        if not (run_dir / name).is_file():
            raise MLFFError(f"{run_dir} is not a training run with a state to carry (no {name})")
    checkpoints = sorted(run_dir.glob("member_*/checkpoint.pt"))
    if not checkpoints:
        raise MLFFError(f"{run_dir}: no member has written a checkpoint yet (one is written every epoch)")
    files = {name: (run_dir / name).read_bytes() for name in ("config.json", "data.json")}
    members = {}
    for path in checkpoints:
        member = path.parent.name
        files[f"{member}/checkpoint.pt"] = data = path.read_bytes()
        members[member] = _member_position(data)
        if (path.parent / "log.csv").is_file():
            files[f"{member}/log.csv"] = (path.parent / "log.csv").read_bytes()
    manifest = {"format": _FORMAT, "run_dir": str(run_dir), "members": members,
                "files": {name: _sha256(data) for name, data in files.items()}, "provenance": provenance()}
    bundle.parent.mkdir(parents=True, exist_ok=True)
    tmp = bundle.with_name(f".{bundle.name}.tmp-{os.getpid()}")
    with tarfile.open(tmp, "w:gz", compresslevel=9) as tar:
        for name, data in [(_MANIFEST, json.dumps(manifest, indent=1).encode())] + sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644  # no timestamps: the same state, the same bytes
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, bundle)
    return manifest


def _read(bundle: Path) -> tuple[dict, dict]:
    if not bundle.is_file():
        raise MLFFError(f"no training state to carry at {bundle}")
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    except (tarfile.TarError, OSError, EOFError) as err:
        raise MLFFError(f"{bundle}: not a readable training state ({type(err).__name__}: {err})") from None
    if _MANIFEST not in files:
        raise MLFFError(f"{bundle}: no {_MANIFEST}; not written by `mlff train pack`")
    manifest = json.loads(files.pop(_MANIFEST))
    if manifest.get("format") != _FORMAT:
        raise MLFFError(f"{bundle}: format {manifest.get('format')!r}, this mlff reads {_FORMAT!r}")
    for name, digest in manifest["files"].items():
        if name not in files:
            raise MLFFError(f"{bundle}: {name} is listed in the manifest but missing")
        if _sha256(files[name]) != digest:
            raise MLFFError(f"{bundle}: {name} does not match its sha256 in the manifest (a damaged file)")
    unexpected = sorted(set(files) - set(manifest["files"]))
    if unexpected:
        raise MLFFError(f"{bundle}: files not in the manifest: {', '.join(unexpected)}")
    return manifest, files


def read_manifest(bundle: str | Path) -> dict:
    """The manifest of ``bundle``, every file checked against its sha256."""
    return _read(Path(bundle))[0]


def unpack_run(bundle: str | Path, run_dir: str | Path) -> dict:
    """Restore the training state in ``bundle`` into ``run_dir`` (absent or without a training run), ready
    for ``train(config, resume=True)``; returns the manifest."""
    bundle, run_dir = Path(bundle), Path(run_dir)
    manifest, files = _read(bundle)
    if (run_dir / "config.json").is_file() or any(run_dir.glob("member_*/checkpoint.pt")):
        raise MLFFError(f"{run_dir} already holds a training run: resume it there, or unpack {bundle} elsewhere")
    for name, data in files.items():
        target = (run_dir / name).resolve()
        if run_dir.resolve() not in target.parents:
            raise MLFFError(f"{bundle}: {name} points outside the run directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return manifest
