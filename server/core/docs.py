"""/docs (Swagger UI) and /redoc served with their assets from the application itself.

FastAPI's own pages load Swagger UI, ReDoc, a favicon and Google Fonts from public CDNs: on a
hospital network without internet they stay blank. The assets come from the fastapi-offline
package (Swagger UI 5, which renders the OpenAPI 3.1 documents FastAPI writes; the
swagger-ui-bundle package ships Swagger UI 4, which refuses anything but OpenAPI 3.0).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs/assets"
# swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
SWAGGER_UI_PARAMETERS = {
    # Off: the validator badge is an image fetched from validator.swagger.io.
    "validatorUrl": None,
    # A token typed into "Authorize" survives a reload of the page.
    "persistAuthorization": True,
}


def install_docs(app: FastAPI) -> None:
    """The pages FastAPI would serve at docs_url and redoc_url (create the app with both None)."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    oauth2_redirect_url = "/docs/oauth2-redirect"

    def asset(request: Request, name: str) -> str:
        # root_path: behind a proxy that serves the API under a prefix, the assets are too.
        return f"{request.scope.get('root_path', '')}{ASSETS_URL}/{name}"

    def openapi_url(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{app.openapi_url}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=asset(request, "swagger-ui.css"),
            swagger_favicon_url=asset(request, "favicon.png"),
            oauth2_redirect_url=oauth2_redirect_url,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset(request, "redoc.standalone.js"),
            redoc_favicon_url=asset(request, "favicon.png"),
            with_google_fonts=False,
        )
