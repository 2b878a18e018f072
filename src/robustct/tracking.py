"""MLflow set-up, the one project store, and what every run carries.

Store resolution (:func:`tracking_uri`), first match wins:

1. ``ROBUSTCT_MLRUNS``: a folder holding ``mlflow.db`` (SQLite) and ``artifacts/`` (relative paths are taken
   from the project root; tests use a temporary folder, so they never write into a team server);
2. ``MLFLOW_TRACKING_URI`` (a team server such as ``http://mlflow.internal:5000``, see ``docs/operations.md``;
   a relative local path such as ``sqlite:///mlruns/mlflow.db`` is taken from the project root, so it names the
   same store inside a ``dvc exp run --temp`` workspace: :func:`anchored_uri`);
3. ``<project root>/mlruns``, where the project root (:func:`project_root`) is found from the current working
   directory upwards, and a DVC temporary or queued experiment workspace ``<root>/.dvc/tmp/exps/<tmp>/...``
   maps to the ``<root>`` it was copied from. So ``dvc exp run --temp`` / ``--queue`` and a stage started from a
   sub-folder log into the same store as ``dvc repro``.

SQLite stays the embedded default. Several processes may log at once (two ``dvc queue`` workers): the store is
created and migrated under a file lock, runs in WAL mode, and every connection waits up to
``SQLITE_TIMEOUT_S`` seconds for a lock instead of failing with "database is locked".

A store folder that was moved or copied (``mv project project2``) still records the old absolute artifact
paths; :func:`setup` rewrites them to the new folder (one line on stderr says so).

``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`` shows everything; the experiment carries MLflow's
experiment-kind tag, so the UI opens on its training runs.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import warnings
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

EXPERIMENT = "covid-ct-robustness"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow UI experiment kinds: ``custom_model_development`` (training runs) or ``genai_development`` (traces)."""
STORE_ENV = "ROBUSTCT_MLRUNS"
SQLITE_TIMEOUT_S = 60
PACKAGE_DIR = Path(__file__).resolve().parent
DVC_EXP_WORKSPACE = (".dvc", "tmp", "exps")
SPLIT_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
"""Split file name -> MLflow dataset-input context."""


class MissingRunError(FileNotFoundError):
    """A run or model that an output file names (``outputs/*/run.json``) is not in the current store.

    A ``FileNotFoundError`` so the command line prints it as one ``error:`` line and exits 1.
    """


# -- where the store is -------------------------------------------------------------------
def project_root(start: Path | None = None) -> Path:
    """The project's main working tree, absolute.

    Inside a DVC experiment workspace (``<root>/.dvc/tmp/exps/<tmp>/...``, used by ``dvc exp run --temp`` and
    ``--queue``) this is ``<root>``; otherwise the nearest folder at or above ``start`` (default: the current
    directory) holding ``dvc.yaml`` or ``.dvc/``; otherwise ``start`` itself.
    """
    start = Path(start or Path.cwd()).resolve()
    parts = start.parts
    n = len(DVC_EXP_WORKSPACE)
    for i in range(len(parts) - n, 0, -1):
        if parts[i:i + n] == DVC_EXP_WORKSPACE:
            return Path(*parts[:i])
    for d in (start, *start.parents):
        if (d / "dvc.yaml").is_file() or (d / ".dvc").is_dir():
            return d
    return start


def mlruns_dir() -> Path:
    """The project's MLflow folder (``$ROBUSTCT_MLRUNS`` or ``<project root>/mlruns``), absolute."""
    env = os.environ.get(STORE_ENV)
    if env:
        p = Path(env).expanduser()
        return p if p.is_absolute() else (project_root() / p).resolve()
    return project_root() / "mlruns"


def sqlite_uri(root: Path, timeout_s: int = SQLITE_TIMEOUT_S) -> str:
    """SQLAlchemy URI of the store ``root/mlflow.db``; connections wait ``timeout_s`` s for a lock."""
    return f"sqlite:///{Path(root) / 'mlflow.db'}?timeout={int(timeout_s)}"


