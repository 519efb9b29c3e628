from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from changes.api import views as api_views
from changes.api.root import ApiRootView
from ops import views as change_views

urlpatterns = [
    # The people's entry point is the admin; `/` must not be a 404 (make run prints it).
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False), name="home"),
    path("admin/", admin.site.urls),
    # OpenID Connect sign-in (accounts.oidc); answers 404 unless it is configured.
    path("oidc/", include("accounts.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI and ReDoc from drf-spectacular-sidecar's static files: the docs work
    # without internet (a CDN is unreachable from many operations networks).
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema", template_name="changes/api/redoc.html"), name="redoc"),
    path("api/v1/", ApiRootView.as_view(), name="api-root"),
    path("api/v1/", include("changes.urls")),
    path("healthz", change_views.healthz, name="healthz"),
    path("readyz", change_views.readyz, name="readyz"),
    path("metrics", change_views.metrics, name="metrics"),
]

# Last, so that every route above wins: any other path under /api/ gets the API's
# JSON 404 (not Django's HTML page), whatever the method and even with DEBUG on.
urlpatterns += [re_path(r"^api/", api_views.api_not_found)]
