"""Consumers of the bridged stream (tail, ...)."""
