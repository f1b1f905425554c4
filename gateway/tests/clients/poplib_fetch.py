"""Empties a mailbox with Python's poplib (stdlib only) and reports what it saw as JSON.

Usage: poplib_fetch.py REQUEST_JSON

REQUEST_JSON: {"port": int, "mode": "ssl" | "stls", "cafile": str, "user": str,
               "password": str, "out_dir": str, "top": [msg, lines]}

Three sessions, each connecting to 127.0.0.1 and verifying the certificate for it:
  1. CAPA, STAT, LIST, UIDL, TOP, then RETR of every message (written to
     out_dir/retr-N, lines joined with CRLF), QUIT without deleting;
  2. UIDL again, DELE of every message, QUIT;
  3. STAT (the mailbox should now be empty), QUIT.
In "stls" mode each session starts in plain text, checks that USER is refused before STLS
and then upgrades with STLS.

Prints {"capa": {...}, "capa_before_tls": {...} | null, "user_before_tls": str | null,
        "stat": [count, octets], "list": [[n, size]], "uidl": [[n, uid]],
        "uidl_again": [[n, uid]], "retr_octets": [int], "top_file": str,
        "dele": [str], "quit": str, "final_stat": [count, octets], "tls": [str]}
"""

import json
import os
import poplib
import ssl
import sys


def main():
    req = json.loads(sys.argv[1])
    context = ssl.create_default_context(cafile=req["cafile"])
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    report = {"capa_before_tls": None, "user_before_tls": None, "tls": []}

    def connect():
        if req["mode"] == "ssl":
            client = poplib.POP3_SSL("127.0.0.1", req["port"], context=context, timeout=60)
        else:
            client = poplib.POP3("127.0.0.1", req["port"], timeout=60)
            report["capa_before_tls"] = {k: v for k, v in client.capa().items()}
            try:
                client.user(req["user"])
                report["user_before_tls"] = "accepted"
            except poplib.error_proto as e:
                report["user_before_tls"] = e.args[0].decode("utf-8", "replace")
            client.stls(context=context)
        report["tls"].append(client.sock.version())
        client.user(req["user"])
        client.pass_(req["password"])
        return client

    # Session 1: look, read, keep.
    client = connect()
    report["capa"] = {k: v for k, v in client.capa().items()}
    count, octets = client.stat()
    report["stat"] = [count, octets]
    _, lines, _ = client.list()
    report["list"] = [[int(w) for w in line.split()] for line in lines]
    _, lines, _ = client.uidl()
    report["uidl"] = [[int(line.split()[0]), line.split()[1].decode()] for line in lines]
    top_msg, top_lines = req["top"]
    _, lines, _ = client.top(top_msg, top_lines)
    top_file = os.path.join(req["out_dir"], "top")
    with open(top_file, "wb") as f:
        f.write(b"".join(line + b"\r\n" for line in lines))
    report["top_file"] = top_file
    report["retr_octets"] = []
    for n in range(1, count + 1):
        _, lines, octets = client.retr(n)
        with open(os.path.join(req["out_dir"], "retr-%d" % n), "wb") as f:
            f.write(b"".join(line + b"\r\n" for line in lines))
        report["retr_octets"].append(octets)
    client.quit()

    # Session 2: delete everything.
    client = connect()
    _, lines, _ = client.uidl()
    report["uidl_again"] = [[int(line.split()[0]), line.split()[1].decode()] for line in lines]
    report["dele"] = [client.dele(n).decode() for n in range(1, count + 1)]
    report["quit"] = client.quit().decode()

    # Session 3: empty now.
    client = connect()
    report["final_stat"] = list(client.stat())
    client.quit()

    for key in ("capa", "capa_before_tls"):
        if report[key] is not None:
            report[key] = {k: [w for w in v] for k, v in report[key].items()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
