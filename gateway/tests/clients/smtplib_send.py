"""Sends one message with Python's smtplib (stdlib only) and reports the outcome as JSON.

Usage: smtplib_send.py REQUEST_JSON

REQUEST_JSON: {"port": int, "mode": "plain" | "starttls" | "ssl", "cafile": str,
               "from": str, "to": [str], "message_file": str, "mail_options": [str]}

The client connects to 127.0.0.1 but verifies the certificate for the host name
"localhost". In "plain" mode it never sends STARTTLS, even though it is offered.

Prints {"refused": {addr: [code, text]}, "tls": str | null, "starttls_offered": bool}
or, when every recipient was refused, {"error": "...", "refused": {...}}; exit status 0
unless something unexpected failed.
"""

import json
import smtplib
import ssl
import sys

HOST_NAME = "localhost"


def pinned(cls):
    """A subclass of an smtplib class that connects to 127.0.0.1 whatever host it is given,
    so TLS verifies the name "localhost" without depending on how localhost resolves."""

    class Pinned(cls):
        def _get_socket(self, host, port, timeout):
            return super()._get_socket("127.0.0.1", port, timeout)

    return Pinned


def main():
    req = json.loads(sys.argv[1])
    with open(req["message_file"], "rb") as f:
        message = f.read()
    context = ssl.create_default_context(cafile=req["cafile"])
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED

    mode = req["mode"]
    if mode == "ssl":
        client = pinned(smtplib.SMTP_SSL)(HOST_NAME, req["port"], context=context, timeout=60)
    else:
        client = pinned(smtplib.SMTP)(HOST_NAME, req["port"], timeout=60)
    client.ehlo("python.example.org")
    starttls_offered = client.has_extn("starttls")
    if mode == "starttls":
        code, _ = client.starttls(context=context)
        assert code == 220, code
        client.ehlo("python.example.org")
        assert not client.has_extn("starttls"), "STARTTLS offered again inside TLS"
    sock = client.sock
    tls = sock.version() if isinstance(sock, ssl.SSLSocket) else None

    result = {"tls": tls, "starttls_offered": starttls_offered}
    try:
        refused = client.sendmail(req["from"], req["to"], message, req.get("mail_options", []))
        result["refused"] = {k: [v[0], v[1].decode("utf-8", "replace")] for k, v in refused.items()}
    except smtplib.SMTPRecipientsRefused as e:
        result["error"] = "all recipients refused"
        result["refused"] = {
            k: [v[0], v[1].decode("utf-8", "replace")] for k, v in e.recipients.items()
        }
    except smtplib.SMTPResponseException as e:
        result["error"] = "%d %s" % (e.smtp_code, e.smtp_error.decode("utf-8", "replace"))
    client.quit()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
