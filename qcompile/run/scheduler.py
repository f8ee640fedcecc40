"""Runs a plan in topological order with content-hash caching.

A node's key digests its kind, version, params, the digests of its inputs and user files, and the versions
of the libraries it uses. Because keys use input *digests*, a re-run step that reproduces its old output
leaves everything downstream cached (early cut-off).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Iterator

from pydantic import BaseModel

from ..cache import ActionRecord, Cache
from ..cache.keys import digest_json, env_fingerprint
from ..cache.lease import Lease
from ..cache.store import rmtree_quiet
from ..errors import BadInput, QcompileError, is_bad_input, naming
from ..graph import Node, Plan, StepOutcome
from ..steps.base import Step, StepContext, get_step
from .memory import StepPeak, release_free_memory
from .progress import Reporter

if TYPE_CHECKING:
    from filelock import FileLock

KEY_SCHEMA = 1


def key_material(node: Node, step: Step, input_digests: dict[str, str], cache: Cache) -> dict[str, Any]:
    """Everything that can change a node's output, as a JSON-able dict (its digest is the key).

    A path enters the key as the content of the file it names (``file_fields``) or not at all: a folder a module is
    imported from, or a data folder whose files are listed, says where the project lives, not what is built, and a
    project moved or cloned elsewhere must keep its keys (and so its cache hits and its build id).
    """
    params = node.params.model_dump(mode="json")
    for path in step.unkeyed:
        *parents, last = path.split(".")
        _at(params, parents).pop(last, None)
    for name, paths in user_files(params, step).items():
        digests = ["sha256:" + cache.memo.digest(Path(v)) for v in paths]
        *parents, last = name.split(".")
        _at(params, parents)[last] = digests if isinstance(_field(params, name), list) else digests[0]
    return {
        "key_schema": KEY_SCHEMA,
        "kind": step.kind,
        "version": step.version,
        "params": _without_locations(params, set(_path_values(node.params))),
        "inputs": dict(sorted(input_digests.items())),
        "env": {**env_fingerprint(step.libraries, host=step.host_dependent), **step.host_facts(node.params)},
    }


def _path_values(value: Any) -> Iterator[str]:
    """The ``Path`` values anywhere in a params model, as ``model_dump(mode="json")`` writes them."""
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _path_values(getattr(value, name))
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _path_values(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _path_values(v)
    elif isinstance(value, PurePath):
        yield str(value)


def _without_locations(value: Any, paths: set[str]) -> Any:
    """``value`` with every string in ``paths`` (a path param that is no user file) replaced by a mark that says
    a path was given, not where."""
    if isinstance(value, dict):
        return {k: _without_locations(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_locations(v, paths) for v in value]
    return "<path>" if isinstance(value, str) and value in paths else value


def user_files(params: dict[str, Any], step: Step) -> dict[str, list[str]]:
    """The user's file paths in a step's params, by field: one path, or several (an ONNX model's external data)."""
    files = {}
    for name in step.file_fields:
        value = _field(params, name)
        if isinstance(value, list):
            files[name] = value
        elif value:
            files[name] = [value]
    return files


def _at(params: dict[str, Any], parents: list[str]) -> dict[str, Any]:
    """The dict a dotted path's last part lives in (an empty one when a parent is absent or null)."""
    for part in parents:
        params = params.get(part) or {}
    return params


def _field(params: dict[str, Any], path: str) -> Any:
    *parents, last = path.split(".")
    return _at(params, parents).get(last)


def resolve_inputs(node: Node, done: dict[str, StepOutcome]) -> dict[str, str] | None:
    """Input slot -> digest, or None while some producer has not produced yet."""
    digests = {}
    for slot, ref in node.inputs.items():
        prod = done.get(ref.node)
        if prod is None or ref.output not in prod.outputs:
            return None
        digests[slot] = prod.outputs[ref.output]
    return digests


def peek(plan: Plan, cache: Cache) -> list[StepOutcome]:
    """Keys and cache status of every node without running anything (``qcompile plan``).

    A node whose producers are not cached has no computable key yet: it is reported as ``pending``.
    """
    done: dict[str, StepOutcome] = {}
    for node in plan.order():
        step = get_step(node.kind)
        digests = resolve_inputs(node, done)
        if digests is None:
            done[node.name] = StepOutcome(node.name, node.kind, None, "pending")
            continue
        key = digest_json(key_material(node, step, digests, cache))
        rec = cache.lookup(key, verify=False, outputs=step.outputs)
        out = StepOutcome(node.name, node.kind, key, "cached" if rec else "will run", inputs=digests)
        if rec:
            out.outputs, out.result = rec.outputs, rec.result
        done[node.name] = out
    cache.memo.flush()  # what planning learnt (an ONNX model's signature), now that the recipe planned cleanly
    return list(done.values())


def execute(plan: Plan, cache: Cache, reporter: Reporter | None = None, remeasure: bool = False) -> list[StepOutcome]:
    """Build every node; return outcomes in execution order.

    ``remeasure`` re-runs the host-dependent steps (measurements) even when cached and records the new
    measurement in place of the old; a record made by another build since this one started is reused, so
    parallel sweep workers time a shared variant once.

    Bad input found mid-build (a model that cannot take the shapes, labels out of range, a full disk) is
    re-raised, and when the cache's lease closes on it, what this build wrote is taken back (``Cache.undo``): a
    build that exits 2 leaves nothing in the cache. A bug in a step is recorded as a failure
    (``qcompile cache ls --failed``). Gate failures do not stop the build: they are collected on the outcome and
    the caller decides the exit code once the report is written. On a read-only cache a step it does not hold is
    bad input.
    """
    # The lease tells `cache gc` which records and blobs this build uses, so it does not delete them mid-build.
    with cache.lease() as lease:
        return _execute(plan, cache, reporter or Reporter(quiet=True), lease, remeasure)


def _execute(plan: Plan, cache: Cache, reporter: Reporter, lease: Lease, remeasure: bool) -> list[StepOutcome]:
    started = time.time()  # the clock ActionRecord.created uses
    _preflight(plan, cache)
    done: dict[str, StepOutcome] = {}
    for node in plan.order():
        step = get_step(node.kind)
        digests = resolve_inputs(node, done)
        assert digests is not None, f"{node.name}: producers must run first"
        material = key_material(node, step, digests, cache)
        key = digest_json(material)
        outcome = StepOutcome(node.name, node.kind, key, "cached", inputs=digests, env=material["env"])
        done[node.name] = outcome
        t0 = time.perf_counter()
        lease.hold(key)  # before the lookup: a gc that starts now sees the key as in use
        stale = remeasure and step.host_dependent  # the cached measurement is not wanted, only a new one
        rec = None if stale else cache.lookup(key, outputs=step.outputs)
        if rec is None and cache.read_only:
            raise cache.missing(node.name, node.kind)
        if rec is None:
            with _locked(cache, key, node, reporter):
                # Another process may have finished this key while we waited for the lock.
                rec = cache.lookup(key, outputs=step.outputs)
                if stale and rec is not None and rec.created < started:
                    rec = None
                if rec is None:
                    reporter.start(node)
                    names = {slot: get_step(plan.node(ref.node).kind).outputs[ref.output]
                             for slot, ref in node.inputs.items()}
                    # Measurements take the machine to themselves: parallel sweep workers would otherwise
                    # time their benchmarks against each other.
                    with _host_lock() if step.host_dependent else nullcontext():
                        rec = _run(node, step, key, digests, names, cache, reporter, outcome)
                    outcome.status = "ran"
        else:
            cache.touch(key)
        outcome.seconds = time.perf_counter() - t0
        outcome.outputs, outcome.result = rec.outputs, rec.result
        if node.gate:
            outcome.gate_error = step.check(rec.result, node.gate)
        reporter.finish(outcome)
    return list(done.values())


def _check_files_unchanged(node: Node, step: Step, key: str, digests: dict[str, str], cache: Cache) -> None:
    """A user file the key was computed from must still be that file once the step has read it: one edited in
    between would store the new file's result under the old file's key, a stale hit for every later build of
    the old file. Stat checks only, unless a file did change."""
    if not step.file_fields or digest_json(key_material(node, step, digests, cache)) == key:
        return
    paths = [v for vs in user_files(node.params.model_dump(mode="json"), step).values() for v in vs]
    raise BadInput(f"{', '.join(map(str, paths))} changed while the build was reading it; nothing was stored, "
                   "run the build again", key=f"{node.name}.{step.file_fields[0]}")


def _preflight(plan: Plan, cache: Cache) -> None:
    """Let the steps that read the user's files check them first: a bad weights, ONNX or data file fails the
    build before any step runs, so nothing is written to the cache."""
    for node in plan.order():
        if node.inputs:
            continue
        step = get_step(node.kind)
        if cache.lookup(digest_json(key_material(node, step, {}, cache)), verify=False, outputs=step.outputs) is None:
            step.preflight(node.params)


def _host_lock() -> FileLock:
    """A lock local to this machine (not in the cache, which a cluster may share across machines)."""
    from filelock import FileLock  # here: a fully cached build takes no lock

    # mode 0o666: the first user to take it creates the file, and every other user of the machine must open it too.
    return FileLock(os.path.join(tempfile.gettempdir(), "qcompile-measurement.lock"), mode=0o666)


@contextmanager
def _locked(cache: Cache, key: str, node: Node, reporter: Reporter):
    """Hold the key's lock; say so when another build holds it, since the wait can be long.

    The build that made the lock file removes it when it lets go, so no lock file outlives the builds (a build
    that exits 2 leaves none). It unlinks the file while still holding it, as filelock once did itself: a build
    waiting on that file then gets the lock on an unlinked file, which filelock discards (its link count is 0)
    before opening the path afresh. With a filelock too old to check, the worst case is a step run twice, each
    run storing whole entries atomically.
    """
    from filelock import Timeout

    lock = cache.lock(key)
    path = Path(lock.lock_file)
    before = _inode(path)
    for attempt in range(3):
        try:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                reporter.waiting(node)
                lock.acquire()
            break
        except FileNotFoundError:  # another build's clean-up removed the empty locks folder: make it again
            if attempt == 2:
                raise
            cache.journal.make_dirs(path.parent)
    try:
        os.utime(path)  # mark the lock as in use: `cache gc` only removes lock files idle for a day
        yield
    finally:
        try:
            if before is None or _inode(path) != before:
                path.unlink(missing_ok=True)
        finally:
            lock.release()


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _stage_inputs(cache: Cache, digests: dict[str, str], names: dict[str, str], workdir: Path) -> dict[str, Path]:
    """Link each input blob into the step's own folder under its producer's file name.

    Libraries write beside the files they read (ORT's quantizer leaves ``<model>-inferred.onnx``): given
    paths inside the shared store, two builds running at once would trip over each other's scratch files.
    """
    staged = {}
    for slot, digest in digests.items():
        dest = workdir / "inputs" / slot / names[slot]
        dest.parent.mkdir(parents=True)
        # A symbolic link, not a hard one: a hard link changes the blob's ctime, and with it the stat stamp that
        # lets the next build trust the blob without hashing it again.
        try:
            os.symlink(cache.blobs.path(digest), dest)
        except OSError:  # links not allowed here
            shutil.copyfile(cache.blobs.path(digest), dest)
        staged[slot] = dest
    return staged


def _run(node: Node, step: Step, key: str, digests: dict[str, str], names: dict[str, str], cache: Cache,
         reporter: Reporter, outcome: StepOutcome) -> ActionRecord:
    workdir = cache.tmp / f"run-{key[:16]}-{os.getpid()}"
    try:  # from the first byte of scratch: Ctrl-C or SIGTERM while inputs are staged leaves no folder behind
        rmtree_quiet(workdir)
        cache.journal.make_dirs(workdir)
        inputs = _stage_inputs(cache, digests, names, workdir)
        ctx = StepContext(inputs=inputs, workdir=workdir, outputs=dict(step.outputs), track_fn=reporter.track)
        t0 = time.perf_counter()
        # naming: a full disk fails a step's write without a file name; its scratch folder says which disk.
        with StepPeak() as peak, naming(workdir):
            result = step.run(ctx, node.params) or {}
        outcome.peak_mb = peak.mb
        _check_files_unchanged(node, step, key, digests, cache)
        missing = [n for n in step.outputs if not ctx.out(n).is_file()]
        if missing:
            raise RuntimeError(f"step {step.kind} did not write its outputs {missing}")
        outputs = {name: cache.blobs.put(ctx.out(name)) for name in step.outputs}
        if ctx.notes:
            result = {**result, "notes": ctx.notes}
        for msg in ctx.notes:
            reporter.note(node, msg)
        rec = ActionRecord(key=key, kind=step.kind, outputs=outputs, result=result,
                           seconds=round(time.perf_counter() - t0, 3), created=time.time())
        cache.record(rec)
        return rec
    except BaseException as e:
        outcome.status = "failed"
        outcome.error = str(e) if isinstance(e, QcompileError) else traceback.format_exc(limit=3)
        if not isinstance(e, KeyboardInterrupt) and not is_bad_input(e):
            # A bug's whole trace, where `qcompile cache ls --failed` finds it. Bad input writes nothing here.
            cache.record_failure(key, step.kind, traceback.format_exc())
        raise
    finally:
        rmtree_quiet(workdir)
        release_free_memory()
