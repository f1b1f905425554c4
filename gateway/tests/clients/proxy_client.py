"""Proxy-mode client with Python's smtplib/poplib (stdlib only).

Usage:
  proxy_client.py smtp PORT starttls|ssl USER PASSWORD FROM TO MESSAGE_FILE
  proxy_client.py pop3 PORT stls|ssl USER PASSWORD OUT_DIR

The gateway's certificate is not verified here (the gateway verifies the upstream's; this
is about the proxy path). smtp: logs in, sends the file's bytes, prints "sent".
pop3: logs in, writes every message to OUT_DIR/N (CRLF lines), QUITs without deleting,
prints the count.
"""

import os
import poplib
import smtplib
import ssl
import sys


def context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def smtp(port, mode, user, password, sender, to, path):
    with open(path, "rb") as f:
        message = f.read()
    if mode == "ssl":
        client = smtplib.SMTP_SSL("127.0.0.1", port, context=context(), timeout=60)
    else:
        client = smtplib.SMTP("127.0.0.1", port, timeout=60)
        client.ehlo()
        client.starttls(context=context())
    client.ehlo()
    client.login(user, password)
    client.sendmail(sender, [to], message)
    client.quit()
    print("sent")


def pop3(port, mode, user, password, out_dir):
    if mode == "ssl":
        client = poplib.POP3_SSL("127.0.0.1", port, context=context(), timeout=60)
    else:
        client = poplib.POP3("127.0.0.1", port, timeout=60)
        client.stls(context=context())
    client.user(user)
    client.pass_(password)
    count, _ = client.stat()
    for n in range(1, count + 1):
        _, lines, _ = client.retr(n)
        with open(os.path.join(out_dir, str(n)), "wb") as f:
            f.write(b"".join(line + b"\r\n" for line in lines))
    client.quit()
    print(count)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "smtp":
        smtp(int(args[1]), args[2], args[3], args[4], args[5], args[6], args[7])
    else:
        pop3(int(args[1]), args[2], args[3], args[4], args[5])
