"""A stream client written from docs/api.md alone, with a websocket library the
project itself does not use (``websockets``, synchronous API).

It imports nothing of hive, hivewire or keeper: what it knows of the protocol
is what the docs say. Run by tests/test_docs_client.py:

    python tests/docs_client.py WS_BASE JOB_ID TOKEN OUT ERR [--since N]
        [--format binary|json] [--cut-every BYTES]

It writes the job's stdout and stderr bytes to OUT and ERR, drops its own
connection every BYTES bytes of messages (and resumes, as the docs say, with
``since=`` the last seq it handled), and prints one JSON line: the last seq it
handled, the ``end`` event, the close code and reason of the last connection,
how many connections it made, and the largest message it received.
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
import sys
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("base", "job", "token", "out", "err"):
        parser.add_argument(name)
    parser.add_argument("--since", type=int, default=0)
    parser.add_argument("--format", default="binary")
    parser.add_argument("--cut-every", type=int, default=0)
    args = parser.parse_args()

    last = args.since
    end: dict[str, Any] | None = None
    code: int | None = None
    reason = ""
    connections = 0
    largest = 0
    with open(args.out, "wb") as out, open(args.err, "wb") as err:

        def handle(message: bytes | str) -> None:
            """Write a message's new bytes; raise on a gap (the docs promise none)."""
            nonlocal last, end
            if isinstance(message, bytes):
                # docs: byte 0 stream, 1-8 first seq, 9-16 last seq, 17- payload
                stream, first, final = struct.unpack(">BQQ", message[:17])
                if final <= last:
                    return  # a repeat: already handled
                assert first == last + 1, f"gap: after {last} came {first}"
                (out if stream == 1 else err).write(message[17:])
                last = final
                return
            event = json.loads(message)
            if event["seq"] <= last:
                return
            assert event["seq"] == last + 1, f"gap: after {last} came {event['seq']}"
            if event["type"] == "output":
                if "data_b64" in event:
                    data = base64.b64decode(event["data_b64"])
                else:
                    data = event["data"].encode("utf-8")
                (out if event["stream"] == "stdout" else err).write(data)
            elif event["type"] == "end":
                end = event
            last = event["seq"]

        while end is None:
            connections += 1
            url = f"{args.base}/v1/jobs/{args.job}/stream?since={last}"
            if args.format == "json":
                url += "&format=json"
            received, cut = 0, False
            with connect(url, additional_headers={"Authorization": f"Bearer {args.token}"}) as ws:
                try:
                    for message in ws:
                        largest = max(largest, len(message))
                        received += len(message)
                        handle(message)
                        if end is not None:
                            break
                        if args.cut_every and received >= args.cut_every:
                            cut = True  # drop the connection; resume after `last`
                            break
                except ConnectionClosed:
                    pass
            code, reason = ws.close_code, ws.close_reason or ""
            if end is None and not cut:
                break  # the hive closed without an end event: report how
    print(
        json.dumps(
            {
                "last": last,
                "end": end,
                "code": code,
                "reason": reason,
                "connections": connections,
                "largest": largest,
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