def use_server() -> bool:
    """True when runs go to ``MLFLOW_TRACKING_URI`` (set, and no ``ROBUSTCT_MLRUNS`` overrides it)."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI")) and not os.environ.get(STORE_ENV)


def anchored_uri(uri: str, root: Path | None = None) -> str:
    """``uri`` with a relative local store path taken from the project root instead of the current directory.

    MLflow reads ``sqlite:///mlruns/mlflow.db`` (three slashes: a relative path) or a bare relative folder from the
    current directory. A stage of ``dvc exp run --temp`` runs in a copy of the project under
    ``.dvc/tmp/exps/``, so such a URI would open a new, empty store in that copy, which DVC deletes when the
    experiment ends: its runs, metrics and artifacts would be lost without an error. Anchored at
    :func:`project_root` (``root``), the same URI names the project's store from anywhere. Absolute paths,
    ``sqlite:////abs``, servers (``http://``, ``postgresql://``, ...) are returned unchanged.
    """
    base = Path(root) if root is not None else project_root()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path, sep, query = uri[len("sqlite:///"):].partition("?")
        if path and path != ":memory:" and not Path(path).is_absolute():
            return f"sqlite:///{(base / path).resolve()}{sep}{query}"
        return uri
    if "://" not in uri and not uri.startswith("file:") and not Path(uri).is_absolute():
        return str((base / uri).resolve())
    return uri


def server_uri() -> str:
    """``MLFLOW_TRACKING_URI`` with a relative local path anchored at the project root (:func:`anchored_uri`)."""
    return anchored_uri(os.environ["MLFLOW_TRACKING_URI"])


def tracking_uri(root: Path | None = None) -> str:
    """The store's URI: the SQLite file in ``root`` when given, else by the order in the module docstring."""
    if root is None and use_server():
        return server_uri()
    return sqlite_uri(Path(root) if root else mlruns_dir())


def describe_store() -> str:
    """Human-readable store location for messages."""
    uri = tracking_uri()
    return uri.split("?", 1)[0]


# -- set-up -----------------------------------------------------------------------------------
def setup(experiment: str = EXPERIMENT, root: Path | None = None):
    """Point MLflow at the project store, select (or create) the experiment and tag its kind.

    With a local store (``root`` given, ``ROBUSTCT_MLRUNS``, or no ``MLFLOW_TRACKING_URI``) this runs under a
    file lock (``<store>/.setup.lock``): creating and migrating the SQLite file, switching it to WAL and creating the
    experiment happen once even when several processes start together; a moved store is relocated.

    Returns:
        the ``mlflow`` module, ready to use.
    """
    import mlflow  # noqa: PLC0415  (heavy; imported by the stages that track)

    _telemetry_off_if_asked()
    remote = root is None and use_server()
    if remote:
        mlflow.set_tracking_uri(server_uri())
        registry = os.environ.get("MLFLOW_REGISTRY_URI")
        mlflow.set_registry_uri(anchored_uri(registry) if registry else server_uri())
        try:
            _ensure_experiment(mlflow, experiment, None)
        except Exception:  # noqa: BLE001  (another worker created it between our check and create)
            if mlflow.get_experiment_by_name(experiment) is None:
                raise
            _ensure_experiment(mlflow, experiment, None)
        return mlflow
    from filelock import FileLock  # noqa: PLC0415

    root = Path(root).resolve() if root else mlruns_dir()
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    uri = sqlite_uri(root)
    with FileLock(str(root / ".setup.lock"), timeout=10 * SQLITE_TIMEOUT_S):
        _enable_wal(root / "mlflow.db")
        _set_uris_in_process(mlflow, uri)
        _ensure_experiment(mlflow, experiment, root)
    return mlflow


