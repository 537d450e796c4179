#!/usr/bin/env python3
"""data/external/chat_domains.jsonl: questions people type to an assistant or a search
box, each with one of the 14 domains (MMLU-Pro's categories), from three public sources.

usage: chat_domains.py EXPERTQA_GITDIR TRUTHFULQA_GITDIR LIVEQA_GITDIR
  (fetch github:chaitanyamalaviya/ExpertQA, github:koppula/TruthfulQA,
   github:yuvalpinter/liveqa-organizers)

- ExpertQA (Malaviya et al., 2024), data/r1_data_anon.jsonl: 2,507 questions written by
  experts of 34 fields; the label is the writer's field (and, for "Engineering and
  Technology", their specific field), not a judgement of the question.
- TruthfulQA (Lin et al., 2022), TruthfulQA.csv (the authors' revised 790 questions; the
  fork keeps their history): short questions in 37 categories.
- TREC LiveQA 2016's Yahoo Answers questions, data/liveqa-5k.gz (4,635 lines): real user
  questions (title, then body) in Yahoo's category tree.

The mapping onto the 14 domains follows MMLU-Pro's own assignment of MMLU subjects
(../shared/data/domain/mmlu_pro.jsonl, field `src`): world religions count as philosophy,
nutrition as health, astronomy as physics, computer security and machine learning as
computer science, finance as business, and accounting, geography, politics, sociology
and everything outside the academic subjects as "other". Fields that straddle domains
are left out (unmapped). It was fixed before any model was trained on these rows.
Rows: {id, text, label, origin, source}; `origin` is the source's own label.

Two files: chat_domains.jsonl (every row; evaluation reads its validation and test
splits) and chat_domains_cap300.jsonl, what the shipped model trains on: at most
CAP_PER_LABEL rows of each domain (in the order of a SHA-1 of the text), because
"other" (3,841 rows, mostly Yahoo's) and health (1,944) would otherwise set the domain head's
priors. The cap was chosen on validation among 150, 300, 500 and none (BENCHMARKS.md,
"Chat-phrased training data").
"""
import csv
import gzip
import hashlib
import html
import io
import json
import os
import re
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import EXTERNAL, Filter, licence_head, provenance, show, write_jsonl  # noqa: E402

EXPERTQA = {
    "Healthcare / Medicine": "health", "Medicine": "health", "Law": "law", "Chemistry": "chemistry",
    "Psychology": "psychology", "Business": "business", "Biology": "biology", "History": "history",
    "Classical Studies": "history", "Physics and Astronomy": "physics", "Nuclear Science": "physics",
    "Economics": "economics", "Mathematics": "math", "Philosophy": "philosophy", "Theology": "philosophy",
    "Aviation": "engineering", "Education": "other", "Visual Arts": "other", "Linguistics": "other",
    "Music": "other", "Literature": "other", "Culinary Arts": "other", "Journalism": "other",
    "Geography": "other", "Other": "other", "Political Science": "other", "Sociology": "other",
    "Military or Law Enforcement": "other",
    # Unmapped: Architecture, Environmental Science, Climate Science, Anthropology, Criminology.
}
# "Engineering and Technology" writers whose specific field is software, data or security.
COMPUTING = re.compile(
    r"software|web|\bit\b|cyber|comput|developer|developing|software develop|web develop|cloud|crm|"
    r"salesforce|\bux\b|program|data|"
    r"machine learning|artificial intelligence|\bxai\b|blockchain|digital workplace|multimedia|game design",
    re.I)

TRUTHFULQA = {
    "Law": "law", "Health": "health", "Nutrition": "health", "Economics": "economics", "Finance": "business",
    "History": "history", "Psychology": "psychology", "Statistics": "math", "Religion": "philosophy",
    "Fiction": "other", "Paranormal": "other", "Superstitions": "other", "Myths and Fairytales": "other",
    "Proverbs": "other", "Misquotations": "other", "Advertising": "other", "Conspiracies": "other",
    "Weather": "other", "Language": "other", "Politics": "other", "Sociology": "other",
    # Unmapped: Misconceptions, Science, Confusion:*, Indexical Error:*, Stereotypes, ...
}

