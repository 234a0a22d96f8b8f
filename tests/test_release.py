"""``--pretrained`` / ``pretrained=True`` and ``stm-probe weights``, without the internet: a local HTTP server
on 127.0.0.1 serves small seeded checkpoints at the release paths. Download, cache hit, resume after a cut
connection (and across calls), HTML pages and truncated files refused, 404 and offline refused in one line
naming the URL and the manual path, a changed file reported, the sha256 in the manifest, ``-ema`` files."""
from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from stm_probe.cli import main
from stm_probe.errors import UsageError
from stm_probe.models import release

MODEL = "unified_convnext_micro"
FILE = "unified_convnext_micro.pth"


class Server:
    """Files by URL path; ``cut`` answers that many requests with only ``cut_at`` bytes (then closes);
    ``requests`` logs (path, Range header)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.cut, self.cut_at, self.no_length = 0, 0, False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append((self.path, self.headers.get("Range")))
                if self.path not in server.files:
                    self.send_error(404, "Not Found")
                    return
                body, ctype = server.files[self.path]
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Type", ctype)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                if not server.no_length:
                    self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if server.cut:
                    server.cut -= 1
                    payload = payload[:server.cut_at]
                    self.close_connection = True
                self.wfile.write(payload)
                self.wfile.flush()
                if server.no_length or len(payload) < len(body) - start:
                    self.connection.shutdown(socket.SHUT_RDWR)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/release"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, name: str, body: bytes, ctype: str = "application/octet-stream") -> None:
        self.files[f"/release/{name}"] = (body, ctype)


def checkpoint_bytes(seed: int, n: int = 5000) -> bytes:
    """A small torch checkpoint (zip format) with seeded values."""
    generator = torch.Generator().manual_seed(seed)
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.randn(n, generator=generator)}}, buffer)
    return buffer.getvalue()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    serving = Server()
    monkeypatch.setenv(release.URL_ENV, serving.url)
    monkeypatch.setenv(release.CACHE_ENV, str(tmp_path / "cache"))
    yield serving
    serving.httpd.shutdown()
    serving.httpd.server_close()


def cache() -> Path:
    return release.cache_dir()


def test_names_urls_and_cache_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(release.URL_ENV, raising=False)
    monkeypatch.setenv(release.CACHE_ENV, str(tmp_path))
    assert release.release_url("unified_tiny_attn") == \
        "https://github.com/OpenGVLab/STM-Evaluation/releases/download/cls-ckpt/unified_pvt_tiny.pth"
    assert release.release_file("unified_dcn_v3_base") == "unified_internimage_base.pth"
    assert release.release_file("unified_small_halo") == "unified_halonet_small.pth"
    assert release.cache_dir() == tmp_path / "checkpoints"
    monkeypatch.setenv(release.URL_ENV, "https://mirror.example/ckpt/")
    assert release.release_url("unified_swin_micro") == "https://mirror.example/ckpt/unified_swin_micro.pth"
    with pytest.raises(UsageError, match="resnet18 is not one of the 20 unified models"):
        release.release_file("resnet18")


def test_download_then_cache_hit(server: Server) -> None:
    body = checkpoint_bytes(0)
    server.serve(FILE, body)
    fetched = release.fetch(MODEL, quiet=True)
    assert fetched.downloaded and fetched.path == cache() / FILE
    assert fetched.path.read_bytes() == body
    assert fetched.sha256 == hashlib.sha256(body).hexdigest()
    assert json.loads((cache() / release.RECORD_NAME).read_text())[FILE]["sha256"] == fetched.sha256
    assert not list(cache().glob("*.part"))
    again = release.fetch("unified_micro_conv", quiet=True)  # an alias of the same model
    assert not again.downloaded and again.sha256 == fetched.sha256 and again.notes[1:] == []
    assert len(server.requests) == 1  # the cache hit asked nothing


def test_resume_after_a_cut_connection(server: Server) -> None:
    body = checkpoint_bytes(1)
    server.serve(FILE, body)
    server.cut, server.cut_at = 1, 3000
    fetched = release.fetch(MODEL, quiet=True)
    assert fetched.path.read_bytes() == body
    assert [r[1] for r in server.requests] == [None, "bytes=3000-"]


def test_resume_across_calls_keeps_the_partial_file(server: Server) -> None:
    body = checkpoint_bytes(2)
    server.serve(FILE, body)
    server.cut, server.cut_at = release.TRIES, 1000  # every connection of the first call is cut
    with pytest.raises(UsageError) as info:
        release.fetch(MODEL, quiet=True)
    message = str(info.value)
    assert "\n" not in message and "rerun to resume" in message and f"{3000} of {len(body)} bytes" in message
    assert (cache() / (FILE + ".part")).stat().st_size == 3000 and not (cache() / FILE).exists()
    fetched = release.fetch(MODEL, quiet=True)
    assert fetched.path.read_bytes() == body
    assert server.requests[-1][1] == "bytes=3000-"


@pytest.mark.parametrize("ctype", ["text/html", "application/octet-stream"])
def test_html_page_refused(server: Server, ctype: str) -> None:
    server.serve(FILE, b"<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>\n", ctype)
    with pytest.raises(UsageError, match="HTML page") as info:
        release.fetch(MODEL, quiet=True)
    assert "\n" not in str(info.value) and str(cache() / FILE) in str(info.value)
    assert not (cache() / FILE).exists() and not (cache() / (FILE + ".part")).exists()


def test_truncated_zip_without_length_refused(server: Server) -> None:
    server.serve(FILE, checkpoint_bytes(3))
    server.no_length, server.cut, server.cut_at = True, release.TRIES, 2000
    with pytest.raises(UsageError, match="truncated zip archive"):
        release.fetch(MODEL, quiet=True)
    assert not (cache() / FILE).exists()


def test_404_refused_in_one_line(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", MODEL, "--download", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "HTTP 404" in err
    assert f"{server.url}/{FILE}" in err and str(cache() / FILE) in err and "--checkpoint-dir" in err


def test_changed_file_is_reported(server: Server) -> None:
    server.serve(FILE, checkpoint_bytes(4))
    first = release.fetch(MODEL, quiet=True)
    first.path.unlink()  # the cache is cleared; the release (or the mirror) now serves other bytes
    server.serve(FILE, checkpoint_bytes(5))
    second = release.fetch(MODEL, quiet=True)
    assert second.sha256 == hashlib.sha256(checkpoint_bytes(5)).hexdigest() != first.sha256
    assert any(f"not the {first.sha256[:12]}" in note for note in second.notes)
    second.path.write_bytes(checkpoint_bytes(6))  # replaced by hand
    third = release.fetch(MODEL, quiet=True)
    assert any(f"not the {second.sha256[:12]}" in note for note in third.notes)
    assert release.fetch(MODEL, quiet=True).notes[1:] == []  # reported once


def test_offline_cli_says_url_and_manual_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(release.URL_ENV, f"http://127.0.0.1:{port}/cls-ckpt")
    monkeypatch.setenv(release.CACHE_ENV, str(tmp_path / "cache"))
    code = main(["erf", "--model", "unified_micro_conv", "--pretrained", "--input-size", "64", "--num-images", "1",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert f"http://127.0.0.1:{port}/cls-ckpt/{FILE}" in err and str(tmp_path / "cache" / "checkpoints" / FILE) in err
    assert not (tmp_path / "run").exists()


def test_pretrained_run_records_sha256_and_loads_the_weights(server: Server, tmp_path: Path) -> None:
    from stm_probe.models import build_unified, create_model

    torch.manual_seed(7)
    state = build_unified(MODEL).state_dict()
    buffer = io.BytesIO()
    torch.save({"model": state}, buffer)
    server.serve(FILE, buffer.getvalue())
    sha = hashlib.sha256(buffer.getvalue()).hexdigest()
    out = tmp_path / "run"
    assert main(["erf", "--model", "unified_micro_conv", "--pretrained", "--input-size", "64", "--num-images", "1",
                 "--bootstrap", "0", "--stages", "4", "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"][0]["sha256"] == sha and manifest["models"][0]["weights"] == "checkpoint"
    assert manifest["release_files"][MODEL] == {"file": str(cache() / FILE), "url": f"{server.url}/{FILE}",
                                                "sha256": sha, "downloaded": True}
    model = create_model("unified_micro_conv", pretrained=True)  # a cache hit now
    assert len(server.requests) == 1
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_ema_file_in_the_cache_follows_the_checkpoint_key_rule(server: Server) -> None:
    from stm_probe.models import build_unified, create_model

    torch.manual_seed(8)
    plain = build_unified(MODEL).state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in plain.items()}
    cache().mkdir(parents=True)
    torch.save({"model": plain, "model_ema": ema}, cache() / "unified_convnext_micro-ema.pth")
    with pytest.raises(UsageError, match="--checkpoint-key model_ema"):
        create_model(MODEL, pretrained=True)
    model = create_model(MODEL, pretrained=True, checkpoint_key="model_ema")
    assert torch.equal(model.state_dict()["head.weight"], ema["head.weight"])
    assert server.requests == []


def test_weights_table_lists_the_20_release_files(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    import csv

    body = checkpoint_bytes(9)
    server.serve(FILE, body)
    assert main(["weights", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 20 and len({r["url"] for r in rows}) == 20
    by_model = {r["model"]: r for r in rows}
    # the paper's Table (ImageNet-1k top-1 at 224), copied here independently of the shipped CSV
    assert float(by_model["unified_pvt_tiny"]["published_top1"]) == 82.1
    assert float(by_model["unified_dcn_v3_base"]["published_top1"]) == 84.5
    assert by_model["unified_halo_micro"]["url"] == f"{server.url}/unified_halonet_micro.pth"
    assert by_model[MODEL]["cached"] == "False"
    assert main(["weights", "unified_micro_conv", "--download", "--quiet", "--format", "csv"]) == 0
    row = next(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert row["cached"] == "True" and row["path"] == str(cache() / FILE) and int(row["size"]) == len(body)
    assert row["sha256"] == hashlib.sha256(body).hexdigest()
    assert main(["weights"]) == 0
    text = capsys.readouterr().out
    assert "unified_internimage_base.pth" in text and "84.5" in text and str(cache()) in text


def test_weights_and_models_commands_import_no_torch() -> None:
    import subprocess
    import sys

    code = ("import sys; from stm_probe.cli import main; main(['weights']); main(['models']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "top-1 (paper)" in result.stdout


def test_timm_create_model_pretrained_uses_the_release_file(server: Server) -> None:
    import timm

    from stm_probe.models import build_unified, register_with_timm

    register_with_timm()  # timm may have loaded after stm_probe.models here (README: Models)
    torch.manual_seed(9)
    state = build_unified(MODEL).state_dict()
    buffer = io.BytesIO()
    torch.save({"model": state}, buffer)
    server.serve(FILE, buffer.getvalue())
    model = timm.create_model(MODEL, pretrained=True)
    assert torch.equal(model.state_dict()["head.weight"], state["head.weight"])
    assert model.stm_probe_weights["sha256"] == hashlib.sha256(buffer.getvalue()).hexdigest()


def test_two_processes_fetch_one_file_once(server: Server, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    body = checkpoint_bytes(10, n=200_000)
    server.serve(FILE, body)
    code = f"from stm_probe.models.release import fetch; print(fetch({MODEL!r}, quiet=True).downloaded)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    said = sorted(run.communicate(timeout=120)[0].strip() for run in runs)
    assert said == ["False", "True"]  # one downloaded, the other waited and found the file
    assert (cache() / FILE).read_bytes() == body and len(server.requests) == 1


def test_checkpoint_dir_first_then_the_release_files(server: Server, tmp_path: Path) -> None:
    from stm_probe.options import RunOptions
    from stm_probe.runtime.session import open_session

    folder = tmp_path / "ckpts"
    folder.mkdir()
    (folder / "unified_pvt_micro.pth").write_bytes(checkpoint_bytes(11))
    server.serve(FILE, checkpoint_bytes(12))
    options = RunOptions(model=("unified_micro_attn", "unified_micro_conv"), checkpoint_dir=str(folder),
                         pretrained=True, quiet=True, num_images=1)
    session = open_session("erf", options, {"api": "test"}, write_files=False)
    assert session.checkpoints == {"unified_pvt_micro": str(folder / "unified_pvt_micro.pth"),
                                   MODEL: str(cache() / FILE)}
    assert list(session.record.data["release_files"]) == [MODEL]
    assert [r[0] for r in server.requests] == [f"/release/{FILE}"]
    with pytest.raises(UsageError, match="resnet18 is not one of the 20 unified models"):
        open_session("erf", RunOptions(model=("resnet18",), pretrained=True, quiet=True), {"api": "test"},
                     write_files=False)