def _telemetry_off_if_asked() -> None:
    """Drop MLflow's telemetry client when the environment disables telemetry (the package sets
    ``MLFLOW_DISABLE_TELEMETRY=true`` by default: :mod:`robustct`). MLflow decides when it is first imported;
    this covers a process that imported ``mlflow`` before ``robustct`` (a notebook)."""
    try:
        from mlflow.telemetry.client import get_telemetry_client, set_telemetry_client  # noqa: PLC0415
        from mlflow.telemetry.utils import is_telemetry_disabled  # noqa: PLC0415

        if get_telemetry_client() is not None and is_telemetry_disabled():
            set_telemetry_client()  # sets None when disabled
    except ImportError:  # another MLflow version without this module: nothing to turn off here
        pass


def _set_uris_in_process(mlflow, uri: str) -> None:
    """Point this process's MLflow at ``uri`` without leaving it in ``os.environ``.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``; left there it would be read as the
    user's choice by the next :func:`setup` (another project or store in the same process) and inherited by
    child processes (``dvc repro`` started from a test).
    """
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _enable_wal(db: Path) -> None:
    """Write-ahead logging: readers never block the writer (persistent in the file; local disks only)."""
    con = sqlite3.connect(db, timeout=SQLITE_TIMEOUT_S)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def _ensure_experiment(mlflow, name: str, root: Path | None) -> None:
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        location = (root / "artifacts").as_uri() if root else None
        mlflow.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        exp = mlflow.get_experiment_by_name(name)
    elif root is not None:
        relocate_store(root, exp.artifact_location)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=exp.experiment_id)


# -- moved or copied stores --------------------------------------------------------------------
def _uri_path(uri: str) -> Path | None:
    p = urlparse(uri)
    return Path(unquote(p.path)) if p.scheme == "file" else None


def relocate_store(root: Path, artifact_location: str) -> int:
    """Rewrite the absolute artifact paths of a SQLite store that now lives in ``root``.

    The project's experiment is created with the artifact location ``<store>/artifacts``; when that recorded
    ``<store>`` differs from ``root`` (the folder was moved or copied), every text value in the database that
    starts with the old folder (``file://`` URI or plain path) is rewritten to start with ``root``. Artifact
    locations the project did not create (another folder name) are left alone.

    Returns:
        the number of values rewritten (0 when nothing had moved).
    """
    old = _uri_path(artifact_location)
    root = Path(root).resolve()
    if old is None or old.name != "artifacts" or old.parent == root or not (root / "artifacts").is_dir():
        return 0
    pairs = [(old.parent.as_uri(), root.as_uri()), (str(old.parent), str(root))]
    con = sqlite3.connect(root / "mlflow.db", timeout=SQLITE_TIMEOUT_S)
    changed = 0
    try:
        with con:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                cols = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')
                        if any(t in (r[2] or "").upper() for t in ("CHAR", "TEXT", "CLOB"))]
                for col in cols:
                    for a, b in pairs:
                        cur = con.execute(
                            f'UPDATE "{table}" SET "{col}" = ? || substr("{col}", ?) '
                            f'WHERE substr("{col}", 1, ?) = ? AND (length("{col}") = ? '
                            f'OR substr("{col}", ?, 1) IN (\'/\', \'?\'))',
                            (b, len(a) + 1, len(a), a, len(a), len(a) + 1))
                        changed += cur.rowcount
    finally:
        con.close()
    print(f"note: the MLflow store moved from {old.parent} to {root}; rewrote {changed} artifact locations",
          file=sys.stderr)
    return changed


# -- runs named by output files ---------------------------------------------------------------
@dataclass(frozen=True)
class RunRef:
    """What ``outputs/*/run.json`` names, checked against the current store.

    ``run_id``/``model_uri`` are ``None`` when absent from the store (and ``on_missing='new'``).
    """
    run_id: str | None
    model_uri: str | None
    warning: str | None = None


