"""/docs: the API reference for people, Swagger UI rendering /openapi.json.

Swagger UI's files are the ones the flask-swagger-ui package bundles (its
``dist``), served by this process: the page loads nothing from elsewhere, so
it works offline, behind a proxy, and under a ``'self'`` content policy. Only
the page and the few files it loads are routes; the package's own blueprint
(which would serve any file of its folder) is not used. Public, like
/openapi.json (app/auth.py).
"""

from importlib.resources import files
from pathlib import Path

from flask import Blueprint, Response, send_from_directory, url_for

from app.operations import Reply, operation, undocumented

bp = Blueprint("docs", __name__)
SWAGGER_UI = Path(str(files("flask_swagger_ui") / "dist"))
ASSETS = ("swagger-ui.css", "index.css", "swagger-ui-bundle.js", "favicon-32x32.png")
CACHE_S = 24 * 3600
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Taskplane API</title>
  <link rel="stylesheet" href="{index_css}">
  <link rel="stylesheet" href="{swagger_css}">
  <link rel="icon" type="image/png" href="{favicon}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{bundle}"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{document}",
      dom_id: "#swagger-ui",
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      deepLinking: true,
      // No badge from the online validator: nothing is fetched from elsewhere.
      validatorUrl: null,
    }});
  </script>
</body>
</html>
"""


@bp.get("/docs")
@operation(
    "docs",
    "This reference, for people (Swagger UI)",
    {200: Reply("an HTML page rendering /openapi.json", {"type": "string"}, "text/html")},
)
def docs() -> Response:
    page = PAGE.format(
        index_css=url_for("docs.asset", name="index.css"),
        swagger_css=url_for("docs.asset", name="swagger-ui.css"),
        favicon=url_for("docs.asset", name="favicon-32x32.png"),
        bundle=url_for("docs.asset", name="swagger-ui-bundle.js"),
        document=url_for("openapi.openapi"),
    )
    return Response(page, mimetype="text/html")


@bp.get(f"/docs/<any({', '.join(repr(a) for a in ASSETS)}):name>")
@undocumented("the files of the /docs page (Swagger UI's), not an API operation")
def asset(name: str) -> Response:
    return send_from_directory(SWAGGER_UI, name, max_age=CACHE_S)
