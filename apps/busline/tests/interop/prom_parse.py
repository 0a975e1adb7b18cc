"""Parses Prometheus text exposition (format 0.0.4) with prometheus-client.

Usage: prom_parse.py < exposition.txt
Prints one JSON object: each series, written `name{label="value",...}`
(labels in the order the text gives them), to its value. Exits 1 naming
what was wrong if the parser refuses the text or a series appears twice
(which Prometheus refuses in one scrape).
"""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def series(name, labels):
    if not labels:
        return name
    quoted = (json.dumps(v, ensure_ascii=False) for v in labels.values())
    return name + "{" + ",".join(f"{k}={q}" for k, q in zip(labels, quoted)) + "}"


def main():
    text = sys.stdin.read()
    out = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                key = series(s.name, s.labels)
                if key in out:
                    raise ValueError(f"duplicate series {key}")
                # JSON has no NaN or infinities: those go as strings.
                v = s.value
                out[key] = v if math.isfinite(v) else str(v)
    except ValueError as e:
        print(f"not Prometheus text: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump(out, sys.stdout)


main()
