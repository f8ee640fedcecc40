"""``qcompile run``: run a deployment bundle (the zip or its unpacked folder) on images or samples, as its own
``run.py`` does: verify the manifest's digests, apply the bundle's preprocessing contract, print the top classes."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from ..errors import BadInput
from .runner import BundleError, classify, format_results, verify_bundle


def run_bundle(bundle: str | Path, inputs: list[str], top: int = 5) -> list[str]:
    """The top ``top`` classes of each input as printable lines; ``BadInput`` naming the file on a tampered bundle,
    a missing file or an image that cannot be decoded."""
    bundle = Path(bundle)
    missing = [p for p in inputs if not Path(p).is_file()]
    if missing:
        raise BadInput(f"{missing[0]} does not exist", key="INPUT")
    if bundle.is_dir():
        return _run(bundle, inputs, top)
    if not zipfile.is_zipfile(bundle):
        raise BadInput(f"{bundle} is neither a bundle.zip nor an unpacked bundle folder", key="BUNDLE")
    with tempfile.TemporaryDirectory(prefix="qcompile-run-") as tmp:
        with zipfile.ZipFile(bundle) as zf:
            for member in zf.namelist():
                # Bundle entries are flat names; anything else is not a bundle this tool wrote.
                if Path(member).name != member:
                    raise BadInput(f"{bundle} holds {member!r}, which no bundle holds", key="BUNDLE")
            zf.extractall(tmp)
        return _run(Path(tmp), inputs, top, shown=bundle)


def _run(folder: Path, inputs: list[str], top: int, shown: Path | None = None) -> list[str]:
    problem = verify_bundle(folder)
    if problem:
        raise BadInput(problem, key=str(shown or folder))
    try:
        return format_results(classify(folder, [str(p) for p in inputs], top))
    except BundleError as e:
        raise BadInput(str(e)) from None
