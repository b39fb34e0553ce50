"""A real ``kdc serve`` on 127.0.0.1 (torch blocked in its process), spoken to over HTTP as a KServe v2 client."""

import json
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

import kdc.runtime as rt

from .conftest import SIZE
from .helpers import (SERVE, Server, binary_image, binary_request, free_port, process_memory_mb, read_until_closed,
                      running_server, slow_clients)

MAX_BODY_MB = 1


@pytest.fixture(scope="module")
def server(artefacts, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    models = [artefacts.student_onnx, artefacts.baked_onnx]
    with running_server(models, log, "--threads", "1", "--workers", "2", "--max-body-mb", str(MAX_BODY_MB)) as srv:
        yield srv


@pytest.fixture(scope="module")
def local(artefacts):
    return rt.load(artefacts.student_onnx, threads=1)


def infer_body(kspace, mask, **overrides):
    inputs = [{"name": "kspace", "shape": list(kspace.shape), "datatype": "FP32", "data": kspace.ravel().tolist()},
              {"name": "mask", "shape": [1, 1, 1, 32], "datatype": "FP32", "data": mask[0].tolist()}]
    inputs[0].update(overrides)
    return {"id": "r1", "inputs": inputs}


def image_of(response):
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    assert output["name"] == "image" and output["datatype"] == "FP32"
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def assert_healthy(server, kspace, mask, local):
    assert server.client.get("/v2/health/ready").status_code == 200
    image = image_of(server.client.post("/v2/models/student/infer", json=infer_body(kspace[:1], mask)))
    np.testing.assert_array_equal(image, local.reconstruct(kspace[:1], mask))


def test_health_and_metadata(server):
    assert server.client.get("/v2/health/live").json() == {"live": True}
    assert server.client.get("/v2/health/ready").status_code == 200
    assert "binary_tensor_data" in server.client.get("/v2").json()["extensions"]
    meta = server.client.get("/v2/models/student").json()
    assert meta["name"] == "student" and meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "kspace", "datatype": "FP32", "shape": [-1, 2, 40, 32]},
                              {"name": "mask", "datatype": "FP32", "shape": [1, 1, 1, 32]}]
    assert meta["outputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 40, 32]}]
    assert meta["kdc_contract"]["model"]["role"] == "student"
    assert server.client.get("/v2/models/student_baked/versions/1").json()["inputs"][0]["name"] == "kspace"
    assert server.client.get("/v2/models/student/ready").json() == {"name": "student", "ready": True}
    assert server.client.get("/v2/models/student_baked/config").json()["max_batch_size"] == 8


def test_client_gets_the_pixels_of_the_local_api(server, local, kspace, artefacts):
    expected = local.reconstruct(kspace, artefacts.mask)
    response = server.client.post("/v2/models/student/infer", json=infer_body(kspace, artefacts.mask))
    assert response.json()["id"] == "r1" and response.json()["model_name"] == "student"
    np.testing.assert_array_equal(image_of(response), expected)
    nested = infer_body(kspace, artefacts.mask, data=kspace.tolist())
    np.testing.assert_array_equal(image_of(server.client.post("/v2/models/student/versions/1/infer", json=nested)),
                                  expected)
    baked = {"inputs": [infer_body(kspace, artefacts.mask)["inputs"][0]]}
    np.testing.assert_array_equal(image_of(server.client.post("/v2/models/student_baked/infer", json=baked)),
                                  rt.load(artefacts.baked_onnx, threads=1).reconstruct(kspace))


def test_normalise_parameter_and_server_default(server, local, kspace, artefacts, tmp_path):
    """Scanner-scale k-space: the request parameter (or the server's --normalise) gives reconstruct's pixels."""
    scanner = kspace * 4000
    expected = local.reconstruct(scanner, artefacts.mask, normalise=True)
    body = {**infer_body(scanner, artefacts.mask), "parameters": {"normalise": True}}
    np.testing.assert_allclose(image_of(server.client.post("/v2/models/student/infer", json=body)), expected,
                               rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    raw = image_of(server.client.post("/v2/models/student/infer", json=infer_body(scanner, artefacts.mask)))
    assert np.abs(raw - expected).max() > 0.01 * np.abs(expected).max()  # the default here is off
    bad = {**infer_body(kspace, artefacts.mask), "parameters": {"normalise": "yes"}}
    assert server.client.post("/v2/models/student/infer", json=bad).status_code == 400
    with running_server([artefacts.student_onnx], tmp_path / "log", "--threads", "1", "--normalise") as normalising:
        response = normalising.client.post("/v2/models/student/infer", json=infer_body(scanner, artefacts.mask))
        np.testing.assert_allclose(image_of(response), expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_fully_sampled_kspace_with_a_mask_gives_the_pixels_of_masked_kspace(server, kspace, full_kspace, images,
                                                                          artefacts):
    """docs/runtime.md's request with fully sampled k-space and a 4x mask, as a scanner integrator sends it: the
    server applies the mask (it gave 5.43 dB PSNR instead of the zero-filled 18.92 dB when it did not)."""
    from kdc.data.metrics import psnr

    masked = image_of(server.client.post("/v2/models/student/infer", json=infer_body(kspace, artefacts.mask)))
    full = image_of(server.client.post("/v2/models/student/infer", json=infer_body(full_kspace, artefacts.mask)))
    np.testing.assert_array_equal(full, masked)
    assert psnr(images, full[:, 0]) == psnr(images, masked[:, 0])
    baked = [{"inputs": [infer_body(k, artefacts.mask)["inputs"][0]]} for k in (kspace, full_kspace)]
    np.testing.assert_array_equal(*(image_of(server.client.post("/v2/models/student_baked/infer", json=body))
                                    for body in baked))


def test_outputs_with_nan_get_422_and_never_nan_in_json(server, local, kspace, artefacts):
    """Finite k-space of 3e38 overflows float32 inside the model: 422 with one line, not 200 with NaN pixels."""
    huge = np.full((1, 2, *SIZE), 3e38, dtype=np.float32) * artefacts.mask
    response = server.client.post("/v2/models/student/infer", json=infer_body(huge, artefacts.mask))
    assert response.status_code == 422

    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON answer")

    error = json.loads(response.text, parse_constant=refuse)["error"]
    assert "NaN or infinite values of 1280 in output 'image'" in error and "\n" not in error
    assert_healthy(server, kspace, artefacts.mask, local)


def test_kspace_with_phase_is_answered_with_a_warning(server, kspace, artefacts):
    complex_kspace = (kspace[:1, 0] + 1j * kspace[:1, 1]) * 1j  # an image that is all imaginary
    body = infer_body(rt.kspace_channels(complex_kspace), artefacts.mask)
    response = server.client.post("/v2/models/student/infer", json=body)
    assert response.status_code == 200
    assert "100.0% of the input image's energy is imaginary" in response.json()["parameters"]["kdc_warnings"]
    assert "parameters" not in server.client.post("/v2/models/student/infer", json=infer_body(kspace, artefacts.mask)
                                                  ).json()
    assert "energy is imaginary" in server.log.read_text()


def test_binary_tensor_extension(server, local, kspace, artefacts):
    """Triton's binary_data: raw little-endian tensors after a JSON header, both ways."""
    header = {"inputs": [{"name": "kspace", "shape": list(kspace.shape), "datatype": "FP32",
                          "parameters": {"binary_data_size": kspace.nbytes}},
                         {"name": "mask", "shape": [1, 1, 1, 32], "datatype": "FP32",
                          "parameters": {"binary_data_size": 32 * 4}}],
              "outputs": [{"name": "image", "parameters": {"binary_data": True}}]}
    head = json.dumps(header).encode()
    body = head + kspace.astype("<f4").tobytes() + artefacts.mask[0].astype("<f4").tobytes()
    response = server.client.post("/v2/models/student/infer", content=body,
                                  headers={"Inference-Header-Content-Length": str(len(head))})
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    output = json.loads(response.content[:length])["outputs"][0]
    assert output["parameters"]["binary_data_size"] == len(response.content) - length
    image = np.frombuffer(response.content[length:], dtype="<f4").reshape(output["shape"])
    np.testing.assert_array_equal(image, local.reconstruct(kspace, artefacts.mask))


def nested(depth):
    """``[[...[1.0]...]]``: a list nested ``depth`` deep (numpy arrays have at most 64 dimensions)."""
    value = 1.0
    for _ in range(depth):
        value = [value]
    return value


def nan_body(kspace, mask):
    body = infer_body(kspace[:1], mask)
    body["inputs"][0]["data"][5] = float("nan")
    return json.dumps(body).encode()  # Python writes the NaN literal that strict JSON forbids


@pytest.mark.parametrize("make,status,message", [
    (lambda k, m: b'{"inputs": [', 400, "malformed JSON"),
    (lambda k, m: b"[1, 2]", 400, "request must be a JSON object"),
    (lambda k, m: b'{"inputs": []}', 400, "non-empty 'inputs'"),
    (lambda k, m: json.dumps(infer_body(k[:1], m, shape=[1, 2, 32, 40])).encode(), 400,
     "has shape (1, 2, 32, 40), expected (N, 2, 40, 32)"),
    (lambda k, m: json.dumps(infer_body(k[:1], m, datatype="FP64")).encode(), 400,
     "datatype 'FP64' is not supported, expected FP32"),
    (lambda k, m: json.dumps(infer_body(k[:1], m, data=["a"] * k[:1].size)).encode(), 400, "only numbers"),
    (lambda k, m: json.dumps(infer_body(k[:1], m, data=[1.0, 2.0])).encode(), 400, "'data' has 2 values"),
    (lambda k, m: json.dumps(infer_body(k[:1], m, name="image")).encode(), 400, "unknown input 'image'"),
    (lambda k, m: json.dumps({"inputs": infer_body(k[:1], m)["inputs"][:1]}).encode(), 400, "missing ['mask']"),
    (nan_body, 400, "contains NaN or infinity"),
    (lambda k, m: b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    (lambda k, m: json.dumps(infer_body(k[:1], m, data=nested(70))).encode(), 400, "nested deeper"),
    (lambda k, m: json.dumps(infer_body(k[:1], m * 0.5)).encode(), 400, "mask must hold only 0 and 1"),
    (lambda k, m: json.dumps(infer_body(k[:1], m * -7)).encode(), 400, "mask must hold only 0 and 1"),
    (lambda k, m: json.dumps(infer_body(k[:1], m * 0)).encode(), 400, "mask samples nothing"),
])
def test_bad_requests_get_4xx_and_the_server_stays_healthy(server, local, kspace, artefacts, make, status, message):
    response = server.client.post("/v2/models/student/infer", content=make(kspace, artefacts.mask),
                                  headers={"content-type": "application/json"})
    assert response.status_code == status
    assert message in response.json()["error"]
    assert_healthy(server, kspace, artefacts.mask, local)


def test_oversize_bodies_get_413(server, local, kspace, artefacts):
    big = b" " * (MAX_BODY_MB * (1 << 20) + 1)
    response = server.client.post("/v2/models/student/infer", content=big)
    assert response.status_code == 413 and "exceeds the limit" in response.json()["error"]

    def chunks():  # no Content-Length: the server counts while streaming
        for _ in range(MAX_BODY_MB * 4 + 1):
            yield b" " * (1 << 18)

    response = server.client.post("/v2/models/student/infer", content=chunks())
    assert response.status_code == 413 and "exceeds the limit" in response.json()["error"]
    assert_healthy(server, kspace, artefacts.mask, local)


def test_unknown_models_versions_and_routes_get_404(server):
    for path in ("/v2/models/teacher", "/v2/models/student/versions/2", "/v2/nothing"):
        response = server.client.get(path)
        assert response.status_code == 404 and response.json()["error"]
    response = server.client.post("/v2/models/teacher/infer", json={"inputs": []})
    assert response.status_code == 404 and "unknown model 'teacher'" in response.json()["error"]


def test_load_200_requests_at_concurrency_8(server, local):
    """Zero errors, and every response holds exactly the pixels of its own request."""
    inputs = [local.example_feeds(batch=1, seed=seed) for seed in range(8)]
    expected = [local.run(feeds)["image"] for feeds in inputs]
    bodies = [infer_body(feeds["kspace"], feeds["mask"][0, 0]) for feeds in inputs]

    def one(i: int) -> bool:
        response = server.client.post("/v2/models/student/infer", json=bodies[i % 8])
        return response.status_code == 200 and np.array_equal(image_of(response), expected[i % 8])

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(one, range(200)))
    assert outcomes.count(True) == 200


def test_sigterm_finishes_in_flight_requests_and_exits_cleanly(artefacts, local, tmp_path):
    feeds = local.example_feeds(batch=8)
    expected = local.run(feeds)["image"]
    body = infer_body(feeds["kspace"], feeds["mask"][0, 0])
    server = Server([artefacts.student_onnx], tmp_path / "server.log", "--threads", "1")
    server.wait_ready()
    first_answer = threading.Event()
    outcomes = []

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for _ in range(5):
                try:
                    response = http.post("/v2/models/student/infer", json=body)
                except httpx.TransportError:  # refused once the server stopped accepting
                    outcomes.append("refused")
                    return
                outcomes.append("ok" if response.status_code == 200 and np.array_equal(image_of(response), expected)
                                else f"bad {response.status_code}")
                first_answer.set()

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    assert first_answer.wait(60)
    # uvicorn re-raises the signal once its graceful shutdown is done, as process managers expect.
    assert server.stop() in (0, -signal.SIGTERM)
    for thread in clients:
        thread.join()
    assert "ok" in outcomes and all(outcome in ("ok", "refused") for outcome in outcomes), outcomes
    log = (tmp_path / "server.log").read_text()
    assert "inference pool stopped" in log and "Finished server process" in log


def test_triton_http_client_works_unchanged(server, local, kspace, artefacts):
    """Triton's own HTTP client (tritonclient 2.73), binary tensors in and out, against ``kdc serve``."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("student")
    assert [i["name"] for i in client.get_model_metadata("student")["inputs"]] == ["kspace", "mask"]
    inputs = []
    for name, array in (("kspace", kspace), ("mask", artefacts.mask[:1].reshape(1, 1, 1, -1).astype(np.float32))):
        tensor = triton.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(array), binary_data=True)
        inputs.append(tensor)
    result = client.infer("student", inputs, outputs=[triton.InferRequestedOutput("image", binary_data=True)])
    np.testing.assert_array_equal(result.as_numpy("image"), local.reconstruct(kspace, artefacts.mask))
    with pytest.raises(InferenceServerException, match="missing \\['mask'\\]"):
        client.infer("student", inputs[:1])
    client.close()


# b"\xb2" is "²" in latin-1, the encoding of HTTP header values: str.isdigit() accepts it, int() does not.
@pytest.mark.parametrize("length", [b"\xb2", "\u0661".encode(), b"-1", b"", b"1e3"])
def test_header_lengths_that_are_not_ascii_digits_get_400(server, local, kspace, artefacts, length):
    response = server.client.post("/v2/models/student/infer", json=infer_body(kspace[:1], artefacts.mask),
                                  headers={"Inference-Header-Content-Length": length})
    assert response.status_code == 400 and "is not a length within the body" in response.json()["error"]
    assert_healthy(server, kspace, artefacts.mask, local)


def test_a_client_leaving_mid_body_is_logged_in_one_line(server, local, kspace, artefacts):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v2/models/student/infer HTTP/1.1\r\nhost: kdc\r\ncontent-length: 100000\r\n\r\n"
                     + b"{" * 1000)
        server.client.get("/v2/health/live")  # the body has reached the server
    for _ in range(100):
        log = server.log.read_text()
        if "disconnected after" in log:
            break
        threading.Event().wait(0.1)
    assert "disconnected after" in log and "Traceback" not in log, log[-3000:]
    assert_healthy(server, kspace, artefacts.mask, local)


#: A guarded server: short timeouts, a 2 MB buffer budget that stalled bodies keep, at most 4 slices per request,
#: production mode.
GUARDS = ("--header-timeout", "2", "--body-timeout", "2", "--max-body-mb", "1", "--max-buffer-mb", "2",
          "--min-body-rate-mb", "0", "--max-batch", "4", "--production")
SLOW_HEADERS = b"POST /v2/models/student/infer HTTP/1.1\r\nhost: kdc\r\ncontent-type: application/json\r\n"


@pytest.fixture(scope="module")
def guarded(artefacts, faulty_onnx, tmp_path_factory):
    log = tmp_path_factory.mktemp("guarded") / "server.log"
    with running_server([artefacts.student_onnx, faulty_onnx], log, "--threads", "1", *GUARDS) as srv:
        # The server closes keep-alive connections idle for the (short) header timeout: a pooled connection could be
        # closed just as a busy machine reuses it, so this client opens a connection per request.
        srv.client.close()
        srv.client = httpx.Client(base_url=srv.url, timeout=60, limits=httpx.Limits(max_keepalive_connections=0))
        yield srv


def test_100_slow_clients_neither_lock_out_requests_nor_stay_connected(guarded, local, kspace, artefacts):
    """100 connections sending header bytes at 1 byte/s: liveness and inference are still answered within a
    second, and every slow connection gets a 408 and is closed once its header time is up."""
    with slow_clients(guarded.port, 100, SLOW_HEADERS) as sockets:
        threading.Event().wait(1.0)  # every slow client has sent a few bytes
        with httpx.Client(base_url=guarded.url, timeout=1.0) as quick:
            assert quick.get("/v2/health/live").json() == {"live": True}
            image = image_of(quick.post("/v2/models/student/infer", json=infer_body(kspace[:1], artefacts.mask)))
        np.testing.assert_array_equal(image, local.reconstruct(kspace[:1], artefacts.mask))
        answers = [read_until_closed(sock, timeout=10) for sock in sockets]
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers[:3]
    assert b"request headers not received within 2 s" in answers[0]


def test_stalled_bodies_time_out_and_hold_only_the_bytes_they_sent(guarded, local, kspace, artefacts):
    header = b"POST /v2/models/student/infer HTTP/1.1\r\nhost: kdc\r\ncontent-length: 900000\r\n\r\n"
    stalled = [socket.create_connection(("127.0.0.1", guarded.port)) for _ in range(20)]
    for sock in stalled:
        sock.sendall(header + b"{" * 1000)
    # 20 slow bodies hold 20 kB of the 2 MB budget: a legitimate request still passes.
    image_of(guarded.client.post("/v2/models/student/infer", json=infer_body(kspace[:1], artefacts.mask)))
    answers = [read_until_closed(sock, timeout=10) for sock in stalled]
    assert all(answer.startswith(b"HTTP/1.1 408 ") and b"not received within 2 s" in answer for answer in answers)
    assert_healthy(guarded, kspace, artefacts.mask, local)


def test_bodies_beyond_the_buffer_budget_get_503(guarded, local, kspace, artefacts):
    header = b"POST /v2/models/student/infer HTTP/1.1\r\nhost: kdc\r\ncontent-length: 1000000\r\n\r\n"
    held = [socket.create_connection(("127.0.0.1", guarded.port)) for _ in range(2)]
    for sock in held:  # 2 x 0.9 MB of the 2 MB budget, then they stall
        sock.sendall(header + b" " * 900_000)
    threading.Event().wait(0.5)
    response = guarded.client.post("/v2/models/student/infer", content=b" " * 500_000)
    assert response.status_code == 503 and "server busy" in response.json()["error"]
    for sock in held:
        assert read_until_closed(sock, timeout=10).startswith(b"HTTP/1.1 408 ")
    assert_healthy(guarded, kspace, artefacts.mask, local)


def test_json_with_more_values_than_the_limit_gets_413_before_it_is_parsed(artefacts, tmp_path):
    """6 million JSON numbers (24 MB, malformed at the end) were parsed into about 200 MB of Python floats before
    anything was checked; they are refused from a count of the body's commas and brackets, before parsing."""
    values = 6_000_000
    body = b'{"inputs": [{"name": "kspace", "datatype": "FP32", "shape": [1], "data": [' + b"0.5," * values
    with running_server([artefacts.student_onnx], tmp_path / "server.log", "--threads", "1",
                        "--max-body-mb", "32") as srv:
        before = process_memory_mb(srv.process.pid)
        response = srv.client.post("/v2/models/student/infer", content=body,
                                   headers={"content-type": "application/json"})
        peak = process_memory_mb(srv.process.pid)["VmHWM"]
    assert response.status_code == 413, response.text
    assert f"above this server's limit of {1 << 22} (--max-json-values)" in response.json()["error"]
    body_mb = len(body) / 2**20
    assert peak - before["VmRSS"] <= 3 * body_mb, (peak, before, body_mb)  # the body and its chunks, no objects


def test_stalled_near_limit_bodies_do_not_starve_other_clients(artefacts, local, kspace, tmp_path):
    """4 connections send a body just under the limit and stall, holding the whole buffer budget: the next
    requests drop the stalled bodies they need room from (408) instead of getting 503 until the body timeout."""
    header = b"POST /v2/models/student/infer HTTP/1.1\r\nhost: kdc\r\ncontent-length: 1048576\r\n\r\n"
    with running_server([artefacts.student_onnx], tmp_path / "server.log", "--threads", "1", "--max-body-mb", "1",
                        "--max-buffer-mb", "2", "--body-timeout", "10") as srv:
        stalled = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(4)]
        for sock in stalled:  # one after the other: the first two fill the budget, the others get 503
            sock.sendall(header + b" " * (1048576 - 1000))
            threading.Event().wait(0.2)
        threading.Event().wait(1.5)  # they have sent nothing for longer than the rate window
        answers = [srv.client.post("/v2/models/student/infer", json=infer_body(kspace[:1], artefacts.mask))
                   for _ in range(3)]
        dropped = [read_until_closed(sock, timeout=30) for sock in stalled]
        assert_healthy(srv, kspace, artefacts.mask, local)
    assert [answer.status_code for answer in answers] == [200] * 3, [answer.text for answer in answers]
    assert sum(b"HTTP/1.1 408 " in answer and b"arrived slower than 1 MiB/s" in answer for answer in dropped) >= 1
    assert all(answer.startswith((b"HTTP/1.1 408 ", b"HTTP/1.1 503 ")) for answer in dropped), dropped


def test_batches_above_max_batch_get_413_before_decoding(guarded, local, kspace, artefacts):
    five = np.concatenate([kspace, kspace[:2]])
    response = guarded.client.post("/v2/models/student/infer", json=infer_body(five, artefacts.mask))
    assert response.status_code == 413 and "batch of 5 exceeds this server's limit of 4" in response.json()["error"]
    image_of(guarded.client.post("/v2/models/student/infer", json=infer_body(five[:4], artefacts.mask)))


def test_production_mode_hides_exception_details_and_openapi(guarded, kspace, artefacts):
    response = guarded.client.post("/v2/models/faulty/infer", json=infer_body(kspace[:2], artefacts.mask))
    assert response.status_code == 500
    assert response.json() == {"error": "inference failed: see the server log"}
    assert "Gather" in guarded.log.read_text()  # the details are in the log
    assert guarded.client.get("/openapi.json").status_code == 404


def test_development_mode_shows_exception_details(faulty_onnx, kspace, artefacts, tmp_path):
    with running_server([faulty_onnx], tmp_path / "server.log", "--threads", "1") as srv:
        response = srv.client.post("/v2/models/faulty/infer", json=infer_body(kspace[:2], artefacts.mask))
        assert response.status_code == 500 and "inference failed: InvalidArgument: " in response.json()["error"]
        assert srv.client.get("/openapi.json").status_code == 200


def test_peak_memory_of_the_largest_request_is_bounded_and_returned(artefacts, local, tmp_path):
    """The largest body the server takes (16 MB of binary k-space, 1600 slices): peak RSS stays within the body,
    its answer and the documented per-slice working memory, and falls back once it is answered."""
    from kdc.runtime.server import slice_memory

    slice_bytes = 2 * SIZE[0] * SIZE[1] * 4
    batch = (16 << 20) // slice_bytes - 1
    feeds = local.example_feeds(batch=batch)
    body, headers = binary_request(feeds)
    expected = local.run(feeds)["image"]
    with running_server([artefacts.student_onnx], tmp_path / "server.log", "--threads", "1",
                        "--max-body-mb", "16") as srv:
        pid = srv.process.pid
        before = process_memory_mb(pid)["VmRSS"]
        for _ in range(2):
            response = srv.client.post("/v2/models/student/infer", content=body, headers=headers)
            assert response.status_code == 200, response.text
        body_mb = len(body) / 2**20
        for _ in range(50):  # the memory goes back in a task that runs once the answer is sent
            memory = process_memory_mb(pid)
            if memory["VmRSS"] - before <= 2 * body_mb:
                break
            threading.Event().wait(0.1)
    np.testing.assert_array_equal(binary_image(response, expected.shape), expected)
    bound = 3 * body_mb + batch * slice_memory(local) / 2**20
    assert memory["VmHWM"] - before <= bound, (memory, before, bound)
    assert memory["VmRSS"] - before <= 2 * body_mb, (memory, before)  # the large request's memory went back


@pytest.mark.parametrize("edit,message", [
    (lambda c: c.update(image_size="abc"), "'image_size' must be"),
    # served, this answered 500 on metadata and infer
    (lambda c: c["inputs"][0].update(dtype="object"), "edited.onnx: contract inputs[0] ('kspace') 'dtype' is 'object'"),
])
def test_serve_refuses_to_start_on_a_contract_that_contradicts_its_graph(artefacts, tmp_path, edit, message):
    from .conftest import with_contract

    path = with_contract(artefacts.student_onnx, tmp_path / "edited.onnx", edit)
    result = subprocess.run([sys.executable, "-c", SERVE, str(path), "--port", str(free_port())],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and message in result.stderr
