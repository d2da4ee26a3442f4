"""Gateway-facing features of the simulator: mutual TLS, what the truth says arrived, extra route layouts
(configured paths and Azure OpenAI's deployment paths), the ledger's client reference column, and the
Azure API Management credential header.

Every simulator is a real server in its own process on 127.0.0.1; expectations come from what the test sent
(headers written byte by byte on a raw socket, attempt ids, the price sheet), not from the simulator's code.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import sqlite3
import ssl
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest
import trustme

from ttbench.simproc import SimProcess

from .conftest import write_config
from .helpers import CHAT, MESSAGES

pytestmark = pytest.mark.timeout(90)

#: Per 1M tokens, from gatewaysim/defaults/prices.yaml (written down here, not read from the sheet).
PRICES = {"gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")), "gpt-4o": (Decimal("2.50"), Decimal("10.00")),
          "claude-3-5-sonnet": (Decimal("3.00"), Decimal("15.00"))}
AZURE_VERSION = "2024-10-21"


def run_sim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ttbench", "sim", "--port", "0", *args],
                          capture_output=True, text=True, timeout=30)


def one_line_exit_2(res: subprocess.CompletedProcess, needle: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in res.stderr


def token_amount(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    inp, out = PRICES[model]
    return (input_tokens * inp + output_tokens * out) / Decimal(1_000_000)


def raw_request(url: str, method: str, target: str, headers: list[tuple[str, str]],
                body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request with exactly these header lines (nothing added), read until the server closes."""
    parts = urlsplit(url)
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(head.encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    raw_head, _, rest = data.partition(b"\r\n\r\n")
    lines = raw_head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    resp_headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, resp_headers, rest


# ---------------------------------------------------------------- mutual TLS


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    """A CA with a server certificate and a client certificate, and a second CA the server does not trust."""
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = {name: tmp_path / f"{name}.pem" for name in ("cert", "key", "ca")}
    server.private_key_and_cert_chain_pem.write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    return {"ca": ca, "files": files, "client": ca.issue_cert("client@example.test"),
            "stranger": other.issue_cert("stranger@example.test")}


def client_ctx(pki: dict[str, Any], cert: trustme.LeafCert | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["files"]["ca"]))
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


def test_mutual_tls_needs_a_client_certificate_from_the_ca(pki):
    f = pki["files"]
    args = ["--tls-cert", str(f["cert"]), "--tls-key", str(f["key"]), "--tls-client-ca", str(f["ca"])]
    with SimProcess(extra_args=args) as sim:
        assert sim.url.startswith("https://127.0.0.1:")
        auth = {"Authorization": f"Bearer {sim.api_key}"}
        ok = httpx.post(sim.url + "/v1/chat/completions", json=CHAT, headers=auth,
                        verify=client_ctx(pki, pki["client"]), timeout=20)
        assert ok.status_code == 200 and ok.json()["object"] == "chat.completion"
        # the admin routes sit behind the same handshake
        admin = httpx.get(sim.url + "/_sim/health", verify=client_ctx(pki, pki["client"]), timeout=20)
        assert admin.json() == {"ok": True}
        for cert in (None, pki["stranger"]):  # no certificate; one from a CA the server does not trust
            with pytest.raises(httpx.TransportError):
                httpx.post(sim.url + "/v1/chat/completions", json=CHAT, headers=auth,
                           verify=client_ctx(pki, cert), timeout=20)
            # under TLS 1.2 the refusal happens inside the handshake itself
            ctx = client_ctx(pki, cert)
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            port = urlsplit(sim.url).port
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock, pytest.raises(ssl.SSLError):
                ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        # and the server still serves the good client after refusing the others
        again = httpx.post(sim.url + "/v1/chat/completions", json=CHAT, headers=auth,
                           verify=client_ctx(pki, pki["client"]), timeout=20)
        assert again.status_code == 200


