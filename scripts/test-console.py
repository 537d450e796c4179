#!/usr/bin/env python3
"""Browser test of the web console (GET /ui) against a running gateway.

    python3 scripts/test-console.py --base http://127.0.0.1:PORT --key KEY \\
        --expect EXPECT.json --request-id REQ_ID --out DIR

Headless Chromium opens the overview, spend, budgets, latency and requests views with
the key, the view and the expected range in the URL fragment, dumps each view's DOM
once it has loaded and takes a screenshot of it; both land in DIR. The dumped DOM is
then read for what the page drew (KPI values, chart data-value/data-label attributes,
the request detail) and compared with EXPECT.json, and with /v1/spend fetched over
HTTP with the same key, so the page, the API and the expectation must all agree.
Money is compared as exact decimals.

EXPECT.json: {"from", "to", "totals": {"requests", "cost_usd", "reference_cost_usd",
"savings_usd"}, "days": [...], "teams": {"team": "cost"}, "budgets": ["scope:id"],
"deployments": [...], "request": {"id", "rule", "reasons_any": [...]}}

Prints one line per check; exit status 0 when all pass, 1 otherwise. Standard library
only.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from decimal import Decimal
from html.parser import HTMLParser

VIEWS = ["overview", "spend", "budgets", "latency", "requests"]
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
    "--virtual-time-budget=10000", "--window-size=1280,2000",
]
# Elements without an end tag: they never hold children.
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

failures = []


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(f"{name}: {detail}" if detail else name)
    return ok


# ---- The dumped DOM as a tree ------------------------------------------------------


class Element:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.children = []  # Elements and strings

    def walk(self):
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.walk()

    def find_all(self, tag=None, **attrs):
        """Descendants (and self) with `tag` whose attributes equal `attrs` (None: present)."""
        for el in self.walk():
            if tag and el.tag != tag:
                continue
            if all(el.attrs.get(k.replace("_", "-")) == v if v is not None else k.replace("_", "-") in el.attrs
                   for k, v in attrs.items()):
                yield el

    def find(self, tag=None, **attrs):
        return next(self.find_all(tag, **attrs), None)

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)


class TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, None)
        self.current = self.root

    def handle_starttag(self, tag, attrs):
        el = Element(tag, attrs, self.current)
        self.current.children.append(el)
        if tag not in VOID:
            self.current = el

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Element(tag, attrs, self.current))

    def handle_endtag(self, tag):
        # Close up to the matching open element; a stray end tag is ignored.
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(html):
    builder = TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


# ---- Chromium and the API ----------------------------------------------------------


def view_url(args, expect, view):
    fragment = {"key": args.key, "view": view, "from": expect["from"], "to": expect["to"]}
    if view == "requests":
        fragment["request"] = args.request_id
    return f"{args.base}/ui#{urllib.parse.urlencode(fragment, quote_via=urllib.parse.quote)}"


def chromium(args, url, *extra):
    with tempfile.TemporaryDirectory(prefix="console-test-") as profile:
        cmd = [args.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-500:]}")
    return done.stdout


def api(args, path, **params):
    url = f"{args.base}{path}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {args.key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


# ---- What the page drew ------------------------------------------------------------


def chart(dom, name, **attrs):
    return dom.find("svg", data_chart=name, **attrs)


def points(svg, series=None):
    """(label, value) of every drawn datum in a chart, of one series if given."""
    if svg is None:
        return []
    return [(el.attrs.get("data-label"), el.attrs["data-value"])
            for el in svg.find_all(data_value=None)
            if series is None or el.attrs.get("data-series") == series]


def drawn(name, svg):
    """A chart that exists, is not the empty placeholder, and has data."""
    if not check(f"{name}: chart present", svg is not None):
        return False
    return check(f"{name}: chart drawn (not empty)", "data-empty" not in svg.attrs and bool(points(svg)),
                 "it shows 'No data in this range'")


def kpis(dom):
    return {el.attrs["data-kpi"]: el.attrs.get("data-value") for el in dom.find_all(data_kpi=None)}


def dsum(values):
    return sum((Decimal(v) for v in values), Decimal(0))


def same_money(name, got, want, source="page"):
    try:
        ok = got is not None and Decimal(got) == Decimal(want)
    except ArithmeticError:
        ok = False
    return check(name, ok, f"{source} {got!r}, expected {want!r}")


# ---- The checks, view by view ------------------------------------------------------


def check_overview(dom, expect):
    totals = expect["totals"]
    k = kpis(dom)
    check("overview: KPI requests", k.get("requests") == str(totals["requests"]),
          f"page {k.get('requests')!r}, expected {totals['requests']}")
    same_money("overview: KPI spend", k.get("spend"), totals["cost_usd"])
    same_money("overview: KPI reference cost", k.get("reference"), totals["reference_cost_usd"])
    same_money("overview: KPI savings", k.get("savings"), totals["savings_usd"])

    svg = chart(dom, "spend-vs-reference")
    if drawn("overview: spend-vs-reference", svg):
        spend = points(svg, "spend")
        labels = [label for label, _ in spend]
        missing = [d for d in expect["days"] if labels.count(d) != 1]
        check("overview: spend-vs-reference has one point per expected day", not missing,
              f"days without exactly one point: {missing}")
        extra = [(d, v) for d, v in spend if d not in expect["days"] and Decimal(v) != 0]
        check("overview: spend-vs-reference spends nothing on other days", not extra, f"{extra}")
        same_money("overview: spend-vs-reference spend points sum to the cost",
                   str(dsum(v for _, v in spend)), totals["cost_usd"])
        same_money("overview: spend-vs-reference reference points sum to the reference cost",
                   str(dsum(v for _, v in points(svg, "reference"))), totals["reference_cost_usd"])

    svg = chart(dom, "requests-by-destination")
    if drawn("overview: requests-by-destination", svg):
        got = dsum(v for _, v in points(svg))
        check("overview: requests-by-destination bars sum to the requests", got == totals["requests"],
              f"page {got}, expected {totals['requests']}")
    svg = chart(dom, "routing-mix")
    if drawn("overview: routing-mix", svg):
        got = dsum(v for _, v in points(svg))
        check("overview: routing-mix shares sum to the requests", got == totals["requests"],
              f"page {got}, expected {totals['requests']}")
    return k


def check_spend(dom, expect):
    svg = chart(dom, "spend-by-group")
    page = {}
    if drawn("spend: spend-by-group", svg):
        page = dict(points(svg, "cost"))
        for team, cost in expect["teams"].items():
            same_money(f"spend: spend-by-group cost of team {team}", page.get(team), cost)
        extra = sorted(set(page) - set(expect["teams"]) - {"—"})
        check("spend: spend-by-group has no unexpected team", not extra, f"{extra}")
    svg = chart(dom, "spend-over-time")
    if drawn("spend: spend-over-time", svg):
        same_money("spend: spend-over-time sums to the cost", str(dsum(v for _, v in points(svg))),
                   expect["totals"]["cost_usd"])
    return page


def check_budgets(dom, expect):
    for budget in expect["budgets"]:
        check(f"budgets: burn-down chart for {budget}", chart(dom, "burn-down", data_budget=budget) is not None)


def check_latency(dom, expect):
    svg = chart(dom, "latency")
    if drawn("latency: latency chart", svg):
        labels = {label for label, _ in points(svg)}
        missing = [d for d in expect["deployments"] if d not in labels]
        check("latency: every expected deployment is drawn", not missing, f"missing {missing}")


def check_request(dom, expect):
    detail = dom.find(id="request-detail")
    if not check("requests: #request-detail present", detail is not None):
        return
    text = " ".join(detail.text().split())
    want = expect["request"]
    check(f"requests: detail names rule {want['rule']}", want["rule"] in text)
    reasons = [" ".join(r.split()) for r in want.get("reasons_any", [])]
    check("requests: detail shows an expected reason", any(r in text for r in reasons),
          f"none of {reasons} in the panel")


def check_against_api(args, expect, page_kpis, page_teams):
    """The page's figures against /v1/spend over HTTP with the same key."""
    try:
        spend = api(args, "/v1/spend", group_by="team", **{"from": expect["from"], "to": expect["to"]})
    except Exception as e:  # noqa: BLE001 - reported as a failed check
        check("api: GET /v1/spend?group_by=team", False, str(e))
        return
    rows = spend["data"]
    requests = sum(r["requests"] for r in rows)
    check("api: requests equal the page's", str(requests) == page_kpis.get("requests"),
          f"api {requests}, page {page_kpis.get('requests')!r}")
    check("api: requests equal the expectation", requests == expect["totals"]["requests"],
          f"api {requests}, expected {expect['totals']['requests']}")
    for field, kpi_name in [("cost_usd", "spend"), ("reference_cost_usd", "reference"), ("savings_usd", "savings")]:
        total = str(dsum(r[field] for r in rows))
        same_money(f"api: {field} sum equals the page's {kpi_name}", page_kpis.get(kpi_name), total)
        same_money(f"api: {field} sum equals the expectation", total, expect["totals"][field], "api")
    for row in rows:
        if row["group"] is not None and page_teams:
            same_money(f"api: cost of team {row['group']} equals the page's", page_teams.get(row["group"]), row["cost_usd"])


