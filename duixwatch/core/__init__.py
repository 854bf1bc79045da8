"""Shared by every layer: the error tree, time, frozen values, documents, validated field
types and logging."""
