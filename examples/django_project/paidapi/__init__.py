"""The example project: settings, URLs and views of a small paid API."""
