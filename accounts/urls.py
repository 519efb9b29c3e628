from django.urls import path

from accounts import oidc

# The names are mozilla-django-oidc's: its backend reverses the callback by name.
urlpatterns = [
    path("authenticate/", oidc.OIDCAuthenticateView.as_view(), name="oidc_authentication_init"),
    path("callback/", oidc.OIDCCallbackView.as_view(), name="oidc_authentication_callback"),
]
