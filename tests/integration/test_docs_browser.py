"""/docs as a person sees it: headless Chromium renders the API reference from this server alone.

Chromium resolves no host name but the server's address, so a page that
needed a CDN would not render. Swagger UI builds the page in JavaScript: an
operation in the DOM means its script ran and read /openapi.json; the method
badges' colours in the screenshot mean its stylesheet applied. The
screenshot is kept in var/test-artifacts/ for a human to look at.
"""

import httpx
import pytest
from PIL import Image

from tests.integration.helpers import ARTIFACTS, CHROMIUM, chromium

pytestmark = pytest.mark.integration
# Every name but loopback fails to resolve: nothing can come from elsewhere.
LOCAL_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
# Swagger UI's method badges (swagger-ui.css): GET, POST, DELETE.
BADGES = {"get": (0x61, 0xAF, 0xFE), "post": (0x49, 0xCC, 0x90), "delete": (0xF9, 0x3E, 0x3E)}


@pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed: run scripts/ensure-test-tools.sh as root"
)
def test_docs_renders_every_operation_of_the_document_with_local_files_only(web_url):
    document = httpx.get(f"{web_url}/openapi.json", timeout=10).json()
    operations = [
        (method, path) for path, methods in document["paths"].items() for method in methods
    ]
    page = httpx.get(f"{web_url}/docs", timeout=10)
    assert page.status_code == 200 and "swagger-ui" in page.text

    dom = chromium(f"{web_url}/docs", LOCAL_ONLY, "--dump-dom")
    assert "Taskplane" in dom
    for method, path in operations:
        assert f'data-path="{path}"' in dom, f"{method.upper()} {path} not rendered"
    blocks = dom.count('class="opblock opblock-')
    assert blocks == len(operations), f"{blocks} operation blocks for {len(operations)} operations"
    assert "opblock-deprecated" in dom  # DELETE /jobs/{job_id}, the alias of the cancel verb
    assert document["paths"]["/jobs/{job_id}/cancel"]["post"]["summary"] in dom

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "docs.png"
    shot.unlink(missing_ok=True)
    # Tall enough for every operation (the last --window-size given wins).
    chromium(f"{web_url}/docs", LOCAL_ONLY, "--window-size=1400,2200", f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 10_000, f"no screenshot at {shot}"
    with Image.open(shot) as image:
        counts = {colour: n for n, colour in image.convert("RGB").getcolors(1 << 24)}
    assert len(counts) > 50, f"{shot} looks blank ({len(counts)} colours)"
    for method, colour in BADGES.items():
        painted = counts.get(colour, 0)
        assert painted > 300, f"no {method.upper()} badge painted in {shot}: is the CSS loaded?"
