"""``qcompile run``: run a deployment bundle (the zip or its unpacked folder) as its own ``run.py`` does: verify the
manifest's digests, then for an image model apply the bundle's preprocessing contract and print the top classes;
for a sentence encoder (a bundle with text.json) tokenize the sentences as text.json says and print their
embeddings' norms and cosine similarities.

A bundle is data here, never code. Bundles travel between people and CI, and whoever crafts one writes a manifest
to match, so the digests say a file is intact, not that it is safe. ``qcompile run`` applies preprocess.json with
the installed preprocessing module (``qcompile.bundle.preprocess``), text.json with the installed text runner, and
imports no Python file from the bundle (run.py and preprocess.py stay there for whoever runs them by choice). What
it reads from the bundle is parsed (JSON, checked key by key), the model file goes to onnxruntime and the tokenizer
to the tokenizers library; a zip entry that is not a plain file name is refused before anything is unpacked.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path

from ..errors import BadInput
from . import preprocess, text_runner
from .runner import BundleError, classify, format_results, verify_bundle


def run_bundle(bundle: str | Path, inputs: list[str], top: int = 5, first: bool = False) -> list[str]:
    """Printable lines: the top ``top`` classes of each input (image files or samples), or for a text bundle each
    sentence's embedding and the cosine of every pair (``first``: of the first sentence with each other one).
    ``BadInput`` naming the file on a tampered or malformed bundle (a zip entry that is no plain file name, a
    preprocess.json or text.json key this version cannot apply), a missing file or an image that cannot be
    decoded, or when no input is given."""
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
        unpack(bundle, Path(tmp))
        return _run(Path(tmp), inputs, top, first, shown=bundle)


def unpack(bundle: Path, dest: Path) -> list[str]:
    """Write the zip's entries into ``dest`` (an empty folder) and return their names. Every name is checked
    before anything is written: a bundle holds flat file names only, so a name with a folder in it (``../x``,
    ``/x``, ``a/b``), an empty, duplicated or encrypted entry is ``BadInput`` and nothing lands outside ``dest``."""
    try:
        with zipfile.ZipFile(bundle) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            for info in infos:
                name = info.filename
                if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
                    raise BadInput(f"{bundle} holds {name!r}, which no bundle holds (bundle entries are plain file "
                                   "names)", key="BUNDLE")
                if names.count(name) > 1 or info.flag_bits & 0x1:
                    raise BadInput(f"{bundle} holds {name!r} twice or encrypted, which no bundle does", key="BUNDLE")
            # zipfile stops each entry at its declared size, so the declared total bounds what unpacking writes: a
            # zip that would fill the disk (a zip bomb) is refused before anything is written.
            total, free = sum(i.file_size for i in infos), shutil.disk_usage(dest).free
            if total > free:
                raise BadInput(f"{bundle} unpacks to {total} bytes, more than the {free} bytes free in {dest}",
                               key="BUNDLE")
            for info in infos:
                # The path is built here from a checked flat name, not by zipfile's own extraction; streamed, so a
                # large model is never held in memory whole.
                with zf.open(info) as src, (dest / info.filename).open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, NotImplementedError, EOFError) as e:  # a damaged or unsupported zip
        raise BadInput(f"{bundle} cannot be unpacked ({type(e).__name__}: {str(e)[:120]})", key="BUNDLE") from None
    return names


def _is_text(bundle: Path) -> bool:
    """Whether the bundle is a sentence encoder's: it holds text.json (its manifest is checked later)."""
    if bundle.is_dir():
        return (bundle / "text.json").is_file()
    with zipfile.ZipFile(bundle) as zf:
        return "text.json" in zf.namelist()


def _run(folder: Path, inputs: list[str], top: int, first: bool, shown: Path | None = None) -> list[str]:
    where = str(shown or folder)
    problem = verify_bundle(folder)
    if problem:
        raise BadInput(problem, key=where)
    text = (folder / "text.json").is_file()
    # Read only files the manifest lists (their digests were just checked), never an unlisted one put beside them.
    listed = set(json.loads((folder / "manifest.json").read_text())["files"])
    wanted = ["text.json"] if text else ["preprocess.json"] + (["labels.json"] if (folder / "labels.json").exists()
                                                              else [])
    unlisted = [name for name in wanted if name not in listed]
    if unlisted:
        raise BadInput(f"{unlisted[0]} is not listed in manifest.json", key=where)
    try:
        if text:
            # Positional inputs are sentences here, never paths: a sentence that names a file is still a sentence.
            return text_runner.run(folder, list(inputs), first)
        return format_results(classify(folder, [str(p) for p in inputs], top, pre=preprocess))
    except (BundleError, text_runner.BundleError) as e:  # the message names the file (bundle's or input)
        raise BadInput(str(e)) from None
