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
                  lti_launch() checks it and signs the id_token, with the
                  AGS endpoint claim of its set_ags() (line item
                  LINEITEM_PATH?type_id=2, a Moodle-style URL with a query,
                  and the score scope); 200 with the fields of the
                  auto-post form as JSON {"launch_url", "id_token",
                  "state"}, or 400 {"error"} saying why
  POST /token     OAuth 2 client credentials with a JWT client assertion:
                  lti1p3platform's get_access_token() verifies the
                  assertion's signature against the tool's key set, fetched
                  from the tool's JWKS URL, and signs an access token
  POST LINEITEM_PATH/scores?type_id=2
                  a score: lti1p3platform's AssignmentsGradesService
                  (handle_update_score) checks the bearer token; its
                  update_score() records the score
  POST /admin/tool {"jwks_url"}
                  registers the tool's JWKS URL (what an LMS admin enters
                  when registering the tool; ltigate's address is known
                  only after this platform has started)
  GET /admin/ags  what the AGS side saw: {"scores": [{"path", "query",
                  "line_item", "bearer_scopes", "score"}], "tokens": [{"iss",
                  "sub", "aud", "scope"}], "refused": [why, ...]}

lti1p3platform is a library without a server; the adapter here is the
least it asks for: request objects, the redirect and the launch form, the
routes, and what it leaves to the platform, which a real platform checks:

- the login_hint and lti_message_hint of an authentication request are
  ones this platform issued;
- token requests (0.1.8 checks only that the parameters are present, the
  grant type and the assertion's signature and exp): a form body, each
  parameter once, client_assertion_type jwt-bearer, and of the assertion
  iss = sub = the client id, aud = this token endpoint's URL (its
  verify_aud is off), exp and iat present, exp in the future and at most
  5 minutes after iat, a jti not seen before; the score scope granted;
- scores (0.1.8 checks the bearer's signature, issuer and expiry and that
  it holds any scope of the service): the bearer holds the score scope,
  the Content-Type is application/vnd.ims.lis.v1.score+json, the body a
  JSON object whose timestamp has a zone and is after the last one
  recorded for the learner on the line item (else OLD_TIMESTAMP, 409);
  an invalid bearer, which lti1p3platform lets PyJWT raise, is a 401.

Every refusal of a POST (and a POST to no route) is recorded in
/admin/ags for the test to show.

