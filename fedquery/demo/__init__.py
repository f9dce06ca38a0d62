"""Synthetic hospital data for the demo federation (see ``fedquery.demo.generate``)."""
