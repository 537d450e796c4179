#!/usr/bin/env python3
"""Checks the Grafana dashboard and the Prometheus rules against the metrics Crossroads exports.

    python3 scripts/check-dashboards.py [README.md] [files...]

The exported names are read from README.md (section "Metrics") and from the string
literals "crossroads_..." under src/. Every crossroads_* name in a dashboard query,
annotation, variable or description, and anywhere in a rule file, must be one of them
(the *_seconds histograms also export _bucket, _sum and _count). The dashboard is also checked for
structure: JSON that parses, unique panel ids, a refId per query, every query on the
${datasource} variable, panels inside the 24-column grid and not overlapping.

Names listed in PENDING are accepted with a warning: metrics another change is adding.
Exit status 0 when every check passes, 1 otherwise. Standard library only.
"""
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_FILES = [
    "deploy/grafana/crossroads-dashboard.json",
    "deploy/prometheus/alerts.yml",
]
# Response-cache metrics (hit|miss|bypass, evictions, backend errors), being added.
PENDING = {
    "crossroads_cache_requests_total",
    "crossroads_cache_evictions_total",
    "crossroads_cache_errors_total",
}
NAME = re.compile(r"\bcrossroads_[a-z0-9_]*[a-z0-9]")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

errors = []


def fail(msg):
    errors.append(msg)
    print(f"FAIL {msg}")


def readme_metrics(readme):
    text = readme.read_text()
    m = re.search(r"^## Metrics\s*$(.*?)^## ", text, re.S | re.M)
    if not m:
        fail(f"{readme}: no '## Metrics' section")
        return set()
    return set(NAME.findall(m.group(1)))


def source_metrics():
    names = set()
    for path in (ROOT / "src").rglob("*.rs"):
        names.update(re.findall(r'"(crossroads_[a-z0-9_]+)"', path.read_text()))
    return names


def base_name(name, known):
    if name in known:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)]
        # Every histogram Crossroads exports is a duration: *_seconds.
        if name.endswith(suffix) and base in known and base.endswith("_seconds"):
            return base
    return None


def check_names(where, text, known, used):
    for name in NAME.findall(text):
        base = base_name(name, known)
        if base is None:
            fail(f"{where}: unknown metric {name}")
        else:
            used.add(base)


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def check_dashboard(path, known, used):
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        fail(f"{path}: not JSON: {e}")
        return
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        fail(f"{path}: no Prometheus `datasource` template variable")
    if not isinstance(d.get("schemaVersion"), int):
        fail(f"{path}: no schemaVersion")
    for name, v in variables.items():
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else str(q or "")
        check_names(f"{path}: variable {name}", q + " " + str(v.get("definition", "")), known, used)
    for a in d.get("annotations", {}).get("list", []):
        if "expr" in a:
            check_names(f"{path}: annotation {a.get('name')}", a["expr"], known, used)

    ids, cells, queries = set(), {}, 0
    for p in walk_panels(d.get("panels", [])):
        title = f"{path}: panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            fail(f"{title}: duplicate id")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if g.get("x", 0) + g.get("w", 0) > 24:
            fail(f"{title}: wider than the grid")
        for x in range(g.get("x", 0), g.get("x", 0) + g.get("w", 0)):
            for y in range(g.get("y", 0), g.get("y", 0) + g.get("h", 0)):
                if (x, y) in cells:
                    fail(f"{title}: overlaps panel {cells[(x, y)]}")
                    break
                cells[(x, y)] = p.get("id")
        check_names(title, p.get("description", ""), known, used)
        if p.get("type") == "row":
            continue
        targets = p.get("targets", [])
        if not targets:
            fail(f"{title}: no queries")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or None in refs:
            fail(f"{title}: missing or repeated refId")
        for t in targets + [p]:
            if t.get("datasource", {}).get("uid") != "${datasource}":
                fail(f"{title}: datasource is not ${{datasource}}")
        for t in targets:
            expr = t.get("expr", "")
            queries += 1
            if not NAME.search(expr):
                fail(f"{title}: query {t.get('refId')} names no crossroads metric")
            if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                fail(f"{title}: query {t.get('refId')} has unbalanced brackets")
            check_names(f"{title} {t.get('refId')}", expr, known, used)
    print(f"ok   {path}: {len(ids)} panels, {queries} queries")


def main():
    args = sys.argv[1:]
    readme = ROOT / "README.md"
    if args and args[0].endswith(".md"):
        readme = pathlib.Path(args.pop(0))
    files = [pathlib.Path(a) for a in args] or [ROOT / f for f in DEFAULT_FILES]

    documented = readme_metrics(readme)
    in_source = source_metrics()
    known = documented | in_source | PENDING
    for name in sorted(in_source - documented):
        print(f"note {name}: exported (src/) but not listed in README.md's Metrics section")
    for name in sorted(PENDING - documented - in_source):
        print(f"warn {name}: pending, neither in README.md nor in src/ yet")

    used = set()
    for f in files:
        if f.suffix == ".json":
            check_dashboard(f, known, used)
        else:
            check_names(str(f), f.read_text(), known, used)
            print(f"ok   {f}: metric names")

    dashboard_files = [f for f in files if f.suffix == ".json"]
    if dashboard_files:
        for name in sorted(documented - used):
            print(f"note {name}: documented, not shown or alerted on")
    if errors:
        print(f"{len(errors)} problem(s)")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