It exits when its standard input closes (the test is over).
"""
import json
import os
import re
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lti1p3platform.exceptions import (
    LtiException,
    LtiServiceException,
    MissingRequiredClaim,
    UnsupportedGrantType,
)
from lti1p3platform.ltiplatform import LTI1P3PlatformConfAbstract
from lti1p3platform.message_launch import LTIAdvantageMessageLaunchAbstract
from lti1p3platform.oidc_login import OIDCLoginAbstract
from lti1p3platform.registration import Registration
from lti1p3platform.request import Request
from lti1p3platform.score import UpdateScoreStatus
from lti1p3platform.service_connector import AssignmentsGradesService

# lti1p3platform fetches the tool's key set with requests, which would
# send a loopback URL to a proxy named in the environment.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

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
SCORE_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
SCORE_TYPE = "application/vnd.ims.lis.v1.score+json"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
LINEITEMS_PATH = "/lineitems"
LINEITEM_PATH = "/lineitems/1/lineitem"
SCORES_ROUTE = re.compile(r"^/lineitems/([^/]+)/lineitem/scores$")
# Set when the server starts.
BASE = ""

LOCK = threading.Lock()
# (login_hint, lti_message_hint) pairs sent in a login initiation.
ISSUED = set()
# The tool's JWKS URL (POST /admin/tool).
TOOL = {"jwks_url": None}
# Client assertion jtis seen.
JTIS = set()
# What the AGS side saw (GET /admin/ags).
AGS = {"scores": [], "tokens": [], "refused": []}
# The last timestamp recorded per (line item, userId).
LAST = {}


class PlatformConf(LTI1P3PlatformConfAbstract):
    def init_platform_config(self, **kwargs):
        self._registration = self.get_registration_by_params()

    def get_registration_by_params(self, **kwargs):
        registration = (
            Registration()
            .set_iss(SPEC["issuer"])
            .set_client_id(SPEC["client_id"])
            .set_deployment_id(SPEC["deployment_id"])
            .set_oidc_login_url(SPEC["login_url"])
            .set_launch_url(SPEC["target_link_uri"])
            .set_platform_private_key(PRIVATE_PEM)
            .set_platform_public_key(PUBLIC_PEM)
        )
        with LOCK:
            if TOOL["jwks_url"] is not None:
                registration.set_tool_key_set_url(TOOL["jwks_url"])
        return registration


class HttpRequest(Request):
    """A request as lti1p3platform reads it: (method, path, query,
    headers, content type, JSON body)."""

    def build_metadata(self, request):
        method, path, query, headers, content_type, body = request
        return {
            "method": method,
            "form_data": {},
            "get_data": dict(parse_qsl(query, keep_blank_values=True)),
            # http.server's headers: .get() ignores the name's case, as
            # lti1p3platform's `headers.get("Authorization")` needs.
            "headers": headers,
            "content_type": content_type,
            "path": path,
            "json": body,
        }


class Login(OIDCLoginAbstract):
    def set_lti_message_hint(self, **kwargs):
        self._lti_message_hint = kwargs["hint"]

    def get_redirect(self, url):
        return url


class Launch(LTIAdvantageMessageLaunchAbstract):
    def prepare_launch(self, preflight_response):
        pair = (
            preflight_response.get("login_hint"),
            preflight_response.get("lti_message_hint"),
        )
        with LOCK:
            if pair not in ISSUED:
                raise ValueError(f"login_hint and lti_message_hint not issued: {pair!r}")

    def render_launch_form(self, launch_data, **kwargs):
        return launch_data


class Refused(Exception):
    """A request this platform refuses: the status and the OAuth 2 / AGS
    error body."""

    def __init__(self, status, error, why):
        super().__init__(why)
        self.status, self.error, self.why = status, error, why


class Scores(AssignmentsGradesService):
    """The line item's scores; the other AGS routes are not served."""

    def update_score(self, line_item_id, score):
        # lti1p3platform's authenticate() has checked the bearer's
        # signature, issuer and expiry and that it holds any of the
        # service's scopes; posting scores takes the score scope.
        bearer = self.request.headers.get("Authorization", "").split()[1]
        scopes = jwt.decode(bearer, options={"verify_signature": False}).get("scopes", "")
        if SCORE_SCOPE not in scopes.split(" "):
            raise LtiServiceException(f"the token's scopes {scopes!r} lack the score scope", 403)
        if not isinstance(score, dict):
            raise LtiServiceException("the score is not a JSON object", 400)
        try:
            stamp = score["timestamp"]
            # Python before 3.11 reads no "Z".
            at = datetime.fromisoformat(stamp[:-1] + "+00:00" if stamp.endswith("Z") else stamp)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise LtiServiceException(f"bad timestamp: {e!r}", 400) from e
        if at.tzinfo is None:
            raise LtiServiceException("the timestamp has no zone", 400)
        key = (line_item_id, score.get("userId"))
        with LOCK:
            if key in LAST and at <= LAST[key]:
                return UpdateScoreStatus.OLD_TIMESTAMP
            LAST[key] = at
            AGS["scores"].append(
                {
                    "path": self.request.path,
                    "query": self.request.get_data,
                    "line_item": line_item_id,
                    "bearer_scopes": scopes,
                    "score": score,
                }
            )
        return UpdateScoreStatus.SUCCESS

    def find_lineitems(self, *args, **kwargs):
        raise LtiServiceException("not served", 404)

    def find_lineitem(self, line_item_id):
        raise LtiServiceException("not served", 404)

    def create_lineitem(self, creation_data):
        raise LtiServiceException("not served", 404)

    def update_lineitem(self, update_data):
        raise LtiServiceException("not served", 404)

    def delete_lineitem(self, line_item_id):
        raise LtiServiceException("not served", 404)

    def get_results(self, *args, **kwargs):
        raise LtiServiceException("not served", 404)


def media_type(value):
    return (value or "").split(";")[0].strip().lower()


def access_token(headers, body):
    """POST /token: the token answer, or Refused."""
    if media_type(headers.get("Content-Type")) != "application/x-www-form-urlencoded":
        raise Refused(400, "invalid_request", f"Content-Type {headers.get('Content-Type')!r}")
    pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    form = dict(pairs)
    if len(form) != len(pairs):
        raise Refused(400, "invalid_request", "a parameter is repeated")
    if form.get("client_assertion_type") != JWT_BEARER:
        raise Refused(400, "invalid_request", f"client_assertion_type {form.get('client_assertion_type')!r}")
    conf = PlatformConf()
    if conf.get_registration().get_tool_key_set_url() is None:
        raise Refused(401, "invalid_client", "the tool is not registered (no JWKS URL)")
    try:
        answer = conf.get_access_token(form)
    except MissingRequiredClaim as e:
        raise Refused(400, "invalid_request", str(e)) from e
    except UnsupportedGrantType as e:
        raise Refused(400, "unsupported_grant_type", form.get("grant_type", "")) from e
    except (LtiException, jwt.InvalidTokenError) as e:
        raise Refused(401, "invalid_client", f"{type(e).__name__}: {e}") from e
    # get_access_token() has verified the signature against the tool's
    # key set (and exp, when present): the claims are the tool's.
    claims = jwt.decode(form["client_assertion"], options={"verify_signature": False})
    client_id, now = SPEC["client_id"], time.time()
    aud = claims.get("aud")
    checks = [
        (claims.get("iss") == client_id, f"iss {claims.get('iss')!r} is not the client id"),
        (claims.get("sub") == client_id, f"sub {claims.get('sub')!r} is not the client id"),
        (
            aud == f"{BASE}/token" or (isinstance(aud, list) and f"{BASE}/token" in aud),
            f"aud {aud!r} is not this token endpoint",
        ),
        (
            isinstance(claims.get("exp"), int)
            and isinstance(claims.get("iat"), int)
            and claims["exp"] > now
            and claims["exp"] - claims["iat"] <= 300,
            f"exp {claims.get('exp')!r} is not within 5 minutes of iat {claims.get('iat')!r}",
        ),
        (isinstance(claims.get("jti"), str) and claims["jti"] != "", "no jti"),
        (SCORE_SCOPE in answer["scope"].split(" "), f"scope {answer['scope']!r} lacks the score scope"),
    ]
    for ok, why in checks:
        if not ok:
            raise Refused(401, "invalid_client", why)
    with LOCK:
        if claims["jti"] in JTIS:
            raise Refused(401, "invalid_client", f"jti {claims['jti']!r} seen before")
        JTIS.add(claims["jti"])
        AGS["tokens"].append(
            {"iss": claims["iss"], "sub": claims["sub"], "aud": aud, "scope": answer["scope"]}
        )
    return answer


