from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from changes.api import views as api_views
from ops import views as change_views

urlpatterns = [
    path("admin/", admin.site.urls),
    # OpenID Connect sign-in (accounts.oidc); answers 404 unless it is configured.
    path("oidc/", include("accounts.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/v1/", include("changes.urls")),
    path("healthz", change_views.healthz, name="healthz"),
    path("readyz", change_views.readyz, name="readyz"),
    path("metrics", change_views.metrics, name="metrics"),
]

# Last, so that every route above wins: any other path under /api/ gets the API's
# JSON 404 (not Django's HTML page), whatever the method and even with DEBUG on.
urlpatterns += [re_path(r"^api/", api_views.api_not_found)]
