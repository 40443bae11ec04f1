#!/usr/bin/env python3
"""An LTI 1.3 platform played by lti1p3platform (PyPI), an implementation
independent of ltigate's own, for tests/lti13_interop.rs.

Argument: one JSON object {"issuer", "client_id", "deployment_id",
"login_url" (the tool's login initiation URL), "target_link_uri", "custom"
(custom parameters), "user": {"id", "name", "email", "roles"}}.

It makes an RSA key of its own (cryptography), listens on a free port of
127.0.0.1, prints one line {"base": "http://127.0.0.1:PORT"} and serves:

  GET /jwks       the platform's key set: lti1p3platform's get_jwks()
  GET /initiate?lti_message_hint=H
                  302 to the tool's login initiation URL for the user:
                  lti1p3platform's initiate_login()
  GET /authorize?...
                  the tool's authentication request: lti1p3platform's
                  lti_launch() checks it and signs the id_token; 200 with
                  the fields of the auto-post form as JSON {"launch_url",
                  "id_token", "state"}, or 400 {"error"} saying why

lti1p3platform is a library without a server; the adapter here is the
least it asks for: a request object, the redirect and the launch form, and
(what it leaves to the platform) that the login_hint and lti_message_hint
of an authentication request are ones this platform issued.

It exits when its standard input closes (the test is over).
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lti1p3platform.ltiplatform import LTI1P3PlatformConfAbstract
from lti1p3platform.message_launch import MessageLaunchAbstract
from lti1p3platform.oidc_login import OIDCLoginAbstract
from lti1p3platform.registration import Registration
from lti1p3platform.request import Request

SPEC = json.loads(sys.argv[1])
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
).decode()
PUBLIC_PEM = (
    KEY.public_key()
    .public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    .decode()
)
# (login_hint, lti_message_hint) pairs sent in a login initiation.
ISSUED = set()
ISSUED_LOCK = threading.Lock()


class PlatformConf(LTI1P3PlatformConfAbstract):
    def init_platform_config(self, **kwargs):
        self._registration = self.get_registration_by_params()

    def get_registration_by_params(self, **kwargs):
        return (
            Registration()
            .set_iss(SPEC["issuer"])
            .set_client_id(SPEC["client_id"])
            .set_deployment_id(SPEC["deployment_id"])
            .set_oidc_login_url(SPEC["login_url"])
            .set_launch_url(SPEC["target_link_uri"])
            .set_platform_private_key(PRIVATE_PEM)
            .set_platform_public_key(PUBLIC_PEM)
        )


class QueryRequest(Request):
    """A GET request as lti1p3platform reads it."""

    def build_metadata(self, request):
        path, query = request
        return {
            "method": "GET",
            "form_data": {},
            "get_data": dict(parse_qsl(query, keep_blank_values=True)),
            "headers": {},
            "content_type": None,
            "path": path,
            "json": None,
        }


class Login(OIDCLoginAbstract):
    def set_lti_message_hint(self, **kwargs):
        self._lti_message_hint = kwargs["hint"]

    def get_redirect(self, url):
        return url


class Launch(MessageLaunchAbstract):
    def prepare_launch(self, preflight_response):
        pair = (
            preflight_response.get("login_hint"),
            preflight_response.get("lti_message_hint"),
        )
        with ISSUED_LOCK:
            if pair not in ISSUED:
                raise ValueError(f"login_hint and lti_message_hint not issued: {pair!r}")

    def render_launch_form(self, launch_data, **kwargs):
        return launch_data


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        conf = PlatformConf()
        try:
            if url.path == "/jwks":
                self.answer(200, conf.get_jwks())
            elif url.path == "/initiate":
                user, hint = SPEC["user"]["id"], query["lti_message_hint"]
                login = Login(None, conf)
                login.set_lti_message_hint(hint=hint)
                with ISSUED_LOCK:
                    ISSUED.add((user, hint))
                self.answer(302, None, location=login.initiate_login(user))
            elif url.path == "/authorize":
                user = SPEC["user"]
                launch = Launch(QueryRequest((url.path, url.query)), conf)
                launch.set_user_data(user["id"], user["roles"], user["name"], user["email"])
                launch.set_resource_link_claim("rl-1")
                launch.set_launch_context_claim("ctx-1", context_title="Interop")
                launch.set_custom_parameters_claim(SPEC["custom"])
                self.answer(200, launch.lti_launch())
            else:
                self.answer(404, {"error": f"no route {url.path}"})
        except Exception as e:  # every failure is an answer the test shows
            self.answer(400, {"error": f"{type(e).__name__}: {str(e) or repr(e.__cause__)}"})

    def answer(self, status, body, location=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if location is not None:
            self.send_header("Location", location)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"base": f"http://127.0.0.1:{server.server_port}"}), flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