def score(url, headers, body):
    """POST LINEITEM_PATH/scores: (status, media type, body), or Refused."""
    line_item = SCORES_ROUTE.match(url.path).group(1)
    if media_type(headers.get("Content-Type")) != SCORE_TYPE:
        raise Refused(415, "unsupported_media_type", f"Content-Type {headers.get('Content-Type')!r}")
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None  # refused by update_score(), after the bearer
    service = Scores(
        HttpRequest(("POST", url.path, url.query, headers, headers.get("Content-Type"), payload)),
        PlatformConf(),
        BASE + LINEITEMS_PATH,
        BASE + LINEITEM_PATH,
    )
    try:
        resp = service.handle_resp(service.handle_update_score, line_item_id=line_item)
    except (LtiException, jwt.InvalidTokenError) as e:
        # handle_resp() lets these through: a bad or expired bearer.
        raise Refused(401, "invalid_token", f"{type(e).__name__}: {e}") from e
    if resp.code >= 300:
        raise Refused(resp.code, "refused", resp.message)
    return resp.code, resp.media_type, {"message": resp.message}


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
                with LOCK:
                    ISSUED.add((user, hint))
                self.answer(302, None, location=login.initiate_login(user))
            elif url.path == "/authorize":
                user = SPEC["user"]
                request = HttpRequest(("GET", url.path, url.query, {}, None, None))
                launch = Launch(request, conf)
                launch.set_user_data(user["id"], user["roles"], user["name"], user["email"])
                launch.set_resource_link_claim("rl-1")
                launch.set_launch_context_claim("ctx-1", context_title="Interop")
                launch.set_custom_parameters_claim(SPEC["custom"])
                launch.set_ags(
                    BASE + LINEITEMS_PATH,
                    BASE + LINEITEM_PATH + "?type_id=2",
                    allow_creating_lineitems=False,
                )
                self.answer(200, launch.lti_launch())
            elif url.path == "/admin/ags":
                with LOCK:
                    self.answer(200, AGS)
            else:
                self.answer(404, {"error": f"no route {url.path}"})
        except Exception as e:  # every failure is an answer the test shows
            self.answer(400, {"error": f"{type(e).__name__}: {str(e) or repr(e.__cause__)}"})

    def do_POST(self):
        url = urlsplit(self.path)
        try:
            length = self.headers.get("Content-Length")
            if length is None:
                raise Refused(411, "invalid_request", "no Content-Length")
            body = self.rfile.read(int(length))
            if url.path == "/admin/tool":
                with LOCK:
                    TOOL["jwks_url"] = json.loads(body)["jwks_url"]
                self.answer(204, None)
            elif url.path == "/token":
                self.answer(200, access_token(self.headers, body), no_store=True)
            elif SCORES_ROUTE.match(url.path):
                status, media, answer = score(url, self.headers, body)
                self.answer(status, answer, media=media)
            else:
                raise Refused(404, "not_found", f"no route {url.path}")
        except Refused as e:
            with LOCK:
                AGS["refused"].append(f"{url.path}: {e.status} {e.error}: {e.why}")
            self.answer(e.status, {"error": e.error, "error_description": e.why})
        except Exception as e:  # every failure is an answer the test shows
            with LOCK:
                AGS["refused"].append(f"{url.path}: {type(e).__name__}: {e}")
            self.answer(500, {"error": f"{type(e).__name__}: {e}"})

    def answer(self, status, body, location=None, media="application/json", no_store=False):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if location is not None:
            self.send_header("Location", location)
        if body is not None:
            self.send_header("Content-Type", media)
        if no_store:
            self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass


def main() -> None:
    global BASE
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    BASE = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"base": BASE}), flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
