"""``qcompile run``: run a deployment bundle (the zip or its unpacked folder) as its own ``run.py`` does: verify the
manifest's digests, then for an image model apply the bundle's preprocessing contract and print the top classes;
for a sentence encoder (a bundle with text.json) tokenize the sentences as text.json says and print their
embeddings' norms and cosine similarities."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from ..errors import BadInput
from . import text_runner
from .runner import BundleError, classify, format_results, verify_bundle


def run_bundle(bundle: str | Path, inputs: list[str], top: int = 5, first: bool = False) -> list[str]:
    """Printable lines: the top ``top`` classes of each input (image files or samples), or for a text bundle each
    sentence's embedding and the cosine of every pair (``first``: of the first sentence with each other one).
    ``BadInput`` naming the file on a tampered bundle, a missing file or an image that cannot be decoded, or when
    no input is given."""
    bundle = Path(bundle)
    if not bundle.is_dir() and not zipfile.is_zipfile(bundle):
        raise BadInput(f"{bundle} is neither a bundle.zip nor an unpacked bundle folder", key="BUNDLE")
    if _is_text(bundle):
        if not inputs:
            raise BadInput('a text bundle takes sentences: qcompile run BUNDLE "one sentence" "another sentence"',
                           key="INPUT")
    else:
        # Image bundles take files: name a missing one before unpacking anything.
        if not inputs:
            raise BadInput("an image bundle takes image files, or one .npy / .npz of samples", key="INPUT")
        missing = [p for p in inputs if not Path(p).is_file()]
        if missing:
            raise BadInput(f"{missing[0]} does not exist", key="INPUT")
    if bundle.is_dir():
        return _run(bundle, inputs, top, first)
    with tempfile.TemporaryDirectory(prefix="qcompile-run-") as tmp:
        with zipfile.ZipFile(bundle) as zf:
            for member in zf.namelist():
                # Bundle entries are flat names; anything else is not a bundle this tool wrote.
                if Path(member).name != member:
                    raise BadInput(f"{bundle} holds {member!r}, which no bundle holds", key="BUNDLE")
            zf.extractall(tmp)
        return _run(Path(tmp), inputs, top, first, shown=bundle)


def _is_text(bundle: Path) -> bool:
    """Whether the bundle is a sentence encoder's: it holds text.json (its manifest is checked later)."""
    if bundle.is_dir():
        return (bundle / "text.json").is_file()
    with zipfile.ZipFile(bundle) as zf:
        return "text.json" in zf.namelist()


def _run(folder: Path, inputs: list[str], top: int, first: bool, shown: Path | None = None) -> list[str]:
    problem = verify_bundle(folder)
    if problem:
        raise BadInput(problem, key=str(shown or folder))
    try:
        if (folder / "text.json").is_file():
            # Positional inputs are sentences here, never paths: a sentence that names a file is still a sentence.
            return text_runner.run(folder, list(inputs), first)
        return format_results(classify(folder, [str(p) for p in inputs], top))
    except (BundleError, text_runner.BundleError) as e:
        raise BadInput(str(e)) from None
