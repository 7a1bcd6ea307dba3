"""Presentation of planner results: the JSON summary, rich tables and the plain-language notes."""
