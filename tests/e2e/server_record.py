"""Summarises the Rancher test server's node record (tests/rancher-server, nodes.json) in one
line for tests/e2e/run.sh: the number of nodes, then per node
"generation roles hostname connect_count"."""

import json
import sys


def main(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        print("0 (no %s: the server recorded no node)" % path)
        return
    nodes = data["nodes"] if isinstance(data, dict) else data
    parts = [str(len(nodes))]
    for n in nodes:
        parts.append(
            "%s %s %s %s"
            % (n["generation"], ",".join(n["roles"]), n["hostname"], n["connect_count"])
        )
    print(" ".join(parts))


if __name__ == "__main__":
    main(sys.argv[1])
