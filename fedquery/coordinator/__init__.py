"""Coordinator: dispatch to sites, combine their protected partials, post-process, report."""
