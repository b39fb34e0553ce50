"""A real ``kdc serve`` on 127.0.0.1 (torch blocked in its process), spoken to over HTTP as a KServe v2 client."""

import json
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

import kdc.runtime as rt

from .helpers import Server, running_server

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
