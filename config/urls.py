from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from changes import views as change_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/v1/", include("changes.urls")),
    path("healthz", change_views.healthz, name="healthz"),
    path("readyz", change_views.readyz, name="readyz"),
    path("metrics", change_views.metrics, name="metrics"),
]