CHECKS = {"overview": check_overview, "spend": check_spend, "budgets": check_budgets,
          "latency": check_latency, "requests": check_request}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the gateway, e.g. http://127.0.0.1:8080")
    parser.add_argument("--key", required=True, help="admin or console key")
    parser.add_argument("--expect", required=True, type=pathlib.Path)
    parser.add_argument("--request-id", help="request whose detail to open (default: EXPECT's)")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="where DOM dumps and screenshots go")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.base = args.base.rstrip("/")
    expect = json.loads(args.expect.read_text())
    args.request_id = args.request_id or expect["request"]["id"]
    args.out.mkdir(parents=True, exist_ok=True)

    results = {}
    for view in VIEWS:
        url = view_url(args, expect, view)
        try:
            html = chromium(args, url, "--dump-dom")
            chromium(args, url, f"--screenshot={(args.out / f'{view}.png').resolve()}")
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            check(f"{view}: chromium", False, str(e))
            continue
        (args.out / f"{view}.html").write_text(html)
        dom = parse(html)
        body = dom.find("body")
        attrs = body.attrs if body else {}
        ready = check(f"{view}: body[data-ready] is {view}", attrs.get("data-ready") == view,
                      f"data-ready={attrs.get('data-ready')!r} data-error={attrs.get('data-error')!r}")
        # The seeded request's `user` and fallbacks hold markup that sets this if run.
        check(f"{view}: markup from the ledger is shown as text, never run",
              "data-pwned" not in attrs, "an <img onerror> from a ledger field ran")
        if ready:
            results[view] = CHECKS[view](dom, expect)
    if "overview" in results:
        check_against_api(args, expect, results["overview"], results.get("spend") or {})

    print(f"\nscreenshots and DOM dumps in {args.out}")
    if failures:
        print(f"{len(failures)} check(s) failed:")
        for f in failures:
            print(f"  - {f}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
