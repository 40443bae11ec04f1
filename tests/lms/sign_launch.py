#!/usr/bin/env python3
"""Signs an LTI 1.1 launch with oauthlib, an OAuth 1.0a implementation
independent of ltigate's own. Input: one JSON argument
{"url", "key", "secret", "method", "params": [[name, value], ...]}.
Output: the signed application/x-www-form-urlencoded body."""
import json
import sys

from oauthlib.oauth1 import SIGNATURE_TYPE_BODY, Client


def main() -> None:
    spec = json.loads(sys.argv[1])
    client = Client(
        spec["key"],
        client_secret=spec["secret"],
        signature_method=spec.get("method", "HMAC-SHA1"),
        signature_type=SIGNATURE_TYPE_BODY,
        callback_uri="about:blank",
    )
    params = [tuple(p) for p in spec["params"]]
    _, _, body = client.sign(
        spec["url"],
        http_method="POST",
        body=params,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    sys.stdout.write(body)


if __name__ == "__main__":
    main()