def run_problem(mlflow, info: dict, stage: str) -> str | None:
    """Why the run (and logged model) that a ``run.json`` content ``info`` names is unusable in the current
    store, or ``None`` when both exist and are live.

    Unusable: no run id (``--no-track``); a run the current store (tracking URI) does not have (another
    machine, another store, a deleted ``mlruns/``); a run that exists but was deleted (``mlflow runs delete``,
    the UI's delete: its ``lifecycle_stage`` is ``deleted``, it is hidden from searches and ``mlflow gc`` may
    purge it), or whose experiment was deleted; a logged model (``models:/m-...``) the store does not have.
    A deleted run still answers ``get_run``, so it is checked explicitly.
    """
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    run_id, model_uri = (info or {}).get("run_id"), (info or {}).get("model_uri")
    if not run_id:
        return f"names no MLflow run (the `{stage}` stage ran with --no-track)"
    try:
        run = mlflow.get_run(run_id)
    except MlflowException:
        return f"names run {run_id}, which is not in the store {describe_store()} (new machine or deleted mlruns/?)"
    if getattr(run.info, "lifecycle_stage", "active") == "deleted":
        return f"names run {run_id}, which was deleted in the store {describe_store()}"
    try:
        exp = mlflow.get_experiment(run.info.experiment_id)
    except MlflowException:
        exp = None
    if exp is None or exp.lifecycle_stage == "deleted":
        return (f"names run {run_id}, whose experiment {run.info.experiment_id} was deleted in the store "
                f"{describe_store()}")
    if model_uri and model_uri.startswith("models:/m-"):
        try:
            mlflow.get_logged_model(model_uri.removeprefix("models:/"))
        except MlflowException:
            return f"names model {model_uri}, which is not in the store {describe_store()}"
    return None


def _fix(stage: str) -> str:
    return (f"rerun `dvc repro -f {stage}` (or `robustct {stage}`) to log it again, or set "
            f"MLFLOW_TRACKING_URI / {STORE_ENV} to the store that has it")


def require_run(mlflow, info: dict, run_json: Path, stage: str | None = None) -> None:
    """Check BEFORE a stage writes anything that the run (and model) named in ``run_json`` are in the store.

    Args:
        info: the content of ``run_json`` (``{"run_id": ..., "model_uri": ...}``).
        stage: the DVC stage that writes ``run_json`` (default: its folder name, ``train`` / ``defend``).

    Raises:
        MissingRunError: one line naming the file, the store and the fix.
    """
    stage = stage or Path(run_json).parent.name
    problem = run_problem(mlflow, info, stage)
    if problem:
        raise MissingRunError(f"{run_json}: {problem}; {_fix(stage)}")


def resolve_run(run_json: Path, stage: str, on_missing: str = "error") -> RunRef:
    """Like :func:`require_run`, reading ``run_json`` and setting up the store itself; with
    ``on_missing='new'`` a missing run prints one warning line and returns ``RunRef(None, None, warning)``
    (the caller starts a fresh run) instead of raising.

    Raises:
        MissingRunError: (``on_missing='error'``) one line naming the file, the store and the fix.
        FileNotFoundError: ``run_json`` does not exist.
    """
    from .io import read_json  # noqa: PLC0415

    if on_missing not in ("error", "new"):
        raise ValueError(f"on_missing must be 'error' or 'new', got {on_missing!r}")
    info = read_json(run_json, stage)
    mlflow = setup()
    problem = run_problem(mlflow, info, stage)
    if problem is None:
        return RunRef(info.get("run_id"), info.get("model_uri"))
    if on_missing == "error":
        raise MissingRunError(f"{run_json}: {problem}; {_fix(stage)}")
    warning = f"warning: {run_json}: {problem}; logging to a new run instead ({_fix(stage)})"
    print(warning, file=sys.stderr)
    return RunRef(None, None, warning)


# -- runs -------------------------------------------------------------------------------------
@contextmanager
def stage_run(stage: str, *, run_name: str | None = None, run_id: str | None = None, split_dir: Path | None = None,
              splits: tuple[str, ...] = (), tags: dict | None = None, track: bool = True):
    """Start (or resume ``run_id``) the stage's run where the work starts, so durations and steps are true.

    The run gets :func:`standard_tags`, ``stage`` and ``tags``; each split in ``splits`` (``train``, ``val``,
    ``test``) is logged as a dataset input (:func:`log_split_inputs`). With ``track=False`` nothing is set up
    and ``(None, None)`` is yielded.

    Yields:
        ``(mlflow, run)``.
    """
    if not track:
        with nullcontext((None, None)) as pair:
            yield pair
        return
    mlflow = setup()
    all_tags = {**standard_tags(split_dir), "stage": stage, **(tags or {})}
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, tags=all_tags) as run:
        if split_dir is not None and splits:
            log_split_inputs(mlflow, split_dir, splits)
        yield mlflow, run


