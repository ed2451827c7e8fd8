"""The broker's web pages (Jinja2, progressively enhanced with htmx)."""
