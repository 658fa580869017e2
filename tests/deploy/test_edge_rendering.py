"""Both renderings of the one nginx template (deploy/nginx/render-nginx-conf.sh): `make run`'s local one and the
container one the edge image uses. Each must pass `nginx -t`, limit requests and connections per address, and balance
the gateways by least connections; the container one also names the gateways and logs to the container's output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RENDERER = ROOT / "deploy" / "nginx" / "render-nginx-conf.sh"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
RENDERINGS = {
    "local": ["--mode", "local", "--log-dir", "{scratch}/local", "--gateway-ports", "28081 28082"],
    "container": ["--mode", "container", "--listen-host", "0.0.0.0", "--static-dir", "/opt/dam/static",
                  "--gateway-addresses", "172.28.0.5:8080 172.28.0.6:8080"],
}


@pytest.mark.parametrize("mode", RENDERINGS)
def test_the_rendering_passes_nginx_t_and_limits_every_address(mode: str, tmp_path: Path) -> None:
    prefix = tmp_path / mode
    (prefix / "temp").mkdir(parents=True)
    arguments = [argument.format(scratch=tmp_path) for argument in RENDERINGS[mode]]
    rendered = subprocess.run(["bash", str(RENDERER), "--prefix", str(prefix), "--public-port", "28080", *arguments],
                              capture_output=True, text=True, timeout=30, check=False)
    assert rendered.returncode == 0, f"the renderer failed: {rendered.stderr}"
    config = prefix / "nginx.conf"
    config.write_text(rendered.stdout)
    tested = subprocess.run([NGINX, "-t", "-q", "-p", f"{prefix}/", "-c", str(config), "-e", "/dev/stderr"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert tested.returncode == 0, f"nginx -t refused the rendering: {tested.stderr}"
    text = rendered.stdout
    assert "limit_req zone=dam_edge_requests" in text and "limit_conn dam_edge_connections" in text
    assert "least_conn;" in text, "the gateways are not balanced by least_conn"
    if mode == "container":
        assert "server 172.28.0.5:8080 max_fails=0;" in text, "the gateway addresses are missing"
        assert "access_log /dev/stdout" in text and "error_log /dev/stderr" in text, \
            "logs do not go to the container's output"
