"""Find a Hugging Face model on this machine, never on the network: in a Hugging Face hub cache
(`models--org--name/refs/<branch>` holding a commit hash, `snapshots/<commit>/` the files, as
`huggingface-cli download` leaves them) or in a plain models folder (`<root>/org/name/config.json`).

The places searched, in order: the folders the operator named (`tuneforge serve --models-dir`, each
either layout), then the hub cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
`~/.cache/huggingface/hub`). Stdlib only: the API checks a source before anything heavy loads.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import TuneForgeError

DEFAULT_BRANCH = "main"
# The hub's rule for repository names: an optional owner, a name of letters, digits, '.', '_' and '-'
# (no leading '.' or '-', no '--' or '..' inside), up to 96 characters each.
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
MODEL_ID = re.compile(rf"^(?:{_PART}/)?{_PART}$")
COMMIT = re.compile(r"^[0-9a-f]{4,40}$")
BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")


class ModelNotFound(TuneForgeError):
    """The model is in none of the places searched. `str()` names the folders (for the operator's own
    command line); `without_paths()` describes them without any path (for an API's answer)."""

    def __init__(self, what: str, looked: list[str], roots: int, models_dirs: int, hint: str = ""):
        self.what, self.looked, self.hint = what, looked, hint
        self.places = f"the server's Hugging Face cache and its {models_dirs} models folder(s) (--models-dir)"
        if not models_dirs:
            self.places = "the server's Hugging Face cache (no --models-dir was given to `tuneforge serve`)"
        where = "; ".join(looked) if looked else "no folder to search"
        super().__init__(f"{what} not found offline; looked in: {where}{hint}")

    def without_paths(self) -> str:
        return f"{self.what} not found in {self.places}{self.hint}"


@dataclass(frozen=True)
class Found:
    path: Path  # the model folder (a snapshot, or the plain folder)
    commit: str | None  # the snapshot's commit hash; None for a plain folder
    layout: str  # "hub cache" | "models folder"


def cache_root() -> Path:
    """The hub cache the `huggingface_hub` library itself uses (same environment variables)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def search_roots(models_dirs: tuple[Path, ...] | list[Path] = ()) -> list[Path]:
    """Where `resolve` looks: the operator's folders first (explicit beats ambient), then the cache."""
    roots = [Path(d).expanduser() for d in models_dirs]
    cache = cache_root()
    return roots + ([cache] if cache not in roots else [])


def check_reference(model_id: str, branch: str | None, commit: str | None) -> list[str]:
    """Problems with a model id, branch and commit as given (field: problem), before any lookup."""
    problems = []
    if not MODEL_ID.match(model_id) or ".." in model_id or "--" in model_id:
        problems.append(
            f"modelId: {model_id[:200]!r} is not a Hugging Face model id (owner/name: letters, digits, '.', '_' or '-')"
        )
    if branch is not None and (not BRANCH.match(branch) or ".." in branch):
        problems.append(f"branch: {branch[:200]!r} is not a branch name")
    if commit is not None and not COMMIT.match(commit):
        problems.append(f"commit: {commit[:200]!r} is not a commit hash (4 to 40 lowercase hexadecimal digits)")
    return problems


def resolve(model_id: str, branch: str | None = None, commit: str | None = None, roots: list[Path] | None = None) -> Found:
    """The folder of `model_id` at `commit` (a full hash or a unique prefix) or else at the head of
    `branch` (default main). Raises ModelNotFound (or TuneForgeError for a bad reference)."""
    problems = check_reference(model_id, branch, commit)
    if problems:
        raise TuneForgeError("; ".join(problems))
    roots = search_roots() if roots is None else roots
    models_dirs = len(roots) - (1 if cache_root() in roots else 0)
    at = f" at commit {commit}" if commit else f" on branch {branch}" if branch else ""
    looked: list[str] = []
    hint = ""
    for root in roots:
        repo = root / ("models--" + model_id.replace("/", "--"))
        if repo.is_dir():
            found, why = _in_cache(repo, branch or DEFAULT_BRANCH, commit)
            if found is not None:
                return found
            looked.append(f"{repo} ({why})")
            hint = hint or f": {why}"
            continue
        plain = root.joinpath(*model_id.split("/"))
        if (plain / "config.json").is_file():
            if commit or (branch and branch != DEFAULT_BRANCH):
                why = "a plain folder has no branches or commits; leave them out, or use a hub cache"
                looked.append(f"{plain} ({why})")
                hint = hint or f": found in a models folder, but {why}"
                continue
            return Found(plain, None, "models folder")
        looked.append(f"{root} (no models--{model_id.replace('/', '--')} or {model_id}/config.json)")
    if not hint:
        hint = f"; the operator can put it there with `huggingface-cli download {model_id}` on a machine with network"
    raise ModelNotFound(f"Hugging Face model {model_id}{at}", looked, len(roots), models_dirs, hint)


def _in_cache(repo: Path, branch: str, commit: str | None) -> tuple[Found | None, str]:
    snapshots = repo / "snapshots"
    available = sorted(p.name for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []
    if commit is not None:
        matches = [name for name in available if name.startswith(commit)]
        if len(matches) > 1:
            return None, f"commit {commit} is ambiguous: {len(matches)} snapshots start with it"
        if not matches:
            have = ", ".join(name[:12] for name in available) or "none"
            return None, f"no snapshot of commit {commit} (snapshots: {have})"
        return Found(snapshots / matches[0], matches[0], "hub cache"), ""
    ref = repo / "refs" / branch
    if not ref.is_file():
        refs = repo / "refs"
        have = ", ".join(sorted(str(p.relative_to(refs)) for p in refs.rglob("*") if p.is_file())) if refs.is_dir() else ""
        return None, f"no branch {branch} in the cache (branches: {have or 'none'})"
    head = ref.read_text().strip()
    if head not in available:
        return None, f"branch {branch} points at commit {head[:12]}, whose snapshot is not in the cache"
    return Found(snapshots / head, head, "hub cache"), ""
