from django import template
from django.conf import settings

register = template.Library()


@register.simple_tag
def oidc_provider_name() -> str:
    """The identity provider's display name, or "" when OpenID Connect is off."""
    return settings.CHANGEGATE_OIDC_PROVIDER_NAME if settings.CHANGEGATE_OIDC_ENABLED else ""
