"""Summarises the Rancher test server's node record (tests/rancher-server, nodes.json).

    server_record.py FILE             one line: the number of nodes, then per node
                                      "generation roles hostname connect_count"
                                      (tests/e2e/qcow2.sh, pxe.sh)
    server_record.py --per-node FILE  one line per node: "hostname generation roles connect_count"
                                      (scripts/crash-campaign.sh, scripts/lab); nothing when no node was recorded

Roles are comma-joined. A missing file means the server recorded no node."""

import json
import sys


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    return data["nodes"] if isinstance(data, dict) else data


def main(args):
    per_node = args[:1] == ["--per-node"]
    path = args[-1]
    nodes = load(path)
    if per_node:
        for n in nodes or []:
            print("%s %s %s %s" % (n["hostname"], n["generation"], ",".join(n["roles"]), n["connect_count"]))
        return
    if nodes is None:
        print("0 (no %s: the server recorded no node)" % path)
        return
    parts = [str(len(nodes))]
    for n in nodes:
        parts.append("%s %s %s %s" % (n["generation"], ",".join(n["roles"]), n["hostname"], n["connect_count"]))
    print(" ".join(parts))


if __name__ == "__main__":
    main(sys.argv[1:])
