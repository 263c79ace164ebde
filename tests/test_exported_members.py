import zc_middleware


def test_all_is_the_public_api() -> None:
    exported = set(zc_middleware.__all__)
    public = {name for name in dir(zc_middleware) if not name.startswith("_")}
    modules = {"decision", "errors", "gate", "ledger", "meters", "periods", "settings", "reporter", "outbox"}
    modules |= {"plans", "stores"}  # the plan models and the store registry, imported by settings
    modules |= {"starlette", "flask", "wsgi", "django", "sandbox", "cli"}  # submodules, once imported
    assert public - modules <= exported | {"annotations"}
    assert {"ZeroClickSettings", "metered", "record_usage"} <= exported
    for name in exported:
        assert hasattr(zc_middleware, name), name