def test_tls_client_ca_needs_tls_cert(pki):
    one_line_exit_2(run_sim("--tls-client-ca", str(pki["files"]["ca"])), "--tls-client-ca")


def test_unreadable_client_ca_is_one_line(pki, tmp_path):
    f = pki["files"]
    res = run_sim("--tls-cert", str(f["cert"]), "--tls-key", str(f["key"]),
                  "--tls-client-ca", str(tmp_path / "absent-ca.pem"))
    one_line_exit_2(res, "absent-ca.pem: cannot load the client CA certificates")


# ---------------------------------------------------------------- the truth shows what arrived


def test_truth_records_path_query_and_client_headers_without_credentials(make_sim):
    secret = "ttbSECRETgatewayfeatures0123456789"
    sim = make_sim(api_key=secret)
    body = json.dumps({"contents": [{"parts": [{"text": "Hello"}]}],
                       "generationConfig": {"maxOutputTokens": 4}}).encode()
    sent = [
        ("Host", "gateway.example"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        ("Accept-Encoding", "identity"),
        ("User-Agent", "ttbench-test/1.0"),
        ("X-Client-Attempt-ID", "att-truth-1"),
        ("Idempotency-Key", "idem-truth-1"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("X-Custom-Thing", "v" * 500),
        ("X-Dup", "first"),
        ("X-Dup", "second"),
        ("Cookie", f"session={secret}"),
        ("Proxy-Authorization", f"Basic {secret}"),
        ("Authorization", f"Bearer {secret}"),
        ("x-api-key", secret),
        ("api-key", secret),
        ("Ocp-Apim-Subscription-Key", secret),
        ("x-goog-api-key", "wrong-but-ignored-since-the-query-key-wins"),
    ]
    status, headers, _ = raw_request(
        sim.url, "POST", f"/v1beta/models/gemini-1.5-pro:generateContent?alt=json&key={secret}&pretty=1", sent,
        body)
    assert status == 200  # Gemini takes ?key= (before x-goog-api-key)
    entry = {e["request_id"]: e for e in sim.truth()}[headers["x-tt-request-id"]]
    assert entry["method"] == "POST"
    assert entry["path"] == "/v1beta/models/gemini-1.5-pro:generateContent"
    assert entry["query"] == "alt=json&key=[redacted]&pretty=1"
    assert entry["client_headers"] == {
        "content-type": "application/json",
        "user-agent": "ttbench-test/1.0",
        "x-client-attempt-id": "att-truth-1",
        "idempotency-key": "idem-truth-1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "x-custom-thing": "v" * 200,
        "x-dup": "first, second",
    }
    assert entry["client_attempt_id"] == "att-truth-1"

    # an OpenAI request with its credential headers, a dry run, no query string
    status, headers, _ = raw_request(sim.url, "POST", "/v1/chat/completions", [
        ("Host", "127.0.0.1"), ("Content-Type", "application/json"), ("Content-Length", str(len(json.dumps(CHAT)))),
        ("Connection", "close"), ("Authorization", f"Bearer {secret}"), ("X-TT-Dry-Run", "true"),
        ("anthropic-version", "2023-06-01"),
    ], json.dumps(CHAT).encode())
    assert status == 200
    entry = {e["request_id"]: e for e in sim.truth()}[headers["x-tt-request-id"]]
    assert entry["path"] == "/v1/chat/completions" and entry["query"] == ""
    assert entry["client_headers"] == {"content-type": "application/json", "x-tt-dry-run": "true",
                                       "anthropic-version": "2023-06-01"}
    # the key shows nowhere in the truth, whole or in pieces
    text = sim.admin("/_sim/truth").text
    assert not any(secret[i:i + 12] in text for i in range(len(secret) - 11))


# ---------------------------------------------------------------- extra routes and the Azure layout

ROUTES = {"routes": {"chat": ["/openai/v1/chat/completions", "/gw/llm/chat"],
                     "messages": ["/anthropic/v1/messages"],
                     "embeddings": ["/openai/v1/embeddings"],
                     "images": ["/openai/v1/images/generations"],
                     "models": ["/openai/v1/models"]}}


def test_extra_routes_are_served_like_the_builtin_ones(make_sim):
    sim = make_sim(ROUTES, seed=11)
    bearer = {"Authorization": f"Bearer {sim.api_key}"}
    answers = {}
    for path in ("/v1/chat/completions", "/openai/v1/chat/completions", "/gw/llm/chat"):
        r = httpx.post(sim.url + path, json=CHAT, headers={**bearer, "X-Client-Attempt-ID": f"att{path}"})
        assert r.status_code == 200 and r.json()["object"] == "chat.completion"
        answers[path] = (r.headers["X-TT-Request-ID"], r.json())
    texts = {a["choices"][0]["message"]["content"] for _, a in answers.values()}
    assert len(texts) == 1  # the same request gets the same answer on every path
    truth = {e["request_id"]: e for e in sim.truth()}
    charges = {row["request_id"]: row for row in sim.ledger() if row["type"] == "charge"}
    for path, (rid, answer) in answers.items():
        assert truth[rid]["path"] == path and truth[rid]["endpoint"] == "chat" and truth[rid]["status"] == 200
        usage = answer["usage"]
        fair = token_amount("gpt-4o-mini", usage["prompt_tokens"], usage["completion_tokens"])
        assert Decimal(charges[rid]["amount"]) == fair
        assert charges[rid]["client_attempt_id"] == f"att{path}"

    # same auth and errors: OpenAI's shape on the extra chat path, Anthropic's on the extra messages path
    bad = httpx.post(sim.url + "/openai/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    msg = httpx.post(sim.url + "/anthropic/v1/messages", json=MESSAGES,
                     headers={"x-api-key": sim.api_key, "anthropic-version": "2023-06-01"})
    assert msg.status_code == 200 and msg.json()["type"] == "message"
    fair = token_amount("claude-3-5-sonnet", msg.json()["usage"]["input_tokens"], msg.json()["usage"]["output_tokens"])
    charges = {row["request_id"]: row for row in sim.ledger() if row["type"] == "charge"}
    assert Decimal(charges[msg.headers["X-TT-Request-ID"]]["amount"]) == fair
    denied = httpx.post(sim.url + "/anthropic/v1/messages", json=MESSAGES, headers={"x-api-key": "nope"})
    assert denied.status_code == 401 and denied.json() == {
        "type": "error", "error": {"type": "authentication_error", "message": "Incorrect API key provided."}}
    wrong_method = httpx.get(sim.url + "/anthropic/v1/messages", headers={"x-api-key": sim.api_key})
    assert wrong_method.status_code == 405 and wrong_method.json()["type"] == "error"
    no_model = httpx.post(sim.url + "/anthropic/v1/messages", json={"max_tokens": 5, "messages": []},
                          headers={"x-api-key": sim.api_key})
    assert no_model.status_code == 400 and no_model.json()["error"]["type"] == "invalid_request_error"

    emb = httpx.post(sim.url + "/openai/v1/embeddings", headers=bearer,
                     json={"model": "text-embedding-3-small", "input": "a b c", "dimensions": 4}).json()
    assert emb["object"] == "list" and len(emb["data"][0]["embedding"]) == 4
    img = httpx.post(sim.url + "/openai/v1/images/generations", headers=bearer,
                     json={"model": "gpt-image-1", "prompt": "a cat", "n": 2, "size": "1024x1024", "quality": "low"})
    assert img.status_code == 200 and len(img.json()["data"]) == 2
    charges = {row["request_id"]: row for row in sim.ledger() if row["type"] == "charge"}
    assert Decimal(charges[img.headers["X-TT-Request-ID"]]["amount"]) == 2 * Decimal("0.011")
    models = httpx.get(sim.url + "/openai/v1/models", headers=bearer).json()
    assert models["object"] == "list" and "gpt-4o-mini" in {m["id"] for m in models["data"]}
    assert httpx.get(sim.url + "/openai/v1/models").status_code == 401
    assert httpx.post(sim.url + "/openai/v2/chat/completions", json=CHAT, headers=bearer).status_code == 404


@pytest.mark.parametrize(
    "routes,needle",
    [
        ({"chats": ["/x"]}, "routes.chats: unknown key"),
        ({"chat": "/x"}, "routes.chat: expected a list, got a string"),
        ({"chat": [5]}, "routes.chat[0]: expected a string"),
        ({"chat": ["openai/chat"]}, "routes.chat[0]: expected an exact path starting with '/'"),
        ({"chat": ["/openai/{x}/chat"]}, "routes.chat[0]: expected an exact path"),
        ({"messages": ["/v1/chat/completions"]}, "routes.messages[0]: /v1/chat/completions is a built-in route"),
        ({"chat": ["/_sim/chat"]}, "routes.chat[0]: /_sim/chat is a built-in route"),
        ({"chat": ["/openai/deployments/x/chat/completions"]}, "is a built-in route"),
        ({"chat": ["/a"], "embeddings": ["/b", "/a"]}, "routes.embeddings[1]: /a is already listed under routes.chat[0]"),
    ],
)
def test_bad_routes_are_one_line_exit_2(tmp_path, routes, needle):
    cfg = write_config(tmp_path / "routes.yaml", {"routes": routes}, fast=False)
    res = run_sim("--config", str(cfg))
    one_line_exit_2(res, needle)
    assert "routes.yaml" in res.stderr


def test_azure_openai_layout_with_the_sdk(make_sim):
    sim = make_sim(seed=5)
    client = openai.AzureOpenAI(api_key=sim.api_key, azure_endpoint=sim.url, api_version=AZURE_VERSION,
                                max_retries=0)
    # the SDK sends `api-key` and puts the model in the path as the deployment
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello there"}], max_tokens=12,
        extra_headers={"X-Client-Attempt-ID": "azure-1"})
    done = raw.parse()
    assert done.model == "gpt-4o-mini" and done.choices[0].message.content
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=6, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 6
    emb = client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"], dimensions=8)
    assert [len(d.embedding) for d in emb.data] == [8, 8]
    img = client.images.generate(model="gpt-image-1", prompt="a cat", n=1, size="1024x1024", quality="low")
    assert len(img.data) == 1 and img.data[0].b64_json
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-deployment", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["code"] == "DeploymentNotFound"
    with pytest.raises(openai.AuthenticationError):
        openai.AzureOpenAI(api_key="nope", azure_endpoint=sim.url, api_version=AZURE_VERSION,
                           max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    rid = raw.headers["X-TT-Request-ID"]
    entry = {e["request_id"]: e for e in sim.truth()}[rid]
    assert entry["path"] == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert entry["query"] == f"api-version={AZURE_VERSION}"
    assert entry["endpoint"] == "chat" and entry["model"] == "gpt-4o-mini"
    assert "api-key" not in entry["client_headers"]
    charge = next(r for r in sim.ledger() if r["type"] == "charge" and r["request_id"] == rid)
    assert charge["client_attempt_id"] == "azure-1"
    assert Decimal(charge["amount"]) == token_amount("gpt-4o-mini", done.usage.prompt_tokens,
                                                     done.usage.completion_tokens)


def test_azure_layout_raw_rules(make_sim):
    sim = make_sim(seed=6)
    path = sim.url + "/openai/deployments/gpt-4o-mini/chat/completions"
    key = {"api-key": sim.api_key}
    # api-version is required: 400 in OpenAI's error shape, before anything else
    missing = httpx.post(path, json=CHAT, headers=key)
    assert missing.status_code == 400
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
    assert missing.json()["error"]["param"] == "api-version" and "api-version" in missing.json()["error"]["message"]
    assert missing.headers["X-TT-Request-ID"].startswith("req_")
    # the deployment is the model: a body model is ignored, none is needed; priced as the deployment
    q = {"api-version": AZURE_VERSION}
    other = httpx.post(path, params=q, headers=key, json=dict(CHAT, model="gpt-4o"))
    bare = httpx.post(path, params=q, headers=key, json={k: v for k, v in CHAT.items() if k != "model"})
    assert other.status_code == bare.status_code == 200
    assert other.json()["model"] == bare.json()["model"] == "gpt-4o-mini"
    charges = {row["request_id"]: row for row in sim.ledger() if row["type"] == "charge"}
    for r in (other, bare):
        row = charges[r.headers["X-TT-Request-ID"]]
        usage = r.json()["usage"]
        assert row["model"] == "gpt-4o-mini"
        assert Decimal(row["amount"]) == token_amount("gpt-4o-mini", usage["prompt_tokens"], usage["completion_tokens"])
        assert Decimal(row["amount"]) != token_amount("gpt-4o", usage["prompt_tokens"], usage["completion_tokens"])
    # Azure auth: api-key, or Authorization: Bearer; a wrong or missing key is OpenAI's 401
    assert httpx.post(path, params=q, json=CHAT, headers={"Authorization": f"Bearer {sim.api_key}"}).status_code == 200
    wrong = httpx.post(path, params=q, json=CHAT, headers={"api-key": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    none = httpx.post(path, params=q, json=CHAT)
    assert none.status_code == 401 and none.json()["error"]["code"] == "missing_api_key"
    # an embedding deployment is no chat model; a chat deployment no embedding model
    emb = httpx.post(sim.url + "/openai/deployments/gpt-4o-mini/embeddings", params=q, headers=key,
                     json={"input": "abc"})
    assert emb.status_code == 404 and emb.json()["error"]["code"] == "DeploymentNotFound"
    # wrong method: OpenAI's shape
    get = httpx.get(path, params=q, headers=key)
    assert get.status_code == 405 and set(get.json()["error"]) == {"message", "type", "param", "code"}


# ---------------------------------------------------------------- the ledger's client reference column


def test_ledger_rows_carry_the_client_attempt_id(make_sim):
    sim = make_sim({"faults": {"quota": {"server_error": 1}, "quota_rate": 1, "server_error_statuses": [500]},
                    "billing_errors": {"quota": {"failed_billed": 1, "dry_run_billed": 1, "unknown_request": 1,
                                                 "double_charge": 1}, "quota_rate": 1}}, seed=3)
    bearer = {"Authorization": f"Bearer {sim.api_key}"}

    def post(attempt: str | None, **headers: str) -> httpx.Response:
        h = {**bearer, **headers}
        if attempt is not None:
            h["X-Client-Attempt-ID"] = attempt
        return httpx.post(sim.url + "/v1/chat/completions", json=CHAT, headers=h, timeout=30)

    failed = post("att-failed")  # server_error, charged anyway (failed_billed)
    dry = post("att-dry", **{"X-TT-Dry-Run": "true"})  # hold, release, and a charge (dry_run_billed)
    first = post("att-first", **{"Idempotency-Key": "k-ledger"})  # charged, plus a ghost charge (unknown_request)
    replay = post("att-replay", **{"Idempotency-Key": "k-ledger"})  # a replay charged again (double_charge)
    plain = post(None)  # no attempt id: null
    assert failed.status_code == 500
    assert [r.status_code for r in (dry, first, replay, plain)] == [200] * 4
    assert replay.headers["Idempotent-Replayed"] == "true"
    sent = {r.headers["X-TT-Request-ID"]: a for r, a in ((failed, "att-failed"), (dry, "att-dry"),
                                                         (first, "att-first"), (replay, "att-replay"),
                                                         (plain, None))}
    rows = sim.ledger()
    seen: dict[tuple[str, str], str | None] = {}
    ghosts = []
    for row in rows:
        assert "client_attempt_id" in row
        if row["request_id"] in sent:
            assert row["client_attempt_id"] == sent[row["request_id"]], row
            seen[(row["request_id"], row["type"])] = row["client_attempt_id"]
        else:
            ghosts.append(row)
    rid = {a: r for r, a in sent.items()}
    assert {t for (r, t) in seen if r == rid["att-dry"]} == {"hold", "release", "charge"}
    assert {t for (r, t) in seen if r == rid["att-first"]} == {"hold", "release", "charge"}
    assert (rid["att-failed"], "charge") in seen and (rid["att-replay"], "charge") in seen
    assert (rid[None], "charge") in seen
    # the unknown_request charge: a request id nobody was sent, no client reference
    assert len(ghosts) == 1 and ghosts[0]["type"] == "charge" and ghosts[0]["client_attempt_id"] is None
    kinds = {e["request_id"]: e["billing_error"] for e in sim.truth()}
    assert kinds[rid["att-failed"]] == "failed_billed" and kinds[rid["att-dry"]] == "dry_run_billed"
    assert kinds[rid["att-replay"]] == "double_charge" and kinds[ghosts[0]["request_id"]] == "unknown_request"
    # the CSV export has the column too (empty when null)
    table = list(csv.DictReader(io.StringIO(sim.admin("/_sim/ledger", format="csv").text)))
    assert len(table) == len(rows)
    by_csv = {(r["request_id"], r["type"]): r["client_attempt_id"] for r in table}
    assert by_csv[(rid["att-replay"], "charge")] == "att-replay"
    assert by_csv[(rid[None], "charge")] == "" and by_csv[(ghosts[0]["request_id"], "charge")] == ""


def test_a_ledger_file_of_an_older_schema_is_refused(tmp_path):
    old = tmp_path / "old.sqlite"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE ledger (seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, type TEXT, request_id TEXT,"
               " idempotency_key TEXT, endpoint TEXT, model TEXT, input_tokens INTEGER, output_tokens INTEGER,"
               " cached_input_tokens INTEGER, cache_write_tokens INTEGER, images INTEGER, amount TEXT,"
               " currency TEXT)")
    db.commit()
    db.close()
    one_line_exit_2(run_sim("--ledger", str(old)), "old.sqlite: the ledger file has no column 'client_attempt_id'")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    one_line_exit_2(run_sim("--ledger", str(junk)), "junk.sqlite: cannot open the ledger")


# ---------------------------------------------------------------- Azure API Management's credential header


def test_ocp_apim_subscription_key_on_openai_routes(sim):
    apim = {"Ocp-Apim-Subscription-Key": sim.api_key}
    assert httpx.post(sim.url + "/v1/chat/completions", json=CHAT, headers=apim).status_code == 200
    emb = httpx.post(sim.url + "/v1/embeddings", headers=apim, json={"model": "text-embedding-3-small", "input": "a"})
    assert emb.status_code == 200
    assert httpx.get(sim.url + "/v1/models", headers=apim).json()["object"] == "list"
    wrong = httpx.post(sim.url + "/v1/chat/completions", json=CHAT, headers={"Ocp-Apim-Subscription-Key": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    # an OpenAI-route credential only: Messages does not take it
    msg = httpx.post(sim.url + "/v1/messages", json=MESSAGES, headers=apim)
    assert msg.status_code == 401 and msg.json()["error"]["type"] == "authentication_error"


def test_gemini_takes_the_key_from_the_query(sim):
    url = sim.url + "/v1beta/models/gemini-2.5-flash:generateContent"
    body = {"contents": [{"parts": [{"text": "Hello"}]}], "generationConfig": {"maxOutputTokens": 3}}
    ok = httpx.post(url, params={"key": sim.api_key}, json=body)
    assert ok.status_code == 200 and ok.json()["usageMetadata"]["candidatesTokenCount"] <= 3
    assert httpx.post(url, params={"key": "nope"}, json=body).status_code == 400
    assert httpx.post(url, json=body).status_code == 403