def log_split_inputs(mlflow, split_dir: Path, splits: tuple[str, ...] = ("train", "val", "test"),
                     dvc_file: Path = Path("data.dvc")) -> dict[str, str]:
    """Log each split file as an MLflow dataset input of the active run (the UI's Dataset column).

    Name ``covid-ct-<split>``, context ``training`` / ``validation`` / ``test``, source the split file's
    path relative to the project, targets ``label_index``, and a digest (16 hex) of the DVC data version and
    the split file's bytes, so two runs show the same digest exactly when they used the same images and split.

    Returns:
        ``{split: digest}``.

    Raises:
        FileNotFoundError: a split file is missing.
    """
    import pandas as pd  # noqa: PLC0415

    from .io import read_split  # noqa: PLC0415

    version = data_version(dvc_file)
    digests = {}
    for name in splits:
        df = read_split(split_dir, name)
        path = Path(split_dir) / f"{name}.csv"
        digest = split_digest(version, path)
        try:
            source = str(path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            source = str(path.resolve())
        frame = pd.DataFrame(df)
        ints = frame.select_dtypes("integer").columns  # as float: MLflow warns that int columns cannot hold NaN
        frame[ints] = frame[ints].astype("float64")
        with warnings.catch_warnings():  # the local-file dataset source resolution warns about its own fallback
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(frame, source=source, name=f"covid-ct-{name}", digest=digest,
                                         targets="label_index" if "label_index" in frame else None)
        mlflow.log_input(ds, context=SPLIT_CONTEXTS.get(name, name),
                         tags={"data_version": version, "split_file": f"{name}.csv"})
        digests[name] = digest
    return digests


def split_digest(version: str, split_file: Path) -> str:
    """16-hex digest of a data version string and a split file's bytes."""
    h = hashlib.sha256(version.encode())
    h.update(b"\0" + Path(split_file).read_bytes())
    return h.hexdigest()[:16]


def file_hash(path: Path) -> str:
    """Short SHA-256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


PIPELINE_WRITTEN = ("dvc.lock", "docs/results")
"""Tracked paths that ``dvc repro`` itself rewrites while it runs (DVC's lock file after every stage, the report
stage's page); a change to them does not make the code dirty."""


def git_commit() -> str:
    """HEAD commit, suffixed ``-dirty`` when tracked files other than :data:`PIPELINE_WRITTEN` differ from it
    (so the stages of one ``dvc repro`` of a committed tree all record the clean commit); ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                *(f":(top,exclude){p}" for p in PIPELINE_WRITTEN)],
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_version(dvc_file: Path = Path("data.dvc")) -> str:
    """The dataset version: the md5 DVC records in ``data.dvc`` (else the pinned checksum list's hash)."""
    import yaml  # noqa: PLC0415

    if Path(dvc_file).is_file():
        outs = (yaml.safe_load(Path(dvc_file).read_text()) or {}).get("outs", [{}])
        if outs and outs[0].get("md5"):
            return "dvc-md5:" + outs[0]["md5"]
    from .data.ingest import dataset_version  # noqa: PLC0415

    return "sha256sums:" + dataset_version()


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name as the OS reports it (the first "model name" line of ``cpuinfo`` on Linux, else
    ``platform.processor()``); ``"unknown"`` when neither says."""
    import platform  # noqa: PLC0415

    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip() or "unknown"
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_tags() -> dict[str, str]:
    """What of the machine decides the bits of a model trained on the CPU: torch version, device, the number of
    torch intra-op threads, the vector instruction set torch's kernels use (``torch.backends.cpu``: e.g. AVX2,
    AVX512) and the CPU model. The same recipe, data and seed give different weights with one thread instead of
    two, and on CPUs whose kernels sum in another order (docs/operations.md, "Reproducibility")."""
    import torch  # noqa: PLC0415  (the stages that track have it loaded)

    from .io import device  # noqa: PLC0415

    return {"torch_version": torch.__version__, "device": str(device()),
            "torch_num_threads": str(torch.get_num_threads()),
            "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()), "cpu_model": cpu_model()}


def standard_tags(split_dir: Path | None = None) -> dict[str, str]:
    """Tags for every run: git commit, data version, split files' hashes, and what of the machine decides the
    bits of a trained model (:func:`machine_tags`)."""
    tags = {"git_commit": git_commit(), "data_version": data_version(), **machine_tags()}
    if split_dir is not None:
        for name in ("train", "val", "test"):
            f = Path(split_dir) / f"{name}.csv"
            if f.is_file():
                tags[f"split_{name}_sha256"] = file_hash(f)
    return tags


# -- models -------------------------------------------------------------------------------------
MODEL_CHECKPOINT = "checkpoint.pt"
"""Name of the weights-only checkpoint stored with every logged model (``extra_files/``)."""


def log_model(mlflow, model, x_example) -> str:
    """Log ``model`` (a :class:`robustct.models.Classifier`, an :class:`~robustct.models.Ensemble` or a defence
    composite) to the active run; return its model URI. An ensemble's two outputs are log-probabilities (logits
    whose softmax is the members' mean probability); its metadata adds ``ensemble_size``.

    Saved with the PyTorch flavour in ``pickle`` format plus this package as code, so
    ``mlflow.pytorch.load_model(uri)`` returns the :class:`~robustct.models.Classifier` itself (an
    ``nn.Module`` with ``eval``/``train``, parameters, input gradients, any batch size) in any process,
    and ``mlflow.pyfunc`` / ``mlflow models serve`` accept float32 arrays ``(N, 1, H, W)`` in [0, 1] (the
    signature) and return the 2 logits. MLflow's default ``pt2`` format (``torch.export``) would give a
    ``torch.fx`` graph whose ``eval()``/``train()`` raise and whose dropout/BatchNorm modes are frozen.
    A weights-only checkpoint (``extra_files/checkpoint.pt``) rides along for
    :func:`robustct.models.load_registered`, which rebuilds the model without unpickling code
    (for stores opened with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``).

    Args:
        x_example: uint8 images (N >= 2, 1, H, W); two of them become the input example.
    """
    import tempfile  # noqa: PLC0415

    import torch  # noqa: PLC0415
    from mlflow.models import infer_signature  # noqa: PLC0415

    model = model.cpu().eval()
    example = (x_example[:2].float() / 255.0).numpy()
    size = example.shape[-1]
    with torch.no_grad():
        out = model(torch.from_numpy(example)).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / MODEL_CHECKPOINT
        torch.save(model.checkpoint(), ckpt)  # weights-only format of robustct.models.save_checkpoint
        info = mlflow.pytorch.log_model(
            model, name="model", signature=infer_signature(example, out), input_example=example,
            serialization_format="pickle", code_paths=[str(PACKAGE_DIR)], extra_files=[str(ckpt)],
            metadata={"input": f"float32 (N, 1, {size}, {size}) grayscale in [0, 1]",
                      "output": "float32 (N, 2) logits [non_covid, covid]; argmax is the decision (threshold folded in)",
                      "threshold": float(model.config.get("threshold", 0.5)), "backbone": model.config.get("backbone"),
                      **({"ensemble_size": model.config["ensemble"]["size"]} if "ensemble" in model.config else {})},
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "torchvision==0.29.1", "timm>=1.0,<2",
                              "cloudpickle"],
        )
    return info.model_uri


def flatten_params(d: dict, prefix: str = "") -> dict:
    """Nested params as ``{"a.b": value}`` (MLflow params are flat)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out

