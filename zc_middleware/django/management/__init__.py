"""Django management commands of zc_middleware."""
