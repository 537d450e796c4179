"""Shared helpers for the scripts in scripts/data/ (python3 stdlib only).

Every script rebuilds one JSONL from a fetched public snapshot (a bare git dir)
and never needs the network.  Texts are compared after `norm()`: lowercase,
alphanumerics only.
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXTERNAL = os.path.join(ROOT, "data", "external")
EVAL_ONLY = os.path.join(ROOT, "data", "eval-only")
SHARED = os.environ.get("CROSSROADS_SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))
EXCLUSIONS = os.path.join(EXTERNAL, "_exclusions.json")

_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_OPTIONS = re.compile(r"\n\s*\(?A[.)]\s.*", re.S)


def norm(text):
    return _NON_ALNUM.sub("", text.lower())


def stem(text):
    """The question without an appended 'A. ... B. ... Answer:' option block."""
    return _OPTIONS.sub("", text)


def keys(text):
    """Normalized keys a text is matched on: the whole text and its stem."""
    out = {norm(text), norm(stem(text))}
    out.discard("")
    return out


def git(gitdir, *args, binary=False):
    out = subprocess.run(["git", "--git-dir", gitdir, *args], check=True, capture_output=True).stdout
    return out if binary else out.decode("utf-8")


def show(gitdir, path, commit="HEAD", binary=False):
    return git(gitdir, "show", f"{commit}:{path}", binary=binary)


def head(gitdir):
    return git(gitdir, "rev-parse", "HEAD").strip()


def ls(gitdir, prefix="", commit="HEAD"):
    args = ["ls-tree", "-r", "--name-only", commit]
    if prefix:
        args += ["--", prefix]
    return [p for p in git(gitdir, *args).splitlines() if p]


def licence_head(gitdir, commit="HEAD", path="LICENSE"):
    try:
        return show(gitdir, path, commit).strip().splitlines()[0].strip()
    except subprocess.CalledProcessError:
        return "NO LICENSE FILE"


def gitdir_arg(argv, usage):
    if len(argv) < 2 or not os.path.isdir(argv[1]):
        sys.exit(usage)
    return argv[1]


def load_exclusions():
    """(excluded_keys, shared_keys): held-out / evaluation texts, and texts already in ../shared/data."""
    if not os.path.exists(EXCLUSIONS):
        sys.exit(f"{EXCLUSIONS} missing: run scripts/data/build_exclusions.py first")
    with open(EXCLUSIONS) as f:
        d = json.load(f)
    return set(d["excluded"]), set(d["shared"])


class Filter:
    """Drops rows whose text matches an excluded or an already-shared text; counts why."""

    def __init__(self):
        self.excluded, self.shared = load_exclusions()
        self.dropped_excluded = 0
        self.dropped_shared = 0
        self.dropped_dup = 0
        self.seen = set()

    def keep(self, text):
        k = keys(text)
        if k & self.excluded:
            self.dropped_excluded += 1
            return False
        if k & self.shared:
            self.dropped_shared += 1
            return False
        n = norm(text)
        if n in self.seen:
            self.dropped_dup += 1
            return False
        self.seen.add(n)
        return True

    def report(self):
        return (f"dropped by exclusion filter (held-out/eval texts): {self.dropped_excluded}; "
                f"dropped as already in ../shared/data: {self.dropped_shared}; "
                f"dropped as duplicate within source: {self.dropped_dup}")


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows -> {os.path.relpath(path, ROOT)}")


def provenance(repo, gitdir, licence, commit=None):
    commit = commit or head(gitdir)
    print(f"source: {repo} @ {commit}; licence: {licence}")
    return commit