CAP_PER_LABEL = 300

# Only programming questions: the Security and Computer Networking leaves are mostly
# consumer help (passwords, home Wi-Fi), which goes to "other" with the rest.
LIVEQA_COMPUTING = {"Programming & Design"}


def liveqa_label(top, leaf):
    if top == "Health":
        return "psychology" if leaf == "Mental Health" else "health"
    if top == "Computers & Internet":
        return "computer science" if leaf in LIVEQA_COMPUTING else "other"
    if top == "Arts & Humanities" and leaf in ("Philosophy", "History"):
        return leaf.lower()
    return "other"


def expertqa(gd):
    commit = provenance("chaitanyamalaviya/ExpertQA", gd, licence_head(gd))
    for line in show(gd, "data/r1_data_anon.jsonl").splitlines():
        d = json.loads(line)
        field, specific = d["metadata"]["field"], d["metadata"]["specific_field"]
        if field == "Engineering and Technology":
            label = "computer science" if COMPUTING.search(specific) else "engineering"
        else:
            label = EXPERTQA.get(field)
        yield d["question"], label, f"{field} / {specific}", f"chaitanyamalaviya/ExpertQA@{commit[:7]}"


def truthfulqa(gd):
    commit = provenance("koppula/TruthfulQA (sylinrl/TruthfulQA's history)", gd, licence_head(gd))
    for r in csv.DictReader(io.StringIO(show(gd, "TruthfulQA.csv"))):
        yield r["Question"], TRUTHFULQA.get(r["Category"]), r["Category"], f"koppula/TruthfulQA@{commit[:7]}"


def liveqa(gd):
    commit = provenance("yuvalpinter/liveqa-organizers", gd, licence_head(gd))
    raw = gzip.decompress(show(gd, "data/liveqa-5k.gz", binary=True)).decode("utf-8", "replace")
    for line in raw.splitlines():
        parts = line.split("\t", 5)  # a body may hold tabs
        if len(parts) != 6:
            print(f"liveqa: skipped a line of {len(parts)} fields")
            continue
        _, leaf, top, _, title, body = parts
        title, body = html.unescape(title).strip(), html.unescape(body).strip()
        text = title if not body or body == title else f"{title}\n{body}"
        yield text, liveqa_label(top, leaf), f"{top} / {leaf}", f"yuvalpinter/liveqa-organizers@{commit[:7]}"


def main():
    if len(sys.argv) != 4 or not all(os.path.isdir(p) for p in sys.argv[1:]):
        sys.exit(__doc__)
    filt = Filter()
    out, unmapped = [], Counter()
    for name, rows in (("expertqa", expertqa(sys.argv[1])), ("truthfulqa", truthfulqa(sys.argv[2])),
                       ("liveqa", liveqa(sys.argv[3]))):
        for i, (text, label, origin, source) in enumerate(rows):
            text = text.strip()
            if not text:
                continue
            if label is None:
                unmapped[name] += 1
                continue
            if not filt.keep(text):
                continue
            out.append({"id": f"{name}-{i}", "text": text, "label": label, "origin": origin, "source": source})
    print(f"unmapped (left out): {dict(unmapped)}; " + filt.report())
    by_source = Counter(r["id"].split("-")[0] for r in out)
    print("rows by source:", dict(by_source))
    print("rows by domain:", dict(sorted(Counter(r["label"] for r in out).items())))
    write_jsonl(os.path.join(EXTERNAL, "chat_domains.jsonl"), out)
    taken, capped = Counter(), []
    for r in sorted(out, key=lambda r: hashlib.sha1(r["text"].encode()).hexdigest()):
        taken[r["label"]] += 1
        if taken[r["label"]] <= CAP_PER_LABEL:
            capped.append(r)
    write_jsonl(os.path.join(EXTERNAL, f"chat_domains_cap{CAP_PER_LABEL}.jsonl"), capped)


if __name__ == "__main__":
    main()
